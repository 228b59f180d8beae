"""Settings: defaults, then the local stack's files, then the environment."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from runtime.settings import key_file, load_settings


def test_stack_file_then_keys_then_environment(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert load_settings({"LEDGERSHARE_HOME": home}).nats_url == "nats://127.0.0.1:4222"
    (tmp_path / "stack.json").write_text(json.dumps(
        {"endpoints": {"nats_url": "nats://127.0.0.1:1", "s3_bucket": "b"}, "pids": {}}))
    key_file(home).parent.mkdir()
    key_file(home).write_text(json.dumps({"token_public_key": "pub"}))
    settings = load_settings({"LEDGERSHARE_HOME": home,
                              "LEDGERSHARE_S3_BUCKET": "from-env",
                              "LEDGERSHARE_STREAM_REPLICAS": "3"})
    assert (settings.nats_url, settings.s3_bucket, settings.token_public_key,
            settings.stream_replicas) == ("nats://127.0.0.1:1", "from-env", "pub", 3)


def test_a_cluster_url_lists_every_server(tmp_path: Path) -> None:
    settings = load_settings({"LEDGERSHARE_HOME": str(tmp_path), "LEDGERSHARE_NATS_URL":
                              "nats://n1:4222, nats://n2:4222,nats://n3:4222"})
    assert settings.nats_servers == ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]


def test_an_inbox_prefix_services_would_not_answer_is_refused(tmp_path: Path) -> None:
    env = {"LEDGERSHARE_HOME": str(tmp_path)}
    assert load_settings({**env, "LEDGERSHARE_NATS_INBOX_PREFIX": "_INBOX_storage"}
                         ).nats_inbox_prefix == "_INBOX_storage"
    for bad in ("evt.identity", "_INBOX.x", "inbox", "_INBOX_"):
        with pytest.raises(msgspec.ValidationError, match="nats_inbox_prefix"):
            load_settings({**env, "LEDGERSHARE_NATS_INBOX_PREFIX": bad})
