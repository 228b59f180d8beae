"""`ledgershare device …` and `ledgershare sync …`: this machine as a device of the member,
and its synced set-years (lease, upload, pull, status).

The device id this machine registered is kept in ``<home>/device.json`` (per member);
``--device`` names another one.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from cli.client import Client, Handler, _facts, download_name, new_id, table
from cli.session import Saved
from contracts import storage as stc
from contracts import sync as syc
from contracts.errors import BadRequest
from contracts.http import OverHttp, SyncOverHttp
from contracts.transfer import download, upload


class Devices(msgspec.Struct, kw_only=True):
    """The device id this machine has for each member who registered it here."""

    by_member: dict[str, str] = {}


def _devices_file(home: str) -> Path:
    return Path(home) / "device.json"


def _load(home: str) -> Devices:
    path = _devices_file(home)
    return msgspec.json.decode(path.read_bytes(), type=Devices) if path.exists() else Devices()


def _keep(home: str, member_id: str, device_id: str) -> None:
    kept = _load(home)
    kept.by_member[member_id] = device_id
    path = _devices_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(kept))


def sync_client(c: Client) -> syc.SyncClient:
    """sync's client on the same transport as the others: the bus or the gateway."""
    storage: Any = c.storage
    if isinstance(storage, OverHttp):
        return SyncOverHttp(storage.http)
    return syc.SyncClient(storage.nc, timeout=storage.timeout)


def device_of(c: Client, a: argparse.Namespace) -> str:
    """--device, or the device this machine registered for the member."""
    if getattr(a, "device", None):
        return str(a.device)
    found = _load(c.settings.home).by_member.get(c.me().member_id)
    if found is None:
        raise BadRequest("this machine is no device of yours yet: run `ledgershare device "
                         "register NAME` first (or give --device)")
    return found


def on_set_year(c: Client, a: argparse.Namespace, me: Saved) -> dict[str, Any]:
    return {"command_id": new_id(), "session": me.session, "device_id": device_of(c, a),
            "set_id": a.set, "year": a.year}


def _when(t: datetime | None) -> str:
    return f"{t.astimezone():%Y-%m-%d %H:%M:%S}" if t else "-"


# ---- devices ----------------------------------------------------------------------------

async def device_register(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    reply = await sync_client(c).register_device(syc.RegisterDevice(
        command_id=new_id(), session=me.session, name=a.name))
    _keep(c.settings.home, me.member_id, reply.device_id)
    c.seen(reply.seq)
    c.show(reply, f"this machine is device {reply.device_id} ({reply.name})")


async def device_list(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    reply = await sync_client(c).devices(syc.DevicesRequest(session=me.session, seq=me.seq))
    here = _load(c.settings.home).by_member.get(me.member_id)
    c.show(reply, table("devices", ["device", "name", "first seen", "last seen", "state"], [
        [d.device_id + (" (this one)" if d.device_id == here else ""), d.name,
         _when(d.first_seen), _when(d.last_seen),
         f"revoked {_when(d.revoked_at)}" if d.revoked_at else "active"]
        for d in reply.devices]))


async def device_revoke(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    here = _load(c.settings.home).by_member.get(me.member_id)
    reply = await sync_client(c).revoke_device(syc.RevokeDevice(
        command_id=new_id(), session=me.session, device_id=a.device_id,
        by_device=here if here != a.device_id else None))
    c.seen(reply.seq)
    c.show(reply, f"device {a.device_id} revoked: it can do nothing more, anywhere")


# ---- sync -------------------------------------------------------------------------------

async def sync_on(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    reply = await sync_client(c).turn_on(syc.TurnOn(**on_set_year(c, a, me),
                                                    set_name=a.name or a.set))
    c.seen(reply.seq)
    c.show(reply, f"sync on for {a.set}/{a.year}; current version {reply.current or '-'}")


async def sync_off(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    reply = await sync_client(c).turn_off(syc.OnSetYear(**on_set_year(c, a, me)))
    c.seen(reply.seq)
    c.show(reply, f"sync off for {a.set}/{a.year}")


def _lease_line(lease: syc.LeaseInfo | None) -> str:
    if lease is None:
        return "nobody holds the lease now"
    return (f"in use on {lease.device_name} since {_when(lease.since)}, "
            f"until {_when(lease.until)} unless renewed")


async def sync_lease(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    client = sync_client(c)
    fields = on_set_year(c, a, me)
    match a.which:
        case "take":
            reply = await client.take_lease(syc.TakeLease(**fields, ttl_s=a.ttl))
        case "renew":
            reply = await client.renew_lease(syc.TakeLease(**fields, ttl_s=a.ttl))
        case "release":
            reply = await client.release_lease(syc.OnSetYear(**fields))
        case _:
            reply = await client.break_lease(syc.OnSetYear(**fields))
    c.seen(reply.seq)
    c.show(reply, f"lease {a.which}: {_lease_line(reply.lease)}")


async def sync_upload(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    client = sync_client(c)
    path = Path(a.file)
    size, digest = await asyncio.to_thread(_facts, path)
    plan = await client.begin_upload(syc.BeginSync(
        **on_set_year(c, a, me), set_name=a.name or a.set, period=a.period, size=size,
        sha256=digest, remark=a.remark or f"{a.year}年{a.period}期", base_version=a.base))
    with c.progress() as bar:
        task = bar.add_task(f"upload {path.name}", total=size)
        await upload(plan, path, progress=lambda n: bar.advance(task, n))
    done = await client.complete_upload(syc.CompleteSync(**on_set_year(c, a, me),
                                                         upload_id=plan.upload_id))
    c.seen(done.seq)
    verdict = (f"kept as a CONFLICT: the current version is {done.current}; pull it, or "
               f"upload again based on it" if done.conflict else "now the current version")
    c.show(done, f"synced version {done.version.version_id} "
                 f"({stc.megabytes(done.version.size)}): {verdict}")


async def sync_pull(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    ticket = await sync_client(c).pull(syc.Pull(**on_set_year(c, a, me),
                                                version_id=a.version))
    path = Path(a.output) if a.output else Path(download_name(ticket.version.set_name,
                                                              a.year))
    with c.progress() as bar:
        task = bar.add_task(f"pull {path.name}", total=ticket.version.size)
        await download(ticket.url, path, size=ticket.version.size,
                       progress=lambda n: bar.advance(task, n))
    c.show({"file": str(path), "version": ticket.version.version_id},
           f"pulled version {ticket.version.version_id} to {path}")


async def sync_status(c: Client, a: argparse.Namespace) -> None:
    me = c.me()
    reply = await sync_client(c).status(syc.StatusRequest(session=me.session, seq=me.seq))
    c.show(reply, table("synced set-years", [
        "set", "year", "sync", "current", "made on", "lease", "devices' last synced"], [
        [s.set_name, s.year, "on" if s.on else "off", s.current or "-",
         (s.current_device or "-")[:8], _lease_line(s.lease),
         ", ".join(f"{d.device_name}: {d.version_id[:8]}" for d in s.devices) or "-"]
        for s in reply.set_years]))


# ---- the parser -------------------------------------------------------------------------

def _set_year(p: Any) -> None:
    p.add_argument("--set", required=True, help="account set id")
    p.add_argument("--year", required=True, type=int)
    p.add_argument("--device", help="the device id (default: this machine's)")


def commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add `device …` and `sync …` to the command's subparsers."""
    def group(name: str, help_text: str) -> Any:
        return sub.add_parser(name, help=help_text).add_subparsers(
            dest="action", required=True, parser_class=parser_class)

    d = group("device", "this machine as a device of yours (cloud sync)")
    d.add_parser("register", help="register this machine").add_argument("name")
    d.add_parser("list", help="your devices: first and last seen, revoked")
    d.add_parser("revoke", help="revoke a device, at once everywhere").add_argument(
        "device_id")
    s = group("sync", "cloud sync of your set-years across your machines")
    on = s.add_parser("on", help="turn sync on for a set-year")
    _set_year(on)
    on.add_argument("--name", help="account set name (default: the id)")
    _set_year(s.add_parser("off", help="turn sync off for a set-year"))
    lease = s.add_parser("lease", help="take, renew, release or break the lease")
    lease.add_argument("which", choices=("take", "renew", "release", "break"))
    _set_year(lease)
    lease.add_argument("--ttl", type=int, help="seconds (default: the service's)")
    up = s.add_parser("upload", help="sync a file up: a new version based on --base")
    up.add_argument("file")
    _set_year(up)
    up.add_argument("--period", required=True, type=int, help="closed to period 1..12")
    up.add_argument("--base", help="the version this file started from")
    up.add_argument("--name", help="account set name (default: the id)")
    up.add_argument("--remark", help="default: <year>年<period>期")
    pull = s.add_parser("pull", help="download the current version (or --version)")
    _set_year(pull)
    pull.add_argument("--version")
    pull.add_argument("-o", "--output")
    s.add_parser("status", help="per set-year: current version, its device, lease, devices")


CLIENT: dict[tuple[str, ...], Handler] = {
    ("device", "register"): device_register, ("device", "list"): device_list,
    ("device", "revoke"): device_revoke,
    ("sync", "on"): sync_on, ("sync", "off"): sync_off, ("sync", "lease"): sync_lease,
    ("sync", "upload"): sync_upload, ("sync", "pull"): sync_pull,
    ("sync", "status"): sync_status,
}
