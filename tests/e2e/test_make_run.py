"""`ledgershare run` (what `make run` calls) from nothing: stack, services, walkthrough."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec

from tests.support import free_port, free_stack_ports


def test_run_brings_everything_up_walks_through_and_stops(tmp_path: Path) -> None:
    ports = free_stack_ports()
    gateway = free_port()
    env = {**os.environ, "LEDGERSHARE_HOME": str(tmp_path / "home"), "LEDGERSHARE_RUN_ONCE": "1",
           "COLUMNS": "200", "LEDGERSHARE_GATEWAY_PORT": str(gateway),
           **{f"LEDGERSHARE_PORT_{k.upper()}": str(v)
              for k, v in msgspec.structs.asdict(ports).items()}}
    done = subprocess.run([sys.executable, "-m", "cli.main", "run"], env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert ("services running: gateway 0.1.0, identity 0.1.0, sharing 0.1.0, social 0.1.0, "
            "storage 0.1.0") in out
    assert "bound=True" in out
    assert "refused: no member with that account and nickname [no_such_member]" in out
    assert "(李四) since" in out
    assert "(size and SHA-256 checked), remark 2018年1期" in out
    assert "123 2018: 1 version(s), latest 2018年1期" in out
    assert "upload a cloud backup first [no_backup]" in out
    assert "1 account set(s) shared with 1 friend(s)" in out
    assert "/123/2018: 2018年1期" in out
    assert "identical to" in out and "backup: True" in out
    assert "(size and SHA-256 checked), remark 2018年4期" in out
    assert "not shared with you [no_access]" in out
    assert "0 sharer(s)" in out
    # the agency part (cli/agencydemo.py): supervisor, handover, the leaver refused
    assert "(陈静), as supervisor, read-only: 2018 (2018年3期)" in out
    assert out.count("backup: True") == 3  # B, the supervisor and accountant 2
    assert ("refused: that account set was handed over to another accountant of your "
            "agency; it is theirs to work on now [no_access]") in out
    assert "(刘洋): supervisor of 诚信代账" in out and "(杨帆): keeper of 诚信代账" in out
    assert "press Ctrl-C to stop" in out
    assert f"desktop API http://127.0.0.1:{gateway}/api/v1 (" in out
    assert (f"Member Center http://127.0.0.1:{gateway}/wx sends a browser to "
            f"http://127.0.0.1:{ports.wechat}/connect/oauth2/authorize") in out
    assert out.count("stopped") == 4  # nats, postgres, s3 and the WeChat stand-in
    for log in ("identity", "social", "storage", "sharing", "gateway"):
        text = (tmp_path / "home" / "logs" / f"{log}.log").read_text()
        assert '"level": "error"' not in text, text
