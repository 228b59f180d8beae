"""sharing's read model: a whole batch applied at once leaves the same rows as applying
its events one at a time (the projector's replay path vs its one-by-one fallback)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import identity, sharing, social, storage
from contracts.base import Event
from runtime.eventstore import StoredEvent
from runtime.replay import compare
from services.sharing import tables
from services.sharing.index import AccessIndex, GrantTerms
from services.sharing.projection import AccessProjection, segments

MEMBERS = ["m0", "m1", "m2", "m3"]
SETS = ["s0", "s1"]
T0 = datetime(2026, 3, 1, tzinfo=UTC)

pairs = st.tuples(st.sampled_from(MEMBERS), st.sampled_from(MEMBERS)).filter(
    lambda p: p[0] != p[1])


def _grant(p: tuple[str, str], s: str, permission: sharing.Permission, years: list[int] | None,
           expires: int | None) -> Event:
    return sharing.ShareGranted(
        share_id=sharing.share_id(p[0], s), owner_id=p[0], set_id=s, set_name=s.upper(),
        friend_id=p[1], permission=permission, years=years, at=T0,
        expires_at=None if expires is None else T0 + timedelta(days=expires))


# Each step is an event minus its time (given when the log is built); the key space is
# small so that batches touch the same rows over and over.
steps = st.one_of(
    st.builds(lambda m, n: identity.NicknameChanged(member_id=m, nickname=n, at=T0),
              st.sampled_from(MEMBERS), st.sampled_from(["a", "b"])),
    st.builds(lambda p: social.FriendAdded(friendship_id=social.pair_id(*p), member_id=p[0],
                                           friend_id=p[1], friend_nickname="x", at=T0), pairs),
    st.builds(lambda p: social.FriendRemoved(friendship_id=social.pair_id(*p), member_id=p[0],
                                             friend_id=p[1], at=T0), pairs),
    st.builds(_grant, pairs, st.sampled_from(SETS), st.sampled_from(["read-write", "read-only"]),
              st.sampled_from([None, [2024], [2024, 2025]]), st.sampled_from([None, 1, 30])),
    st.builds(lambda p, s: sharing.ShareRevoked(share_id=sharing.share_id(p[0], s),
                                                owner_id=p[0], set_id=s, friend_id=p[1], at=T0),
              pairs, st.sampled_from(SETS)),
    st.builds(lambda m, s: storage.VersionDeleted(owner_id=m, version_id=f"{m}-{s}", by=m,
                                                  at=T0),
              st.sampled_from(MEMBERS), st.sampled_from(SETS)),
)


def _log(events: list[Event]) -> list[StoredEvent]:
    """Members and their backups first, then the steps, one second apart."""
    first: list[Event] = [identity.MemberRegistered(member_id=m, account=m.upper(),
                                                    nickname=m, password_hash="x", at=T0)
                          for m in MEMBERS]
    first += [storage.BackupUploaded(owner_id=m, version_id=f"{m}-{s}", upload_id="u",
                                     uploader_id=m, set_id=s, set_name=s.upper(), year=2024,
                                     period=12, size=1, sha256="0" * 64, key="k", at=T0)
              for m in MEMBERS for s in SETS]
    return [_stored(i, msgspec.structs.replace(e, at=T0 + timedelta(seconds=i)))
            for i, e in enumerate([*first, *events], start=1)]


def _stored(seq: int, event: Event) -> StoredEvent:
    context = {identity.MemberRegistered: "identity", identity.NicknameChanged: "identity",
               social.FriendAdded: "social", social.FriendRemoved: "social",
               sharing.ShareGranted: "sharing", sharing.ShareRevoked: "sharing"}.get(
        type(event), "storage")
    name = type(event).__name__
    return StoredEvent(seq=seq, subject=f"evt.{context}.agg.x{seq}.{name}", type=name,
                       data=msgspec.json.encode(event), headers={})


async def _fresh(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
    await AccessProjection().setup(conn, schema)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(steps, max_size=40))
async def test_a_batch_leaves_the_rows_one_by_one_would(pool: asyncpg.Pool,
                                                        events: list[Event]) -> None:
    log = _log(events)
    projection = AccessProjection()
    async with pool.acquire() as conn:
        await _fresh(conn, "one_by_one")
        await _fresh(conn, "batched")
        for event in log:
            await projection.apply(conn, "one_by_one", event)
        await projection.apply_prepared(conn, "batched", projection.prepare(log))
    assert await compare(pool, "one_by_one", "batched", tables.TABLES) == []


def test_events_touching_the_same_row_go_to_separate_segments() -> None:
    granted = _grant(("m0", "m1"), "s0", "read-write", None, None)
    revoked = sharing.ShareRevoked(share_id="x", owner_id="m0", set_id="s0", friend_id="m1",
                                   at=T0)
    other = _grant(("m0", "m1"), "s1", "read-only", None, None)
    unfriended = social.FriendRemoved(friendship_id="p", member_id="m1", friend_id="m0", at=T0)
    found = [len(c.grants) + len(c.revokes) + len(c.unfriended)
             for c in segments([granted, other, revoked, unfriended])]
    # The two grants commute (other sets); the revoke touches the first grant's row; the
    # unfriending closes the history both grants opened.
    assert found == [2, 1, 1]


duplicates = st.lists(st.one_of(
    st.builds(lambda m, a: identity.MemberRegistered(member_id=m, account=a, nickname=m,
                                                     password_hash="x", at=T0),
              st.sampled_from([*MEMBERS, "m9"]), st.sampled_from(["M0", "m1", "NEW"])),
    st.builds(lambda m, s, v, n: storage.BackupUploaded(
        owner_id=m, version_id=v, upload_id="u", uploader_id=m, set_id=s, set_name=n,
        year=2025, period=1, size=1, sha256="0" * 64, key="k", at=T0),
        st.sampled_from(MEMBERS), st.sampled_from(SETS), st.sampled_from(["v1", "m0-s0"]),
        st.sampled_from(["Renamed", "Other"])),
), max_size=6)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(steps, max_size=30), clashes=duplicates)
async def test_the_index_answers_a_grant_and_a_check_as_the_tables_do(
        pool: asyncpg.Pool, events: list[Event], clashes: list[Event]) -> None:
    log = _log([*clashes, *events])
    projection, index = AccessProjection(), AccessIndex()
    async with pool.acquire() as conn:
        await _fresh(conn, "facts")
        for event in log:  # the projector's careful path: a refused insert changes nothing
            with contextlib.suppress(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await projection.apply(conn, "facts", event)
    index.applied(log)
    keys = [identity.account_key(a) for a in ("M0", "m1", "M2", "M3", "NEW", "nobody")]
    for owner in MEMBERS:
        for set_id in [*SETS, "s9"]:
            assert index.grant_facts(owner, set_id, keys) == await tables.grant_facts(
                pool, "facts", owner, set_id, keys)
            for member in MEMBERS:  # a check: the leader asks the index, a standby the tables
                row = await tables.active_grant(pool, "facts", member, owner, set_id)
                assert index.lookup(member, owner, set_id) == (None if row is None else (
                    GrantTerms(row["permission"], row["years"], row["expires_at"])))
    fresh = AccessIndex()  # grants and friendships: the copy followed as the tables went
    async with pool.acquire() as conn:
        await fresh.reload(conn, "facts")
    assert (index.grants, index.friends) == (fresh.grants, fresh.friends)
