"""Every operation of the desktop API over HTTP against the real services: each one
answered once, each typed error it declares provoked, and the services' authorization
carried to HTTP (no session; a malformed, forged, expired, logged-out one or one a password
change or an unbind ended; another member's resources; a revoked or read-only share; a
drive token missing, another's, expired or ended by a drive-password change).

The tables below are the proof; the meta tests check them against what the gateway serves
(`gateway.api.exposed`), so an operation or an error code added without a case fails here.
One stack serves the whole module; each case makes the members and files it alone needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from contracts.sharing import CloudShares
from contracts.storage import MB, DownloadTicket, SetQuota, UploadPlan
from contracts.transfer import download, upload
from deploy.stack import Stack
from runtime.eventstore import EventStore
from runtime.s3 import s3_client
from runtime.settings import Settings
from services.registry import named
from services.storage.objects import ObjectStore
from tests.helpers import PASSWORD, cid, proof_of
from tests.integration import gateway_agency, gateway_sync
from tests.integration.gateway_world import (
    EXPOSED,
    OK,
    Case,
    World,
    account,
    check,
    desktop_api,
    now_iso,
    own_database,
    populate,
    serving,
    upload_body,
)
from tests.integration.test_sharing import SET, Person
from tests.services import running, service_settings
from tests.support import free_port, free_stack_ports

TOO_LONG = "x" * 21  # a nickname past the 20 characters the domain allows


def registration(**fields: str) -> dict[str, Any]:
    return {"command_id": cid(), "account": account(), "password": PASSWORD,
            "nickname": "N", **fields}


async def bind(w: World, person: Person | None = None, *, openid: str = "",
               proof: str = "", **fields: str) -> httpx.Response:
    """``person`` (a new member by default) binds a WeChat user (a new one by default)."""
    p = person or await w.join()
    return await w.post("identity/bind", {
        "command_id": cid(), "account": p.account, "password": PASSWORD,
        "nickname": p.nickname, "openid_proof": proof or proof_of(
            openid or f"wx-{cid()}", w.settings), **fields})


async def unbind_a_bound_member(w: World) -> httpx.Response:
    p = await w.join()
    assert (await bind(w, p)).status_code == 200
    return await w.post("identity/unbind", {"command_id": cid()}, by=p)


async def logout_then_me(w: World) -> httpx.Response:
    """A member logs out; the session is refused from then on."""
    p = await w.join()
    answer = await w.post("identity/logout", command(), by=p)
    after = await w.post("identity/me", by=p)
    assert (after.status_code, after.json()["code"]) == (401, "invalid_token"), after.text
    return answer


async def delete_then_log_in(w: World) -> httpx.Response:
    """A member deletes their account; their session and password open nothing after."""
    p = await w.join()
    answer = await w.post("identity/delete_member", command(password=PASSWORD), by=p)
    after = await w.post("identity/me", by=p)
    assert (after.status_code, after.json()["code"]) == (401, "invalid_token"), after.text
    login = await w.post("identity/login", {"account": p.account, "password": PASSWORD})
    assert (login.status_code, login.json()["code"]) == (401, "invalid_credentials")
    return answer


async def fresh(w: World, op: str, body: dict[str, Any], *, drive: bool = False
                ) -> httpx.Response:
    """``op`` by a member who joined just now (with the cloud-drive password: ``drive``)."""
    return await w.post(op, body, by=await w.join(drive=drive))


def command(**fields: str) -> dict[str, Any]:
    """A command's request: a fresh command id and ``fields``."""
    return {"command_id": cid(), **fields}


IDENTITY = [
    Case("identity/register", 200, OK, lambda w: w.post("identity/register", registration())),
    Case("identity/register", 400, "invalid_account",
         lambda w: w.post("identity/register", registration(account="has space"))),
    Case("identity/register", 400, "invalid_nickname",
         lambda w: w.post("identity/register", registration(nickname=TOO_LONG))),
    Case("identity/register", 400, "weak_password",
         lambda w: w.post("identity/register", registration(password="12345"))),
    Case("identity/register", 409, "account_taken", lambda w: w.post(
        "identity/register", registration(account=w.owner.account.upper()))),
    Case("identity/bind", 200, OK, lambda w: bind(w)),
    Case("identity/bind", 401, "invalid_credentials", lambda w: bind(w, password="wrong-pw")),
    Case("identity/bind", 400, "invalid_nickname", lambda w: bind(w, nickname=TOO_LONG)),
    Case("identity/bind", 409, "openid_taken", lambda w: bind(w, openid=w.openid)),
    Case("identity/bind", 409, "already_bound", lambda w: bind(w, w.bound)),
    Case("identity/bind", 401, "invalid_token", lambda w: bind(w, proof="x.y")),
    Case("identity/bind", 401, "invalid_token", lambda w: bind(w, proof=w.owner.session),
         "a session is no openid proof"),
    Case("identity/unbind", 200, OK, unbind_a_bound_member),
    Case("identity/unbind", 404, "not_bound",
         lambda w: w.post("identity/unbind", {"command_id": cid()}, by=w.plain)),
    Case("identity/login", 200, OK, lambda w: w.post(
        "identity/login", {"account": w.owner.account, "password": PASSWORD})),
    Case("identity/login", 401, "invalid_credentials", lambda w: w.post(
        "identity/login", {"account": w.owner.account, "password": "wrong-pw"})),
    Case("identity/logout", 200, OK, logout_then_me),
    Case("identity/delete_member", 200, OK, delete_then_log_in),
    Case("identity/delete_member", 401, "invalid_credentials", lambda w: fresh(
        w, "identity/delete_member", command(password="wrong-pw"))),
    Case("identity/me", 200, OK, lambda w: w.post("identity/me", by=w.owner)),
    Case("identity/change_password", 200, OK, lambda w: fresh(
        w, "identity/change_password", command(old_password=PASSWORD,
                                               new_password="secret-2"))),
    Case("identity/change_password", 401, "invalid_credentials", lambda w: w.post(
        "identity/change_password", command(old_password="wrong-pw",
                                            new_password="secret-2"), by=w.plain)),
    Case("identity/change_password", 400, "weak_password", lambda w: w.post(
        "identity/change_password", command(old_password=PASSWORD, new_password="123"),
        by=w.plain)),
    Case("identity/change_nickname", 200, OK, lambda w: fresh(
        w, "identity/change_nickname", command(nickname="Renamed"))),
    Case("identity/change_nickname", 400, "invalid_nickname", lambda w: w.post(
        "identity/change_nickname", command(nickname=TOO_LONG), by=w.plain)),
    Case("identity/drive_password_set", 200, OK, lambda w: fresh(
        w, "identity/drive_password_set", command(password="drive-pw", question="pet?",
                                                  answer="Rex"))),
    Case("identity/drive_password_set", 409, "drive_password_already_set", lambda w: w.post(
        "identity/drive_password_set", command(password="drive-pw", question="pet?",
                                               answer="Rex"), by=w.owner)),
    Case("identity/drive_password_set", 400, "weak_password", lambda w: fresh(
        w, "identity/drive_password_set", command(password="123", question="pet?",
                                                  answer="Rex"))),
    Case("identity/drive_password_verify", 200, OK, lambda w: w.post(
        "identity/drive_password_verify", command(password="drive-pw"), by=w.owner)),
    Case("identity/drive_password_verify", 401, "wrong_drive_password", lambda w: fresh(
        w, "identity/drive_password_verify", command(password="wrong-pw"), drive=True)),
    Case("identity/drive_password_reset", 200, OK, lambda w: fresh(
        w, "identity/drive_password_reset", command(answer=" rex ", new_password="drive-2"),
        drive=True)),
    Case("identity/drive_password_reset", 401, "wrong_answer", lambda w: fresh(
        w, "identity/drive_password_reset", command(answer="Max", new_password="drive-2"),
        drive=True)),
    Case("identity/drive_password_reset", 400, "weak_password", lambda w: w.post(
        "identity/drive_password_reset", command(answer="Rex", new_password="123"),
        by=w.owner)),
    Case("identity/drive_password_change", 200, OK, lambda w: fresh(
        w, "identity/drive_password_change", command(old_password="drive-pw",
                                                     new_password="drive-2"), drive=True)),
    Case("identity/drive_password_change", 401, "wrong_drive_password", lambda w: fresh(
        w, "identity/drive_password_change", command(old_password="wrong-pw",
                                                     new_password="drive-2"), drive=True)),
    Case("identity/drive_password_change", 400, "weak_password", lambda w: w.post(
        "identity/drive_password_change", command(old_password="drive-pw",
                                                  new_password="123"), by=w.owner)),
    Case("identity/drive_question", 200, OK,
         lambda w: w.post("identity/drive_question", by=w.owner)),
    Case("identity/public_key", 200, OK, lambda w: w.post("identity/public_key")),
]
# The three ways to prove the cloud-drive password, each refused alike before any check
# when no drive password is set or the drive is locked.
DRIVE_PASSWORD: dict[str, Callable[[World], dict[str, Any]]] = {
    "identity/drive_password_verify": lambda w: command(password="drive-pw"),
    "identity/drive_password_reset": lambda w: command(answer="Rex", new_password="drive-2"),
    "identity/drive_password_change": lambda w: command(old_password="drive-pw",
                                                        new_password="drive-2"),
    "identity/drive_question": lambda w: {},
}


def asked_by(who: str, op: str, status: int, code: str,
             body: Callable[[World], dict[str, Any]], label: str = "") -> Case:
    """Member ``who`` of the world sends ``op`` the request ``body`` makes."""
    return Case(op, status, code, lambda w: w.post(op, body(w), by=getattr(w, who)), label)


IDENTITY += [
    *(asked_by("plain", op, 404, "drive_password_not_set", body)
      for op, body in DRIVE_PASSWORD.items()),
    *(asked_by("locked", op, 403, "drive_locked", body)
      for op, body in DRIVE_PASSWORD.items() if op != "identity/drive_question")]


async def friends_then(w: World, op: str) -> httpx.Response:
    """Two new members become friends; the first calls ``op`` about the second."""
    a, b = await w.join(), await w.join("B")
    await a.befriend(b)
    return await w.post(op, {"command_id": cid(), "account": b.account}, by=a)


async def add_a_friend(w: World) -> httpx.Response:
    a, b = await w.join(), await w.join("B")
    return await w.post("social/add_friend", command(account=b.account, nickname=b.nickname),
                        by=a)


SOCIAL = [
    Case("social/add_friend", 200, OK, add_a_friend),
    Case("social/add_friend", 404, "no_such_member", lambda w: w.post("social/add_friend", {
        "command_id": cid(), "account": "no-such-member", "nickname": "N"}, by=w.plain)),
    Case("social/add_friend", 404, "no_such_member", lambda w: w.post("social/add_friend", {
        "command_id": cid(), "account": w.stranger.account, "nickname": "Not Them"},
        by=w.plain), "the account with another nickname"),
    Case("social/add_friend", 400, "cannot_friend_self", lambda w: w.post(
        "social/add_friend", {"command_id": cid(), "account": w.owner.account,
                              "nickname": w.owner.nickname}, by=w.owner)),
    Case("social/add_friend", 409, "already_friends", lambda w: w.post(
        "social/add_friend", {"command_id": cid(), "account": w.friend.account,
                              "nickname": w.friend.nickname}, by=w.owner)),
    Case("social/remove_friend", 200, OK, lambda w: friends_then(w, "social/remove_friend")),
    Case("social/remove_friend", 404, "no_such_member", lambda w: w.post(
        "social/remove_friend", {"command_id": cid(), "account": "no-such-member"},
        by=w.plain)),
    Case("social/remove_friend", 404, "not_friends", lambda w: w.post(
        "social/remove_friend", {"command_id": cid(), "account": w.stranger.account},
        by=w.owner)),
    Case("social/list_friends", 200, OK, lambda w: listed(
        w.post("social/list_friends", by=w.owner), lambda body: {
            f["account"] for f in body["friends"]} >= {w.friend.account, w.reader.account})),
]


async def listed(call: Awaitable[httpx.Response], holds: Callable[[Any], bool]
                 ) -> httpx.Response:
    """The answer of ``call``, once ``holds`` is true of its JSON body."""
    answer = await call
    assert answer.status_code == 200 and holds(answer.json()), answer.text
    return answer


async def begin_again_after_completion(w: World) -> httpx.Response:
    path = w.file()
    body = upload_body(path, set_id="again")
    begun = await w.post("storage/begin_upload", body, by=w.owner)
    await upload(msgspec.json.decode(begun.content, type=UploadPlan), path)
    completed = await w.post("storage/complete_upload", {
        "command_id": cid(), "upload_id": begun.json()["upload_id"]}, by=w.owner)
    assert completed.status_code == 200, completed.text
    return await w.post("storage/begin_upload", body, by=w.owner)


async def complete_after_revoke(w: World) -> httpx.Response:
    """A friend began an upload into the owner's drive; the owner revoked; the friend
    completes it."""
    owner, friend = await w.join(drive=True), await w.join("F", drive=True)
    await owner.upload(w.file())
    await owner.befriend(friend)
    await owner.grant(friend)
    friend.seq = owner.seq
    plan = await w.begin(friend, owner=owner)
    await owner.revoke(friend)
    return await w.post("storage/complete_upload", {
        "command_id": cid(), "upload_id": plan.upload_id, "owner_id": owner.member_id,
        "drive_token": friend.drive}, by=friend)


async def complete_unsent(w: World) -> httpx.Response:
    plan = await w.begin(w.owner, year=2020)
    return await w.post("storage/complete_upload", {
        "command_id": cid(), "upload_id": plan.upload_id}, by=w.owner)


async def complete_other_bytes(w: World) -> httpx.Response:
    """A multipart upload (parts are 5 MB here) whose bytes are not the declared ones:
    part URLs sign no checksum, so storage finds out when it completes."""
    path = w.file(b"\x01" * (11 * MB // 2))
    begun = await w.post("storage/begin_upload",
                         upload_body(path, set_id="multi", sha256="0" * 64), by=w.owner)
    plan = msgspec.json.decode(begun.content, type=UploadPlan)
    assert len(plan.parts) == 2, begun.text
    await upload(plan, path)
    return await w.post("storage/complete_upload", {
        "command_id": cid(), "upload_id": plan.upload_id}, by=w.owner)


async def download_the_bytes(w: World) -> httpx.Response:
    answer = await w.post("storage/download", {
        "command_id": cid(), "set_id": SET, "year": 2018}, by=w.owner)
    ticket = msgspec.json.decode(answer.content, type=DownloadTicket)
    into = w.files / f"{cid()}.bak"
    await download(ticket.url, into)
    assert into.read_bytes() == w.original
    return answer


async def delete_a_version(w: World) -> httpx.Response:
    member = await w.join(drive=True)
    version = await member.upload(w.file())
    return await w.post("storage/delete_version", {"command_id": cid(), "version_id": version},
                        by=member)


STORAGE = [
    Case("storage/begin_upload", 200, OK, lambda w: w.post(
        "storage/begin_upload", upload_body(w.file(), set_id="another"), by=w.owner)),
    Case("storage/begin_upload", 409, "quota_exceeded", lambda w: w.post(
        "storage/begin_upload", {**upload_body(w.file()), "size": 401 * MB}, by=w.owner)),
    Case("storage/begin_upload", 404, "no_such_upload", begin_again_after_completion,
         "the same command again after its upload completed"),
    Case("storage/complete_upload", 200, OK, lambda w: w.upload_over_http(
        w.owner, w.file(), set_id="over-http")),
    Case("storage/complete_upload", 403, "no_access", complete_after_revoke,
         "the share was revoked since the upload began"),
    Case("storage/complete_upload", 404, "no_such_upload", lambda w: w.post(
        "storage/complete_upload", {"command_id": cid(), "upload_id": "no-such-upload"},
        by=w.owner)),
    Case("storage/complete_upload", 400, "upload_incomplete", complete_unsent,
         "nothing was PUT"),
    Case("storage/complete_upload", 400, "checksum_mismatch", complete_other_bytes),
    Case("storage/drive", 200, OK, lambda w: listed(
        w.post("storage/drive", by=w.owner),
        lambda body: SET in {s["set_id"] for s in body["set_years"]})),
    Case("storage/versions", 200, OK, lambda w: listed(
        w.post("storage/versions", {"set_id": SET, "year": 2018}, by=w.owner),
        lambda body: w.version_id in {v["version_id"] for v in body["versions"]})),
    Case("storage/download", 200, OK, download_the_bytes),
    Case("storage/download", 404, "no_such_version", lambda w: w.post(
        "storage/download", {"command_id": cid(), "set_id": SET, "year": 1999}, by=w.owner)),
    Case("storage/delete_version", 200, OK, delete_a_version),
    Case("storage/delete_version", 404, "no_such_version", lambda w: w.post(
        "storage/delete_version", {"command_id": cid(), "version_id": "no-such-version"},
        by=w.owner)),
]


async def shared_pair(w: World) -> tuple[Person, Person]:
    """A new owner with SET uploaded and a new friend of theirs."""
    owner, friend = await w.join(drive=True), await w.join("F")
    await owner.upload(w.file())
    await owner.befriend(friend)
    return owner, friend


async def grant_a_friend(w: World) -> httpx.Response:
    owner, friend = await shared_pair(w)
    return await w.post("sharing/grant", {"command_id": cid(), "set_id": SET,
                                          "friends": [friend.account],
                                          "permission": "read-only"}, by=owner)


async def revoke_a_friend(w: World) -> httpx.Response:
    owner, friend = await shared_pair(w)
    await owner.grant(friend)
    return await w.post("sharing/revoke", {"command_id": cid(), "set_id": SET,
                                           "friend": friend.account}, by=owner)


def sharers(body: Any) -> dict[str, str]:
    """Who shares SET with the caller, and with which permission (a cloud_shares body)."""
    shares = msgspec.convert(body, CloudShares)
    return {s.account: t.permission for s in shares.sharers for t in s.sets
            if t.set_id == SET}


SHARING = [
    Case("sharing/grant", 200, OK, grant_a_friend),
    Case("sharing/grant", 400, "no_backup", lambda w: w.post("sharing/grant", {
        "command_id": cid(), "set_id": "never-uploaded", "friends": [w.friend.account]},
        by=w.owner)),
    Case("sharing/grant", 400, "not_a_friend", lambda w: w.post("sharing/grant", {
        "command_id": cid(), "set_id": SET, "friends": [w.stranger.account]}, by=w.owner)),
    Case("sharing/revoke", 200, OK, revoke_a_friend),
    Case("sharing/revoke", 404, "not_shared", lambda w: w.post("sharing/revoke", {
        "command_id": cid(), "set_id": "never-uploaded", "friend": w.friend.account},
        by=w.owner)),
    Case("sharing/shares", 200, OK, lambda w: listed(
        w.post("sharing/shares", by=w.owner), lambda body: {
            f["account"] for s in body["sets"] for f in s["friends"]} == {
            w.friend.account, w.reader.account})),
    Case("sharing/cloud_shares", 200, OK, lambda w: listed(w.post(
        "sharing/cloud_shares", {"drive_token": w.friend.drive}, by=w.friend),
        lambda body: sharers(body) == {w.owner.account: "read-write"})),
    Case("sharing/history", 200, OK, lambda w: listed(w.post(
        "sharing/history", {"set_id": SET, "at": now_iso()}, by=w.owner),
        lambda body: {w.friend.account, w.reader.account} <= set(body["accounts"]))),
]


# ---- the authorization matrix ---------------------------------------------------------

# What a member asks of the owner's SET 2018 (owner_id and drive_token are added).
ON_OWNERS_SET: dict[str, Callable[[World], dict[str, Any]]] = {
    "storage/versions": lambda w: {"set_id": SET, "year": 2018},
    "storage/download": lambda w: {"command_id": cid(), "set_id": SET, "year": 2018},
    "storage/begin_upload": lambda w: upload_body(w.file(), period=3),
    "storage/complete_upload": lambda w: {"command_id": cid(), "upload_id": w.friend_upload},
}
FRIEND_DV = 1  # the friend changed their cloud-drive password once
# A drive token of each wrong kind, for the friend; and one made as those are, but sound.
WRONG_DRIVE: dict[str, Callable[[World], str]] = {
    "none": lambda w: "",
    "another member's": lambda w: w.reader.drive,
    "a session": lambda w: w.friend.session,
    "expired": lambda w: w.token("drive", w.friend, expired=True, dv=FRIEND_DV),
    "superseded by a drive-password change": lambda w: w.stale_drive,
    "signed by another key": lambda w: w.token("drive", w.friend, forged=True, dv=FRIEND_DV),
}


def sound_drive(w: World) -> str:
    return w.token("drive", w.friend, dv=FRIEND_DV)


def drive_token(token: Callable[[World], str]) -> Callable[[World], dict[str, Any]]:
    return lambda w: {"drive_token": token(w)}


def on_owners_set(op: str, who: str, status: int, code: str, *, drive: str = "") -> Case:
    """Member ``who`` calls ``op`` on the owner's SET with their own drive token, or with
    the wrong one named ``drive``."""
    async def act(w: World) -> httpx.Response:
        person: Person = getattr(w, who)
        token = WRONG_DRIVE[drive](w) if drive else person.drive
        return await w.post(op, {**ON_OWNERS_SET[op](w), "owner_id": w.owner.member_id,
                                 "drive_token": token}, by=person)
    return Case(op, status, code, act, f"{who}" + (f" with drive token: {drive}" if drive
                                                   else ""))


def cloud_shares_of(who: str, expected: dict[str, str]) -> Case:
    """What member ``who`` sees of the owner's SET in Cloud Share."""
    async def act(w: World) -> httpx.Response:
        person: Person = getattr(w, who)
        answer = await w.post("sharing/cloud_shares", {"drive_token": person.drive},
                              by=person)
        seen = sharers(answer.json()).get(w.owner.account)
        assert seen == expected.get("owner"), (who, seen)
        return answer
    return Case("sharing/cloud_shares", 200, OK, act, f"{who} sees {expected or 'nothing'}")


async def revoked_just_now(w: World) -> httpx.Response:
    """The friend downloads, the owner revokes, the friend downloads again at once, sending
    no consistency seq: a revoke that has answered holds."""
    owner, friend = await shared_pair(w)
    await friend.unlock_drive()
    await owner.grant(friend)
    asked = {"owner_id": owner.member_id, "set_id": SET, "year": 2018,
             "drive_token": friend.drive}
    first = await w.post("storage/download", {"command_id": cid(), **asked}, by=friend)
    assert first.status_code == 200, first.text
    revoked = await w.post("sharing/revoke", {"command_id": cid(), "set_id": SET,
                                              "friend": friend.account}, by=owner)
    assert revoked.status_code == 200, revoked.text
    return await w.post("storage/download", {"command_id": cid(), "seq": 0, **asked},
                        by=friend)


ACCESS = [
    *(on_owners_set(op, who, 200, OK) for op in ("storage/versions", "storage/download")
      for who in ("friend", "reader")),
    on_owners_set("storage/begin_upload", "friend", 200, OK),
    on_owners_set("storage/begin_upload", "reader", 403, "no_access"),  # read-only
    *(on_owners_set(op, who, 403, "no_access") for who in ("former", "stranger")
      for op in ("storage/versions", "storage/download", "storage/begin_upload")),
    *(on_owners_set(op, "friend", 401, "invalid_token", drive=drive)
      for op in ON_OWNERS_SET for drive in WRONG_DRIVE),
    asked_by("friend", "sharing/cloud_shares", 200, OK, drive_token(sound_drive),
             "drive token: made as the refused ones are, but sound"),
    *(asked_by("owner", op, 200, OK, ON_OWNERS_SET[op], "the owner needs no drive token")
      for op in ("storage/versions", "storage/download", "storage/begin_upload")),
    Case("storage/download", 403, "no_access", revoked_just_now, "revoked just now"),
    Case("storage/complete_upload", 404, "no_such_upload", lambda w: w.post(
        "storage/complete_upload", {"command_id": cid(), "upload_id": w.owner_upload,
                                    "owner_id": w.owner.member_id,
                                    "drive_token": w.friend.drive}, by=w.friend),
         "the owner's own upload, by a friend"),
    Case("storage/delete_version", 404, "no_such_version", lambda w: w.post(
        "storage/delete_version", {"command_id": cid(), "version_id": w.version_id},
        by=w.friend), "the owner's version, by a friend"),
    Case("storage/drive", 200, OK, lambda w: listed(w.post("storage/drive", by=w.friend),
                                                    lambda body: body["set_years"] == []),
         "a friend's drive holds none of the owner's sets"),
    cloud_shares_of("friend", {"owner": "read-write"}),
    cloud_shares_of("reader", {"owner": "read-only"}),
    cloud_shares_of("former", {}),
    cloud_shares_of("stranger", {}),
    *(asked_by("friend", "sharing/cloud_shares", 401, "invalid_token", drive_token(wrong),
               f"drive token: {name}") for name, wrong in WRONG_DRIVE.items()),
    Case("sharing/shares", 200, OK, lambda w: listed(w.post("sharing/shares", by=w.friend),
                                                     lambda body: body["sets"] == []),
         "a friend lists none of the owner's shares"),
    Case("sharing/grant", 400, "no_backup", lambda w: w.post("sharing/grant", {
        "command_id": cid(), "set_id": SET, "friends": [w.reader.account]}, by=w.friend),
        "a friend cannot share the owner's set on"),
    Case("sharing/revoke", 404, "not_shared", lambda w: w.post("sharing/revoke", {
        "command_id": cid(), "set_id": SET, "friend": w.reader.account}, by=w.friend),
        "a friend cannot revoke the owner's share"),
    Case("sharing/history", 200, OK, lambda w: listed(w.post(
        "sharing/history", {"set_id": SET, "at": now_iso()}, by=w.friend),
        lambda body: body["accounts"] == []), "a friend sees no history of the owner's set"),
]

# A well-formed request of every operation that takes a session, about the owner's own
# things: only the session may be wrong.
AS_OWNER: dict[str, Callable[[World], dict[str, Any]]] = {
    "identity/unbind": lambda w: {"command_id": cid()},
    "identity/logout": lambda w: {"command_id": cid()},
    "identity/delete_member": lambda w: command(password=PASSWORD),
    "identity/me": lambda w: {},
    "identity/change_password": lambda w: command(old_password=PASSWORD,
                                                  new_password="secret-2"),
    "identity/change_nickname": lambda w: command(nickname="Renamed"),
    "identity/drive_password_set": lambda w: command(password="drive-pw", question="pet?",
                                                     answer="Rex"),
    **DRIVE_PASSWORD,
    "social/add_friend": lambda w: {"command_id": cid(), "account": w.stranger.account,
                                    "nickname": w.stranger.nickname},
    "social/remove_friend": lambda w: {"command_id": cid(), "account": w.friend.account},
    "social/list_friends": lambda w: {},
    "storage/begin_upload": lambda w: upload_body(w.file()),
    "storage/complete_upload": lambda w: {"command_id": cid(), "upload_id": w.owner_upload},
    "storage/drive": lambda w: {},
    "storage/versions": lambda w: {"set_id": SET, "year": 2018},
    "storage/download": lambda w: {"command_id": cid(), "set_id": SET, "year": 2018},
    "storage/delete_version": lambda w: {"command_id": cid(), "version_id": w.version_id},
    "sharing/grant": lambda w: {"command_id": cid(), "set_id": SET,
                                "friends": [w.friend.account]},
    "sharing/revoke": lambda w: {"command_id": cid(), "set_id": SET,
                                 "friend": w.friend.account},
    "sharing/shares": lambda w: {},
    "sharing/cloud_shares": lambda w: {"drive_token": w.owner.drive},
    "sharing/history": lambda w: {"set_id": SET, "at": now_iso()},
    **gateway_sync.AS_OWNER,
    **gateway_agency.AS_OWNER,
}
# Every session but a valid one (each naming the owner, but the ones that ended).
BAD_SESSIONS: dict[str, Callable[[World], str]] = {
    "empty": lambda w: "",
    "malformed": lambda w: "x.y",
    "signed by another key": lambda w: w.token("session", w.owner, forged=True),
    "expired": lambda w: w.token("session", w.owner, expired=True),
    "superseded by a password change": lambda w: w.superseded,
    "logged out": lambda w: w.logged_out,
    "through WeChat, since unbound": lambda w: w.unbound,
    "of a member deleted since": lambda w: w.erased,
    "a drive token": lambda w: w.owner.drive,
}
# A session that has ended may still be logged out (nothing more to end: done).
ENDED = ("superseded by a password change", "logged out", "through WeChat, since unbound")


def with_session(op: str, why: str) -> Case:
    """The owner's request of ``op`` with the session named ``why`` as its bearer token (or
    none at all: then it is no valid request), which must change nothing."""
    ends = op == "identity/logout" and why in ENDED

    async def act(w: World) -> httpx.Response:
        body = AS_OWNER[op](w)
        session = "" if why == "missing" else BAD_SESSIONS[why](w)
        if why == "empty":
            body["session"] = ""  # an empty bearer token is no token at all
        before = await w.events.last_sequence()
        answer = await w.post(op, body, session=session)
        assert ends or await w.events.last_sequence() == before, "a refusal appended"
        return answer
    if why == "missing":
        return Case(op, 400, "bad_request", act, "no session")
    if ends:
        return Case(op, 200, OK, act, f"session: {why}")
    return Case(op, 401, "invalid_token", act, f"session: {why}")


SESSIONS = [
    *(with_session(op, why) for op in AS_OWNER for why in ("missing", *BAD_SESSIONS)),
    Case("identity/me", 200, OK, lambda w: w.post(
        "identity/me", session=w.token("session", w.owner)),
        "session: made as the refused ones are, but sound"),
    Case("identity/me", 200, OK, lambda w: w.post(
        "identity/me", session=w.token("session", w.bound, via="wechat")),
        "session: through WeChat, still bound")]


# ---- worlds of their own: S3 down, links and reservations expired -------------------

async def begin_anything(w: World) -> httpx.Response:
    return await w.post("storage/begin_upload", upload_body(w.file(), year=2021), by=w.owner)


S3_DOWN = [
    Case("storage/begin_upload", 503, "storage_unavailable", begin_anything),
    Case("storage/complete_upload", 503, "storage_unavailable", lambda w: w.post(
        "storage/complete_upload", {"command_id": cid(), "upload_id": w.owner_upload},
        by=w.owner)),
]
EXPIRED = [
    Case("storage/download", 409, "download_expired", lambda w: w.post(
        "storage/download", w.repeated["download"], by=w.owner),
         "the same download command after its link expired"),
    Case("storage/begin_upload", 409, "upload_expired", lambda w: w.post(
        "storage/begin_upload", w.repeated["begin"], by=w.owner),
         "the same command again after its reservation expired"),
    Case("storage/complete_upload", 409, "upload_expired", lambda w: w.post(
        "storage/complete_upload", {"command_id": cid(), "upload_id": w.owner_upload},
        by=w.owner)),
]


# ---- what cannot be reached -------------------------------------------------------------

async def complete_past_a_lowered_quota(w: World) -> httpx.Response:
    member = await w.join(drive=True)
    path = w.file()
    begun = await w.post("storage/begin_upload", upload_body(path), by=member)
    await upload(msgspec.json.decode(begun.content, type=UploadPlan), path)
    await member.storage.set_quota(SetQuota(command_id=cid(), owner_id=member.member_id,
                                            quota=0))
    return await w.post("storage/complete_upload", {
        "command_id": cid(), "upload_id": begun.json()["upload_id"]}, by=member)


@dataclass(frozen=True)
class Unreachable:
    """An (operation, code) no request can provoke, so the contracts no longer declare it:
    why, and what such a request is answered instead (a case, so a service that starts
    answering the code fails it)."""

    why: str
    instead: Case
    world: str = "main"


UNREACHABLE: dict[tuple[str, str], Unreachable] = {
    ("identity/login", "invalid_account"): Unreachable(
        "login never checks an account's shape: a malformed account is answered like an "
        "unknown one, so an answer tells nothing about which accounts exist",
        Case("identity/login", 401, "invalid_credentials", lambda w: w.post(
            "identity/login", {"account": "has space", "password": PASSWORD}))),
    ("identity/bind", "invalid_account"): Unreachable(
        "bind authenticates an existing account like login (no shape check)",
        Case("identity/bind", 401, "invalid_credentials",
             lambda w: bind(w, account="has space"))),
    ("identity/bind", "weak_password"): Unreachable(
        "bind checks the account's existing password; it never sets one",
        Case("identity/bind", 401, "invalid_credentials", lambda w: bind(w, password="123"))),
    ("identity/bind", "account_taken"): Unreachable(
        "bind claims no account name: it binds an account that exists",
        Case("identity/bind", 401, "invalid_credentials",
             lambda w: bind(w, account=w.owner.account))),
    ("storage/begin_upload", "no_such_version"): Unreachable(
        "begin_upload does not look up base_version: an unknown or stale base is kept and "
        "shows as conflict_with once the upload completes",
        Case("storage/begin_upload", 200, OK, lambda w: w.post(
            "storage/begin_upload", upload_body(w.file(), base_version="no-such-version"),
            by=w.owner))),
    ("storage/complete_upload", "quota_exceeded"): Unreachable(
        "the room is reserved and charged when the upload begins; completing never "
        "checks the quota again, even one an operator lowered meanwhile",
        Case("storage/complete_upload", 200, OK, complete_past_a_lowered_quota)),
    ("storage/download", "storage_unavailable"): Unreachable(
        "a download link is presigned locally: download never calls S3, so S3 being down "
        "shows only when the link is used",
        Case("storage/download", 200, OK, lambda w: w.post("storage/download", {
            "command_id": cid(), "set_id": SET, "year": 2018}, by=w.owner)),
        world="S3 down"),
    ("sharing/revoke", "not_a_friend"): Unreachable(
        "revoke answers not_shared for anyone the set is not shared with, friend or not",
        Case("sharing/revoke", 404, "not_shared", lambda w: w.post("sharing/revoke", {
            "command_id": cid(), "set_id": SET, "friend": w.stranger.account},
            by=w.owner))),
}
INSTEAD = [u.instead for u in UNREACHABLE.values() if u.world == "main"]
MAIN = [*IDENTITY, *SOCIAL, *STORAGE, *SHARING, *ACCESS, *SESSIONS, *INSTEAD,
        *gateway_sync.SYNC, *gateway_agency.AGENCY]
EVERY = [*MAIN, *S3_DOWN, *EXPIRED, *(u.instead for u in UNREACHABLE.values()),
         *gateway_sync.S3_DOWN, *gateway_sync.EXPIRED]


# ---- the meta tests: the tables against what the gateway serves -------------------------

def test_every_operation_the_gateway_serves_is_answered_by_a_case() -> None:
    assert {c.op for c in EVERY if c.code == OK} == set(EXPOSED)


def test_every_declared_error_is_provoked_and_no_unreachable_one_is_declared() -> None:
    declared = {(op, e.code) for op, operation in EXPOSED.items() for e in operation.errors}
    provoked = {(c.op, c.code) for c in EVERY if c.code != OK}
    missing = declared - provoked
    assert not missing, f"declared errors with no case: {sorted(missing)}"
    assert not set(UNREACHABLE) & provoked, "an error listed as unreachable was provoked"
    assert not set(UNREACHABLE) & declared, "an unreachable error is declared: drop it"
    generic = {"bad_request"}  # a request without its session is no valid request
    assert provoked <= declared | {(op, code) for op in EXPOSED for code in generic}


def test_every_operation_with_a_session_is_in_the_session_matrix() -> None:
    with_session = {op for op, o in EXPOSED.items() if "session" in o.request.__struct_fields__}
    assert set(AS_OWNER) == with_session


# ---- the cases, on one stack for the module ---------------------------------------------

@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A NATS server for the module's stack."""
    home = tmp_path_factory.mktemp("matrix-nats")
    nats_stack = Stack.local(Settings(home=str(home)), free_stack_ports(), only=("nats",))
    nats_stack.up(detach=False, progress=lambda _msg: None)
    yield nats_stack
    nats_stack.down(progress=lambda _msg: None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(stack: Stack, bus: Stack,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    home = tmp_path_factory.mktemp("matrix")
    async with own_database(stack.settings.pg_dsn) as dsn:
        settings = stack.settings.with_overrides(home=str(home), pg_dsn=dsn, log_json=False,
                                                 nats_url=bus.settings.nats_url)
        # A lockout that outlasts the module; S3's smallest parts (5 MB) make a multipart
        # upload cheap.
        configured = service_settings(settings).with_overrides(drive_lock_base_s=3600,
                                                               upload_part_bytes=5 * MB)
        async with serving(settings, configured, home) as w:
            yield await populate(w)


@pytest.mark.asyncio(loop_scope="module")  # the loop of the module's world
@pytest.mark.parametrize("case", MAIN, ids=[c.name for c in MAIN])
async def test_the_api_answers(world: World, case: Case) -> None:
    await check(case, world)


# ---- the cases that need storage started otherwise ----------------------------------------

STORAGE_SERVICE = named("storage").build


@asynccontextmanager
async def identity_and_api(settings: Settings, nc: NATS, pool: asyncpg.Pool,
                           events: EventStore, files: Path) -> AsyncIterator[World]:
    """identity and the API; each test starts storage as it needs it, over and again."""
    configured = service_settings(settings)
    async with running(named("identity").build, configured, nc, pool, events), \
            desktop_api(nc, configured) as api:
        yield World(api, nc, configured, files)


async def with_a_version(w: World) -> None:
    w.owner = await w.join("Owner", drive=True)
    w.version_id = await w.owner.upload(w.file())


async def checked(cases: list[Case], w: World) -> None:
    """Every case checked; every failure reported."""
    failed = []
    for case in cases:
        try:
            await check(case, w)
        except AssertionError as err:
            failed.append(f"{case.name}: {err}")
    assert not failed, "\n".join(failed)


def s3_gone(w: World) -> Settings:
    """The world's settings with S3 nowhere to be reached."""
    return w.settings.with_overrides(s3_endpoint=f"http://127.0.0.1:{free_port()}")


async def test_with_s3_down_storage_is_unavailable_and_says_so(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    async with identity_and_api(settings, nc, pool, events, tmp_path) as w:
        async with running(STORAGE_SERVICE, w.settings, nc, pool, events):
            await with_a_version(w)
            w.owner_upload = (await w.begin(w.owner)).upload_id
        async with running(STORAGE_SERVICE, s3_gone(w), nc, pool, events):
            await checked([*(u.instead for u in UNREACHABLE.values() if u.world == "S3 down"),
                           *S3_DOWN], w)


async def test_a_link_or_a_reservation_past_its_time_is_expired(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    async with identity_and_api(settings, nc, pool, events, tmp_path) as w:
        w.repeated = {"download": {"command_id": cid(), "set_id": SET, "year": 2018},
                      "begin": upload_body(w.file(), year=2022)}
        async with running(STORAGE_SERVICE, w.settings, nc, pool, events):
            await with_a_version(w)
            issued = await w.post("storage/download", w.repeated["download"], by=w.owner)
            assert issued.status_code == 200, issued.text
        short = w.settings.with_overrides(presign_ttl_s=1, upload_reservation_s=1.0)
        async with running(STORAGE_SERVICE, short, nc, pool, events):
            begun = await w.post("storage/begin_upload", w.repeated["begin"], by=w.owner)
            assert begun.status_code == 200, begun.text
            w.owner_upload = begun.json()["upload_id"]
            await asyncio.sleep(1.2)
            await checked(EXPIRED, w)


async def keys(settings: Settings, prefix: str) -> list[str]:
    """The bucket's keys under a prefix, read straight from S3."""
    async with s3_client(settings) as s3:
        return await ObjectStore(s3, settings.s3_bucket, url_ttl_s=60).keys_under(prefix)


async def test_a_delete_while_s3_is_down_deletes_the_version_and_its_retry_frees_the_bytes(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    """The log decides a deletion; the object goes after it. With S3 unreachable the
    version is deleted all the same (200), its bytes stay, and the same command again
    removes them."""
    async with identity_and_api(settings, nc, pool, events, tmp_path) as w:
        async with running(STORAGE_SERVICE, w.settings, nc, pool, events):
            await with_a_version(w)
        deleting = {"command_id": cid(), "version_id": w.version_id}
        async with running(STORAGE_SERVICE, s3_gone(w), nc, pool, events):
            first = await w.post("storage/delete_version", deleting, by=w.owner)
            assert first.status_code == 200, first.text
            listed = await w.post("storage/versions", {"set_id": SET, "year": 2018},
                                  by=w.owner)
        assert [v["version_id"] for v in listed.json()["versions"]] == []
        assert await keys(w.settings, f"uploads/{w.owner.member_id}/") != []
        async with running(STORAGE_SERVICE, w.settings, nc, pool, events):
            retried = await w.post("storage/delete_version", deleting, by=w.owner)
            assert retried.status_code == 200 and retried.json() == first.json()
        assert await keys(w.settings, f"uploads/{w.owner.member_id}/") == []


# ---- cloud sync with storage started otherwise ---------------------------------------------

SYNC_SERVICE = named("sync").build


async def test_with_s3_down_a_sync_upload_is_unavailable_and_says_so(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    async with identity_and_api(settings, nc, pool, events, tmp_path) as w, \
            running(SYNC_SERVICE, w.settings, nc, pool, events):
        async with running(STORAGE_SERVICE, w.settings, nc, pool, events):
            await gateway_sync.prepared(w)
            w.repeated = {"sync": {"upload_id": await gateway_sync.begin_open(w)}}
        async with running(STORAGE_SERVICE, s3_gone(w), nc, pool, events):
            await checked(gateway_sync.S3_DOWN, w)


async def test_a_sync_reservation_or_pull_past_its_time_is_expired(
        settings: Settings, nc: NATS, pool: asyncpg.Pool, events: EventStore,
        tmp_path: Path) -> None:
    async with identity_and_api(settings, nc, pool, events, tmp_path) as w, \
            running(SYNC_SERVICE, w.settings, nc, pool, events):
        async with running(STORAGE_SERVICE, w.settings, nc, pool, events):
            await gateway_sync.prepared(w)
            pull = {**gateway_sync.body("sync/pull", w.sync, w.sync.home)}
            issued = await w.post("sync/pull", pull, by=w.sync.member)
            assert issued.status_code == 200, issued.text
        short = w.settings.with_overrides(presign_ttl_s=1, upload_reservation_s=1.0)
        async with running(STORAGE_SERVICE, short, nc, pool, events):
            begin, path = {"command_id": cid()}, w.file()
            begun = await gateway_sync.begin(w, path, **begin)
            assert begun.status_code == 200, begun.text
            w.repeated = {"sync": {**begin, "upload_id": begun.json()["upload_id"],
                                   "path": str(path)}, "pull": pull}
            await asyncio.sleep(1.2)
            await checked(gateway_sync.EXPIRED, w)
