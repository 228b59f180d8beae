"""Command ids as an attacker uses them: replayed, reused with other content, raced.

The pipeline derives each command's key on the server and records what the id did, so a
repeat answers the original outcome without acting again, and other content under a used
id is refused. Each test here broke on main before the pipeline (issue 12).
"""

from __future__ import annotations

import asyncio

import pytest

from contracts.errors import CommandReused, LedgerError
from contracts.identity import (
    DriveLocked,
    DriveUnlocked,
    DriveUnlockFailed,
    IdentityClient,
    Login,
    Register,
    SetDrivePassword,
    VerifyDrivePassword,
    WrongDrivePassword,
    member_subjects,
)
from contracts.subjects import context_subjects
from runtime.eventstore import EventStore
from tests.helpers import cid


async def member_with_drive(identity_client: IdentityClient, account: str) -> tuple[str, str]:
    """A registered member with a cloud-drive password: (member id, session)."""
    member = await identity_client.register(Register(command_id=cid(), account=account,
                                            password="secret-1", nickname="Ann"))
    session = (await identity_client.login(Login(account=account, password="secret-1"))).session
    await identity_client.drive_password_set(SetDrivePassword(
        command_id=cid(), session=session, password="drive-right", question="pet?",
        answer="Rex"))
    return member.member_id, session


async def attempts(events: EventStore, member_id: str) -> list[str]:
    """The types of the member's drive-unlock attempts in the log."""
    return [e.type for e in await events.load(member_subjects(member_id))
            if e.type in (DriveUnlockFailed.__name__, DriveUnlocked.__name__)]


async def outcome(identity_client: IdentityClient, command_id: str, session: str,
                  password: str) -> str:
    try:
        await identity_client.drive_password_verify(VerifyDrivePassword(
            command_id=command_id, session=session, password=password))
    except LedgerError as err:
        return err.code
    return "token"


async def test_twenty_guesses_under_one_command_id_are_one_attempt(
        identity_client: IdentityClient, events: EventStore) -> None:
    member_id, session = await member_with_drive(identity_client, "guesser")
    reused = cid()
    codes = [await outcome(identity_client, reused, session, f"wrong-{n}") for n in range(20)]
    # The right password under the same id is still that command: its outcome stands.
    codes.append(await outcome(identity_client, reused, session, "drive-right"))
    assert codes == [WrongDrivePassword.code] * 21
    assert await attempts(events, member_id) == ["DriveUnlockFailed"]


async def test_fresh_ids_lock_after_the_free_attempts(identity_client: IdentityClient,
                                                      events: EventStore) -> None:
    member_id, session = await member_with_drive(identity_client, "fresh")
    codes = [await outcome(identity_client, cid(), session, "wrong") for _ in range(4)]
    assert codes[:3] == [WrongDrivePassword.code] * 3
    assert codes[3] == DriveLocked.code
    assert len(await attempts(events, member_id)) == 3


async def test_racing_guesses_under_one_id_check_one_guess(identity_client: IdentityClient,
                                                           events: EventStore) -> None:
    member_id, session = await member_with_drive(identity_client, "racer")
    reused = cid()
    guesses = [f"wrong-{n}" for n in range(9)] + ["drive-right"]
    codes = await asyncio.gather(*(outcome(identity_client, reused, session, g) for g in guesses))
    # One run decided; every other request waited for it or was told it runs now.
    assert len(await attempts(events, member_id)) == 1
    decided = {c for c in codes if c != "command_in_progress"}
    assert len(decided) == 1


async def test_a_successful_verify_repeated_gives_a_token_without_a_second_attempt(
        identity_client: IdentityClient, events: EventStore) -> None:
    member_id, session = await member_with_drive(identity_client, "happy")
    reused = cid()
    assert await outcome(identity_client, reused, session, "drive-right") == "token"
    assert await outcome(identity_client, reused, session, "drive-right") == "token"
    assert await attempts(events, member_id) == ["DriveUnlocked"]


async def test_a_registration_id_replayed_with_another_account_is_refused(
        identity_client: IdentityClient, events: EventStore) -> None:
    reused = cid()
    first = await identity_client.register(Register(command_id=reused, account="alice",
                                           password="secret-1", nickname="Alice"))
    with pytest.raises(CommandReused):
        await identity_client.register(Register(command_id=reused, account="mallory",
                                       password="secret-1", nickname="Alice"))
    again = await identity_client.register(Register(command_id=reused, account="alice",
                                           password="secret-1", nickname="Alice"))
    assert again.member_id == first.member_id and again.seq == first.seq
    claims = await events.load(context_subjects("identity", "account"))
    assert [c for c in claims if b"mallory" in c.data] == [] and len(claims) == 1
    assert len(await events.load(member_subjects(first.member_id))) == 1


async def test_one_id_used_by_two_callers_is_two_commands(identity_client: IdentityClient,
                                                          events: EventStore) -> None:
    """The key includes the caller: a victim's id does not block or replay for another."""
    ann, ann_session = await member_with_drive(identity_client, "ann-cid")
    bob, bob_session = await member_with_drive(identity_client, "bob-cid")
    shared = cid()
    assert await outcome(identity_client, shared, ann_session, "wrong") == WrongDrivePassword.code
    assert await outcome(identity_client, shared, bob_session, "drive-right") == "token"
    assert await attempts(events, ann) == ["DriveUnlockFailed"]
    assert await attempts(events, bob) == ["DriveUnlocked"]
