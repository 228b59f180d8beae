"""A realistic event log for the replay and load rows, written fast.

Per member, on average 20 events: registered, a nickname change, four friendships, four
reserved and four finished uploads (two account sets, two years), four grants, one
revoke, and half a friendship ended and half a version deleted. Events go in with core
publishes (JetStream stores them all the same), a window at a time, so a million take
seconds, not the minutes of one acknowledged publish each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
from nats.aio.client import Client as NATS

from contracts import identity, sharing, social, storage
from contracts.base import HDR_EVENT_TYPE, Event, event_type
from runtime.eventstore import EventStore

EVENTS_PER_MEMBER = 20
FRIENDS = 4
FRIEND_STEP = 7  # member i befriends i + 7k (k = 1..FRIENDS)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WINDOW = 5000


def member(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def events(members: int) -> Iterator[tuple[str, Event]]:
    """(subject, event) in log order, ``EVENTS_PER_MEMBER`` per member on average."""
    at = T0
    for i in range(members):
        mid = member(i)
        joined = identity.MemberRegistered(member_id=mid, account=f"user{i}",
                                           nickname=f"U{i}", password_hash="x", at=at)
        yield identity.member_subject(mid, joined), joined
    for i in range(members):
        yield from _friendships(i, members, at)
    for i in range(members):
        yield from _uploads(i, at)
    for i in range(members):
        yield from _grants(i, members, at + timedelta(days=1))
    for i in range(members):
        yield from _changes(i, members, at + timedelta(days=2))


def _friendships(i: int, members: int, at: datetime) -> Iterator[tuple[str, Event]]:
    mid = member(i)
    for k in range(1, FRIENDS + 1):
        other = member((i + k * FRIEND_STEP) % members)
        fid = social.pair_id(mid, other)
        added = social.FriendAdded(friendship_id=fid, member_id=mid, friend_id=other,
                                   friend_nickname="F", at=at)
        yield social.friendship_subject(fid, added), added


def _uploads(i: int, at: datetime) -> Iterator[tuple[str, Event]]:
    mid = member(i)
    for set_no in range(2):
        for year in (2024, 2025):
            up = f"{i}-{set_no}-{year}"
            reserved = storage.UploadReserved(
                owner_id=mid, upload_id=f"u{up}", uploader_id=mid, set_id=f"set{set_no}",
                set_name=f"Set {set_no}", year=year, period=12, size=2_000_000,
                sha256="0" * 64, key=f"k/{up}", charged=2_000_000,
                expires_at=at + timedelta(hours=1), at=at)
            yield storage.drive_subject(mid, reserved), reserved
            done = storage.BackupUploaded(
                owner_id=mid, version_id=f"v{up}", upload_id=f"u{up}", uploader_id=mid,
                set_id=f"set{set_no}", set_name=f"Set {set_no}", year=year, period=12,
                size=2_000_000, sha256="0" * 64, key=f"k/{up}", at=at)
            yield storage.drive_subject(mid, done), done


def _grants(i: int, members: int, at: datetime) -> Iterator[tuple[str, Event]]:
    mid = member(i)
    for set_no in range(2):
        sid = sharing.share_id(mid, f"set{set_no}")
        for k in (1, 2):
            granted = sharing.ShareGranted(
                share_id=sid, owner_id=mid, set_id=f"set{set_no}", set_name=f"Set {set_no}",
                friend_id=member((i + k * FRIEND_STEP) % members),
                permission="read-only" if k == 2 else "read-write",
                years=[2025] if set_no else None, at=at)
            yield sharing.share_subject(sid, granted), granted


def _changes(i: int, members: int, at: datetime) -> Iterator[tuple[str, Event]]:
    mid = member(i)
    renamed = identity.NicknameChanged(member_id=mid, nickname=f"V{i}", at=at)
    yield identity.member_subject(mid, renamed), renamed
    sid = sharing.share_id(mid, "set0")
    revoked = sharing.ShareRevoked(share_id=sid, owner_id=mid, set_id="set0",
                                   friend_id=member((i + FRIEND_STEP) % members), at=at)
    yield sharing.share_subject(sid, revoked), revoked
    if i % 2:
        other = member((i + 2 * FRIEND_STEP) % members)
        fid = social.pair_id(mid, other)
        removed = social.FriendRemoved(friendship_id=fid, member_id=mid, friend_id=other,
                                       at=at)
        yield social.friendship_subject(fid, removed), removed
    else:
        deleted = storage.VersionDeleted(owner_id=mid, version_id=f"v{i}-1-2024", by=mid,
                                         at=at)
        yield storage.drive_subject(mid, deleted), deleted


async def write(nc: NATS, members: int) -> int:
    """Append the log of ``members`` members; returns the stream's last sequence."""
    log = EventStore(nc)
    start = await log.last_sequence()
    encode = msgspec.json.encode
    sent = 0
    for subject, event in events(members):
        await nc.publish(subject, encode(event), headers={HDR_EVENT_TYPE: event_type(event)})
        sent += 1
        if sent % WINDOW == 0:
            await _settle(nc, log, start + sent - WINDOW)
    await _settle(nc, log, start + sent)
    return start + sent


async def _settle(nc: NATS, events: EventStore, target: int) -> None:
    """Wait until the stream holds ``target`` events (a window stays in flight)."""
    await nc.flush()
    while await events.last_sequence() < target:
        await nc.flush()
