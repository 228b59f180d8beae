"""The terminal client's saved session: tokens kept in ``<home>/session.json`` (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from contracts.errors import Unauthenticated


class Saved(msgspec.Struct, kw_only=True):
    """Who is logged in here, their tokens, and the newest consistency token seen."""

    member_id: str = ""
    account: str = ""
    session: str = ""
    drive: str = ""
    seq: int = 0


def path_in(home: str) -> Path:
    return Path(home) / "session.json"


def load(home: str) -> Saved:
    """The saved session (empty when nobody has logged in here)."""
    path = path_in(home)
    if not path.exists():
        return Saved()
    return msgspec.json.decode(path.read_bytes(), type=Saved)


def save(home: str, saved: Saved) -> None:
    """Write the session readable by this user only (created 0600, never wider)."""
    path = path_in(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(saved))
    path.chmod(0o600)


def require(saved: Saved) -> Saved:
    """The session, or a clear error telling how to log in."""
    if not saved.session:
        raise Unauthenticated("not logged in: run `ledgershare member login ACCOUNT` first")
    return saved
