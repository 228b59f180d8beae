"""Every endpoint that acts for a member refuses a missing, foreign or expired token,
changes nothing, and says the same whatever it was asked about."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nats.aio.client import Client as NATS

from contracts.identity import InvalidToken
from runtime.eventstore import EventStore
from runtime.settings import Settings
from runtime.tokens import Signer, new_private_key
from services.registry import named

CMD = uuid.uuid4().hex
SET = {"set_id": "s1", "year": 2018}
# One well-formed request per endpoint that acts for the holder of "session".
ENDPOINTS: list[tuple[str, str, dict[str, object]]] = [
    ("identity", "unbind", {"command_id": CMD}),
    ("identity", "logout", {"command_id": CMD}),
    ("identity", "me", {}),
    ("identity", "change_password", {"command_id": CMD, "old_password": "secret-1",
                                     "new_password": "secret-2"}),
    ("identity", "change_nickname", {"command_id": CMD, "nickname": "x"}),
    ("identity", "drive_password_set", {"command_id": CMD, "password": "drive-pw",
                                        "question": "q", "answer": "a"}),
    ("identity", "drive_password_verify", {"command_id": CMD, "password": "drive-pw"}),
    ("identity", "drive_password_reset", {"command_id": CMD, "answer": "a",
                                          "new_password": "drive-pw2"}),
    ("identity", "drive_password_change", {"command_id": CMD, "old_password": "drive-pw",
                                           "new_password": "drive-pw2"}),
    ("identity", "drive_question", {}),
    ("social", "add_friend", {"command_id": CMD, "account": "someone", "nickname": "S"}),
    ("social", "remove_friend", {"command_id": CMD, "account": "someone"}),
    ("social", "list_friends", {}),
    ("storage", "begin_upload", {"command_id": CMD, "set_name": "n", "period": 1, "size": 10,
                                 "sha256": "0" * 64, **SET}),
    ("storage", "complete_upload", {"command_id": CMD, "upload_id": "u1"}),
    ("storage", "drive", {}),
    ("storage", "versions", SET),
    ("storage", "download", {"command_id": CMD, **SET}),
    ("storage", "delete_version", {"command_id": CMD, "version_id": "v1"}),
    ("sharing", "grant", {"command_id": CMD, "set_id": "s1", "friends": ["someone"]}),
    ("sharing", "revoke", {"command_id": CMD, "set_id": "s1"}),
    ("sharing", "shares", {}),
    ("sharing", "cloud_shares", {}),
    ("sharing", "history", {"set_id": "s1", "at": "2026-01-01T00:00:00Z"}),
]


def bad_tokens(settings: Settings) -> dict[str, str]:
    now = datetime.now(UTC)
    member = str(uuid.uuid4())
    forged, _ = Signer(new_private_key()).issue(member_id=member, kind="session", now=now,
                                                ttl=timedelta(hours=1), pv=0)
    expired, _ = Signer(settings.token_private_key).issue(
        member_id=member, kind="session", now=now - timedelta(hours=2), ttl=timedelta(hours=1),
        pv=0)
    drive, _ = Signer(settings.token_private_key).issue(
        member_id=member, kind="drive", now=now, ttl=timedelta(hours=1), pv=0)
    return {"none": "", "garbage": "x.y", "another key": forged, "expired": expired,
            "a drive token": drive}


async def test_every_member_endpoint_refuses_bad_tokens_and_changes_nothing(
        all_services: Settings, nc: NATS, events: EventStore) -> None:
    before = await events.last_sequence()
    for context, op, body in ENDPOINTS:
        client = named(context).client(nc, timeout=10)  # re-raises what its ops declare
        for why, token in bad_tokens(all_services).items():
            with pytest.raises(InvalidToken) as err:
                await client.call_raw(op, json.dumps({**body, "session": token}).encode())
            assert "log in" in err.value.message, (context, op, why)
    assert await events.last_sequence() == before
