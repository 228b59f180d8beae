"""sharing's read model in PostgreSQL: the only file of the service that speaks SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypeAlias

import asyncpg
import msgspec

from contracts.agency import AgencyEvent
from contracts.agency_state import AgencyState, access, evolve
from contracts.identity import MemberErased, NicknameChanged
from contracts.sharing import ShareGranted, ShareRevoked
from contracts.social import FriendAdded, FriendRemoved
from contracts.storage import BackupUploaded, VersionDeleted

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
_encode = msgspec.json.Encoder().encode
_state = msgspec.json.Decoder(AgencyState)
TABLES = ("directory", "friends", "backups", "grants", "grant_history", "agencies",
          "agency_access", "agency_history")


async def create_tables(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"""
        CREATE TABLE IF NOT EXISTS {schema}.directory (
            member_id text PRIMARY KEY, account text NOT NULL,
            account_key text NOT NULL UNIQUE, nickname text NOT NULL);
        CREATE TABLE IF NOT EXISTS {schema}.friends (
            member_id text NOT NULL, friend_id text NOT NULL,
            PRIMARY KEY (member_id, friend_id));
        CREATE TABLE IF NOT EXISTS {schema}.backups (
            version_id text PRIMARY KEY, owner_id text NOT NULL, set_id text NOT NULL,
            set_name text NOT NULL, year int NOT NULL, period int NOT NULL,
            remark text NOT NULL, uploader_id text NOT NULL, uploaded_at timestamptz NOT NULL,
            size bigint NOT NULL, sha256 text NOT NULL, base_version text,
            conflict_with text);
        CREATE INDEX IF NOT EXISTS backups_by_set ON {schema}.backups (owner_id, set_id, year);
        CREATE TABLE IF NOT EXISTS {schema}.grants (
            owner_id text NOT NULL, set_id text NOT NULL, friend_id text NOT NULL,
            set_name text NOT NULL, permission text NOT NULL, years int[],
            expires_at timestamptz, since timestamptz NOT NULL,
            PRIMARY KEY (owner_id, set_id, friend_id));
        CREATE INDEX IF NOT EXISTS grants_by_friend ON {schema}.grants (friend_id);
        CREATE TABLE IF NOT EXISTS {schema}.grant_history (
            owner_id text NOT NULL, set_id text NOT NULL, friend_id text NOT NULL,
            granted_at timestamptz NOT NULL, ended_at timestamptz, expires_at timestamptz,
            PRIMARY KEY (owner_id, set_id, friend_id, granted_at));
        CREATE INDEX IF NOT EXISTS grant_history_open ON {schema}.grant_history
            (owner_id, friend_id, set_id) WHERE ended_at IS NULL;
        CREATE TABLE IF NOT EXISTS {schema}.agencies (
            agency_id text PRIMARY KEY, name text NOT NULL, state jsonb NOT NULL);
        CREATE TABLE IF NOT EXISTS {schema}.agency_access (
            owner_id text NOT NULL, set_id text NOT NULL, member_id text NOT NULL,
            agency_id text NOT NULL, reason text NOT NULL, permission text NOT NULL,
            PRIMARY KEY (owner_id, set_id, member_id, agency_id));
        CREATE INDEX IF NOT EXISTS agency_access_by_member ON {schema}.agency_access
            (member_id, agency_id);
        CREATE TABLE IF NOT EXISTS {schema}.agency_history (
            owner_id text NOT NULL, set_id text NOT NULL, member_id text NOT NULL,
            agency_id text NOT NULL, reason text NOT NULL, since timestamptz NOT NULL,
            until timestamptz,
            PRIMARY KEY (owner_id, set_id, member_id, agency_id, since));
    """)
    # From the earlier shape: a grant's read-only/read-write was its "scope".
    await conn.execute(f"""
        DO $$ BEGIN
            IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{schema}'
                       AND table_name = 'grants' AND column_name = 'scope') THEN
                ALTER TABLE {schema}.grants RENAME COLUMN scope TO permission;
            END IF;
        END $$;
    """)


# ---- writes (projection) --------------------------------------------------------------

class Member(msgspec.Struct, frozen=True, kw_only=True):
    """A row of the directory."""

    member_id: str
    account: str
    account_key: str
    nickname: str


class Changes:
    """One segment of commuting changes (see projection.segments): each list goes to
    PostgreSQL as one JSON document in one statement, so a replay costs a few statements
    per thousand events rather than three per event, and msgspec (not a Python loop per
    array element) does the encoding."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.nicknames: list[NicknameChanged] = []
        self.befriended: list[FriendAdded] = []
        self.unfriended: list[FriendRemoved] = []
        self.backups: list[BackupUploaded] = []
        self.deleted: list[VersionDeleted] = []
        self.grants: list[ShareGranted] = []
        self.revokes: list[ShareRevoked] = []
        self.erased: list[MemberErased] = []
        self.agency: list[AgencyEvent] = []  # at most one per agency (projection.claims)

    @property
    def size(self) -> int:
        """How many changes the segment holds."""
        return (len(self.members) + len(self.nicknames) + len(self.befriended)
                + len(self.unfriended) + len(self.backups) + len(self.deleted)
                + len(self.grants) + len(self.revokes) + len(self.erased) + len(self.agency))


# Both directions of a pair as rows, so joins stay equality joins (an OR of the two
# directions makes PostgreSQL compare every pair with every row).
_BOTH_WAYS = ("LATERAL (VALUES (u.member_id, u.friend_id, u.at), "
              "(u.friend_id, u.member_id, u.at)) p(x, y, at)")
_PAIRS = "u(member_id text, friend_id text, at timestamptz)"
_SHARES = "u(owner_id text, set_id text, friend_id text, at timestamptz)"


async def prefer_lookups(conn: asyncpg.Connection) -> None:
    """For the rest of this transaction, join a batch's rows to the tables by key lookups.

    PostgreSQL guesses 100 rows for any json_to_recordset, so it may scan or hash a whole
    table for a batch of four (1 ms a statement under a live load, seven in ten of the
    database's time); for a small batch a lookup per row is right (0.04 ms)."""
    await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
                       "SET LOCAL enable_seqscan = off; SET LOCAL enable_material = off")


async def write(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    """Apply one segment. Its changes commute, so only the order within a row matters:
    an interval of grant history is closed before a new one opens."""
    await _directory(conn, schema, c)
    await _friends(conn, schema, c)
    await _backups(conn, schema, c)
    await _grants(conn, schema, c)
    await _history(conn, schema, c)
    await _agencies(conn, schema, c)


async def _each(conn: asyncpg.Connection, sql: str, rows: Sequence[msgspec.Struct]) -> None:
    """Run ``sql`` once for all ``rows``, given as the JSON array ``$1``."""
    if rows:
        await conn.execute(sql, _encode(rows).decode())


async def _directory(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    await _each(conn, f"INSERT INTO {schema}.directory SELECT * FROM json_to_recordset($1) "
                "u(member_id text, account text, account_key text, nickname text)", c.members)
    await _each(conn, f"UPDATE {schema}.directory d SET nickname = u.nickname FROM "
                "json_to_recordset($1) u(member_id text, nickname text) "
                "WHERE d.member_id = u.member_id", c.nicknames)
    # An erased member leaves the directory, and the remarks they wrote in others'
    # drives read "" (as their sealed text reads in a rebuild once their key is gone).
    await _each(conn, f"DELETE FROM {schema}.directory d USING json_to_recordset($1) "
                "u(member_id text) WHERE d.member_id = u.member_id", c.erased)
    await _each(conn, f"UPDATE {schema}.backups b SET remark = '' FROM json_to_recordset($1) "
                "u(member_id text) WHERE b.uploader_id = u.member_id", c.erased)


async def _friends(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    await _each(conn, f"DELETE FROM {schema}.friends f USING json_to_recordset($1) {_PAIRS}, "
                f"{_BOTH_WAYS} WHERE f.member_id = p.x AND f.friend_id = p.y", c.unfriended)
    await _each(conn, f"INSERT INTO {schema}.friends SELECT x, y FROM json_to_recordset($1) "
                f"{_PAIRS}, {_BOTH_WAYS} ON CONFLICT DO NOTHING", c.befriended)


async def _backups(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    await _each(conn, f"INSERT INTO {schema}.backups SELECT * FROM json_to_recordset($1) "
                "u(version_id text, owner_id text, set_id text, set_name text, year int, "
                "period int, remark text, uploader_id text, at timestamptz, size bigint, "
                "sha256 text, base_version text, conflict_with text)", c.backups)
    await _each(conn, f"DELETE FROM {schema}.backups b USING json_to_recordset($1) "
                "u(version_id text) WHERE b.version_id = u.version_id", c.deleted)


def _befriended(schema: str) -> str:
    """Whether row ``u``'s owner and friend are friends."""
    return (f"EXISTS (SELECT 1 FROM {schema}.friends f WHERE f.member_id = u.owner_id "
            "AND f.friend_id = u.friend_id)")


async def _grants(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    # An unfriending ends every grant between the two, both ways, for good: a friendship
    # made again (by either one alone) brings none back; the owner shares again.
    await _each(conn, f"DELETE FROM {schema}.grants g USING json_to_recordset($1) {_PAIRS}, "
                f"{_BOTH_WAYS} WHERE g.owner_id = p.x AND g.friend_id = p.y", c.unfriended)
    # A grant counts only between friends at its place in the log: one decided on a
    # friendship the read model still showed, but appended after the unfriending, is void.
    # The events go in as their JSON, where a grant's permission is still named "scope".
    await _each(conn, f"INSERT INTO {schema}.grants SELECT * FROM json_to_recordset($1) "
                "u(owner_id text, set_id text, friend_id text, set_name text, scope text, "
                "years int[], expires_at timestamptz, at timestamptz) "
                f"WHERE {_befriended(schema)} "
                "ON CONFLICT (owner_id, set_id, friend_id) DO UPDATE SET "
                "permission = EXCLUDED.permission, "
                "years = EXCLUDED.years, expires_at = EXCLUDED.expires_at, "
                "set_name = EXCLUDED.set_name", c.grants)
    await _each(conn, f"DELETE FROM {schema}.grants g USING json_to_recordset($1) {_SHARES} "
                "WHERE g.owner_id = u.owner_id AND g.set_id = u.set_id "
                "AND g.friend_id = u.friend_id", c.revokes)


async def _history(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    # A new grant (or new terms) ends the open interval and starts a new one (none for a
    # void grant, between non-friends); a revoke ends it; an unfriending ends every open
    # interval between the two, at its own time (which the unfriend policy looks for).
    await _each(conn, f"UPDATE {schema}.grant_history h SET ended_at = u.at FROM "
                f"json_to_recordset($1) {_SHARES} WHERE h.owner_id = u.owner_id "
                "AND h.set_id = u.set_id AND h.friend_id = u.friend_id AND h.ended_at IS NULL",
                [*c.grants, *c.revokes])
    await _each(conn, f"UPDATE {schema}.grant_history h SET ended_at = p.at FROM "
                f"json_to_recordset($1) {_PAIRS}, {_BOTH_WAYS} WHERE h.ended_at IS NULL "
                "AND h.owner_id = p.x AND h.friend_id = p.y", c.unfriended)
    await _each(conn, f"INSERT INTO {schema}.grant_history (owner_id, set_id, friend_id, "
                "granted_at, expires_at) SELECT owner_id, set_id, friend_id, at, expires_at "
                "FROM json_to_recordset($1) u(owner_id text, set_id text, friend_id text, "
                f"at timestamptz, expires_at timestamptz) WHERE {_befriended(schema)} "
                "ON CONFLICT DO NOTHING", c.grants)


class AgencyRow(msgspec.Struct, frozen=True, kw_only=True):
    """A row of agency_access, or of agency_history with ``at`` its start or end."""

    owner_id: str
    set_id: str
    member_id: str
    agency_id: str
    reason: str = ""
    permission: str = ""
    at: datetime | None = None


_ACCESS = ("u(owner_id text, set_id text, member_id text, agency_id text, reason text, "
           "permission text, at timestamptz)")
_ACCESS_KEY = ("t.owner_id = u.owner_id AND t.set_id = u.set_id AND t.member_id = u.member_id "
               "AND t.agency_id = u.agency_id")


async def _agencies(conn: asyncpg.Connection, schema: str, c: Changes) -> None:
    """Each agency's new state, the access it gives now and its history: the state is
    folded here (the rules are `contracts.agency_state`'s), so only the difference is
    written."""
    if not c.agency:
        return
    rows = await conn.fetch(f"SELECT agency_id, state::text FROM {schema}.agencies "
                            "WHERE agency_id = ANY($1)", [e.agency_id for e in c.agency])
    old = {r["agency_id"]: _state.decode(r["state"]) for r in rows}
    states, ended, begun = [], [], []
    for event in c.agency:
        before = old.get(event.agency_id, AgencyState())
        after = evolve(before, event)
        states.append({"agency_id": event.agency_id, "name": after.name, "state": after})
        lost, gained = access_changes(event.agency_id, before, after, event.at)
        ended += lost
        begun += gained
    await conn.execute(f"INSERT INTO {schema}.agencies SELECT * FROM json_to_recordset($1) "
                       "u(agency_id text, name text, state jsonb) ON CONFLICT (agency_id) "
                       "DO UPDATE SET name = EXCLUDED.name, state = EXCLUDED.state",
                       _encode(states).decode())
    await _each(conn, f"DELETE FROM {schema}.agency_access t USING json_to_recordset($1) "
                f"{_ACCESS} WHERE {_ACCESS_KEY}", ended)
    await _each(conn, f"UPDATE {schema}.agency_history t SET until = u.at FROM "
                f"json_to_recordset($1) {_ACCESS} WHERE {_ACCESS_KEY} AND t.until IS NULL",
                ended)
    await _each(conn, f"INSERT INTO {schema}.agency_access SELECT owner_id, set_id, member_id, "
                f"agency_id, reason, permission FROM json_to_recordset($1) {_ACCESS}", begun)
    await _each(conn, f"INSERT INTO {schema}.agency_history SELECT owner_id, set_id, "
                f"member_id, agency_id, reason, at, NULL FROM json_to_recordset($1) {_ACCESS} "
                "ON CONFLICT DO NOTHING", begun)


def access_changes(agency_id: str, before: AgencyState, after: AgencyState,
                   at: datetime) -> tuple[list[AgencyRow], list[AgencyRow]]:
    """The access rows an agency's change ended and began (new terms: both)."""
    old, new = access(before), access(after)
    ended = [AgencyRow(owner_id=o, set_id=s, member_id=m, agency_id=agency_id, at=at)
             for (o, s, m), terms in old.items() if new.get((o, s, m)) != terms]
    begun = [AgencyRow(owner_id=o, set_id=s, member_id=m, agency_id=agency_id, reason=why,
                       permission=grant, at=at)
             for (o, s, m), (why, grant) in new.items() if old.get((o, s, m)) != (why, grant)]
    return ended, begun


# ---- reads ------------------------------------------------------------------------------

async def member_by_account(conn: Conn, schema: str, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM {schema}.directory WHERE account_key = $1", key)
    return row


async def grant_facts(conn: Conn, schema: str, owner_id: str, set_id: str,
                      account_keys: list[str]) -> tuple[str | None, list[str | None]]:
    """What a grant needs, in one round trip: the set's name (None: no backup) and, per
    account, the member id of that friend of the owner (None: no such member or friend)."""
    rows = await conn.fetch(
        f"SELECT (SELECT set_name FROM {schema}.backups WHERE owner_id = $1 AND set_id = $2 "
        "ORDER BY uploaded_at DESC LIMIT 1) AS set_name, f.friend_id FROM "
        f"unnest($3::text[]) WITH ORDINALITY k(key, n) LEFT JOIN {schema}.directory d "
        f"ON d.account_key = k.key LEFT JOIN {schema}.friends f ON f.member_id = $1 "
        "AND f.friend_id = d.member_id ORDER BY k.n", owner_id, set_id, account_keys)
    name = rows[0]["set_name"] if rows else None
    return name, [r["friend_id"] for r in rows]


async def active_grant(conn: Conn, schema: str, member_id: str, owner_id: str,
                       set_id: str) -> asyncpg.Record | None:
    """The grant of (owner, set) to member, only while the two are friends."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT g.permission, g.years, g.expires_at FROM {schema}.grants g "
        f"JOIN {schema}.friends f ON f.member_id = g.owner_id AND f.friend_id = g.friend_id "
        "WHERE g.owner_id = $1 AND g.set_id = $2 AND g.friend_id = $3",
        owner_id, set_id, member_id)
    return row


async def ended_by_unfriending(conn: Conn, schema: str, member_id: str, friend_id: str,
                               at: datetime) -> list[tuple[str, str, str]]:
    """(owner, set, friend) of each grant between the two, either way, that their
    unfriending at ``at`` ended, unless granted again since (its interval of history
    ended at exactly that time; a grant since has a row of its own)."""
    rows = await conn.fetch(
        f"SELECT DISTINCT h.owner_id, h.set_id, h.friend_id FROM {schema}.grant_history h "
        "WHERE ((h.owner_id = $1 AND h.friend_id = $2) OR (h.owner_id = $2 AND "
        "h.friend_id = $1)) AND h.ended_at = $3 AND NOT EXISTS (SELECT 1 FROM "
        f"{schema}.grants g WHERE g.owner_id = h.owner_id AND g.set_id = h.set_id AND "
        "g.friend_id = h.friend_id) ORDER BY 1, 2, 3", member_id, friend_id, at)
    return [(str(r["owner_id"]), str(r["set_id"]), str(r["friend_id"])) for r in rows]


async def owner_shares(conn: Conn, schema: str, owner_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT g.*, d.account, d.nickname FROM {schema}.grants g "
        f"JOIN {schema}.friends f ON f.member_id = g.owner_id AND f.friend_id = g.friend_id "
        f"JOIN {schema}.directory d ON d.member_id = g.friend_id "
        "WHERE g.owner_id = $1 ORDER BY g.set_name, g.set_id, g.since, d.account", owner_id)
    return rows


async def shared_with(conn: Conn, schema: str, member_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT g.*, d.account, d.nickname FROM {schema}.grants g "
        f"JOIN {schema}.friends f ON f.member_id = g.owner_id AND f.friend_id = g.friend_id "
        f"JOIN {schema}.directory d ON d.member_id = g.owner_id "
        "WHERE g.friend_id = $1 ORDER BY d.account, g.set_name, g.set_id", member_id)
    return rows


async def backups_of(conn: Conn, schema: str, owner_id: str,
                     set_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM {schema}.backups WHERE owner_id = $1 AND set_id = $2 "
        "ORDER BY year, uploaded_at DESC", owner_id, set_id)
    return rows


async def could_see(conn: Conn, schema: str, owner_id: str, set_id: str,
                    at: datetime) -> list[str]:
    rows = await conn.fetch(
        f"SELECT DISTINCT d.account FROM {schema}.grant_history h "
        f"JOIN {schema}.directory d ON d.member_id = h.friend_id "
        "WHERE h.owner_id = $1 AND h.set_id = $2 AND h.granted_at <= $3 "
        "AND (h.ended_at IS NULL OR h.ended_at > $3) "
        "AND (h.expires_at IS NULL OR h.expires_at > $3) ORDER BY d.account",
        owner_id, set_id, at)
    return [str(r["account"]) for r in rows]


# ---- the in-memory index's load (index.AccessIndex.reload) ------------------------------

async def every_grant(conn: Conn, schema: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT owner_id, set_id, friend_id, permission, years, expires_at "
        f"FROM {schema}.grants")
    return rows


async def every_friendship(conn: Conn, schema: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT member_id, friend_id FROM {schema}.friends")
    return rows


async def every_account(conn: Conn, schema: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT member_id, account_key FROM {schema}.directory")
    return rows


async def every_backup(conn: Conn, schema: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT version_id, owner_id, set_id, uploaded_at, set_name FROM {schema}.backups")
    return rows


async def every_agency(conn: Conn, schema: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT agency_id, state::text AS state FROM {schema}.agencies")
    return rows


async def every_agency_access(conn: Conn, schema: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(f"SELECT * FROM {schema}.agency_access")
    return rows


# ---- agency access: the questions a check and a listing ask ------------------------------

async def through_agencies(conn: Conn, schema: str, member_id: str, owner_id: str,
                           set_id: str) -> dict[str, tuple[str, str]]:
    """As `index.AccessIndex.through_agencies`."""
    rows = await conn.fetch(
        f"SELECT agency_id, reason, permission FROM {schema}.agency_access WHERE "
        "owner_id = $1 AND set_id = $2 AND member_id = $3", owner_id, set_id, member_id)
    return {r["agency_id"]: (r["reason"], r["permission"]) for r in rows}


async def agencies_of(conn: Conn, schema: str, owner_id: str, set_id: str) -> list[str]:
    """The agencies that give access to (owner, set) now."""
    rows = await conn.fetch(f"SELECT DISTINCT agency_id FROM {schema}.agency_access WHERE "
                            "owner_id = $1 AND set_id = $2 ORDER BY 1", owner_id, set_id)
    return [str(r["agency_id"]) for r in rows]


async def agency_work(conn: Conn, schema: str, member_id: str,
                      agency_id: str) -> list[asyncpg.Record]:
    """The agency's sets member may use through it (not as their owner), with whose drive
    holds each and who keeps it."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT a.owner_id, a.set_id, a.reason, a.permission, "
        f"coalesce(o.account, '') AS owner, coalesce(k.account, '') AS keeper, "
        f"(SELECT set_name FROM {schema}.backups b WHERE b.owner_id = a.owner_id AND "
        "b.set_id = a.set_id ORDER BY uploaded_at DESC LIMIT 1) AS set_name "
        f"FROM {schema}.agency_access a JOIN {schema}.agencies g ON g.agency_id = a.agency_id "
        f"LEFT JOIN {schema}.directory o ON o.member_id = a.owner_id "
        f"LEFT JOIN {schema}.directory k ON k.member_id = "
        "g.state->'sets'->a.owner_id->>a.set_id "
        "WHERE a.member_id = $1 AND a.agency_id = $2 AND a.permission <> 'none' "
        "ORDER BY keeper, owner, a.set_id", member_id, agency_id)
    return rows


async def seen_through_agencies(conn: Conn, schema: str, owner_id: str, set_id: str,
                                at: datetime) -> list[asyncpg.Record]:
    """Who could use (owner, set) through an agency at ``at``, and why; a row with the
    reason "handed over" says the owner had handed it over then (their shares did not
    count)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT DISTINCT coalesce(d.account, '') AS account, h.reason, g.name "
        f"FROM {schema}.agency_history h "
        f"LEFT JOIN {schema}.directory d ON d.member_id = h.member_id "
        f"JOIN {schema}.agencies g ON g.agency_id = h.agency_id "
        "WHERE h.owner_id = $1 AND h.set_id = $2 AND h.since <= $3 "
        "AND (h.until IS NULL OR h.until > $3) ORDER BY 1, 2, 3",
        owner_id, set_id, at)
    return rows


async def in_agency(conn: Conn, schema: str, member_id: str, agency_id: str) -> bool:
    """Whether member has a place in the agency now (by its folded state)."""
    found = await conn.fetchval(f"SELECT state->'members' ? $1 FROM {schema}.agencies "
                                "WHERE agency_id = $2 AND NOT (state->>'closed')::boolean",
                                member_id, agency_id)
    return bool(found)
