"""identity's domain: member state, `evolve`, and one `decide` function per command.

Pure: no I/O, no clock, no hashing. Password checks arrive as booleans computed by the
handler (Argon2 is slow and belongs outside), time arrives on the command. A member's
secrets are *references* to credentials in identity's store (`tables.py`); an event from
before that store carried the hash itself, which folds to the reference ``log:<hash>``
(the upcaster of those events: `credential_ref`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta

import msgspec

from contracts.errors import LedgerError
from contracts.identity import (
    ACCOUNT_RE,
    AccountClaimed,
    AccountReleased,
    AccountTaken,
    AlreadyBound,
    DriveLocked,
    DrivePasswordAlreadySet,
    DrivePasswordChanged,
    DrivePasswordNotSet,
    DrivePasswordSet,
    DriveUnlocked,
    DriveUnlockFailed,
    IdentityEvent,
    InvalidAccount,
    InvalidCredentials,
    InvalidNickname,
    MemberBound,
    MemberErased,
    MemberRegistered,
    MemberUnbound,
    NicknameChanged,
    NotBound,
    OpenidClaimed,
    OpenidReleased,
    OpenidTaken,
    PasswordChanged,
    SessionEnded,
    WeakPassword,
    WrongAnswer,
    WrongDrivePassword,
)

NICKNAME_MAX = 20
PASSWORD_MIN = 6
LEGACY = "log:"  # the reference of a hash an older event carried itself


class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One member as folded from their events."""

    member_id: str = ""
    account: str = ""
    nickname: str = ""
    password: str = ""  # the login password's credential
    pv: int = 0
    wv: int = 0  # WeChat version: each unbind ends the sessions WeChat gave
    dv: int = 0  # drive-password version: each change ends the drive tokens
    openid: str | None = None
    drive: str | None = None  # the cloud-drive password's credential, once set
    recovery: str = ""  # the security question and answer's credential
    question: str = ""  # only from an event before the credential store
    failures: int = 0
    locked_until: datetime | None = None
    # Deleted by the member: no session, login or command is theirs any more. The names
    # are kept (while the key lasts) for the erasure to release their claims.
    erased: bool = False

    @property
    def exists(self) -> bool:
        return bool(self.member_id) and not self.erased


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """Who holds a uniqueness claim (an account name or an openid), if anyone."""

    member_id: str | None = None


class LockPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Free attempts, then a lockout doubling with each further failure."""

    free_attempts: int = 3
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(days=1)

    def lock_for(self, failures: int) -> timedelta | None:
        if failures < self.free_attempts:
            return None
        return min(self.base * (1 << (failures - self.free_attempts)), self.cap)


# ---- evolve ---------------------------------------------------------------------------

def evolve(state: Member, event: IdentityEvent) -> Member:
    """The member after one more event."""
    r = msgspec.structs.replace
    match event:
        case MemberRegistered(member_id=mid, account=acc, nickname=nick):
            return Member(member_id=mid, account=acc, nickname=nick,
                          password=credential_ref(event.credential, event.password_hash))
        case NicknameChanged(nickname=nick):
            return r(state, nickname=nick)
        case MemberErased():
            return r(state, erased=True)
        case PasswordChanged(version=v):
            return r(state, password=credential_ref(event.credential, event.password_hash),
                     pv=v or state.pv + 1)
        case MemberBound(openid=oid):
            return r(state, openid=oid)
        case MemberUnbound(version=v):
            return r(state, openid=None, wv=v or state.wv + 1)
        case DrivePasswordSet():
            return r(state, drive=credential_ref(event.credential, event.password_hash),
                     recovery=credential_ref(event.recovery, event.answer_hash),
                     question=event.question)
        case DrivePasswordChanged(version=v):
            return r(state, drive=credential_ref(event.credential, event.password_hash),
                     failures=0, locked_until=None, dv=v or state.dv + 1)
        case DriveUnlockFailed(failures=n, locked_until=until):
            return r(state, failures=n, locked_until=until)
        case DriveUnlocked():
            return r(state, failures=0, locked_until=None)
    return state


def credential_ref(credential: str, legacy_hash: str) -> str:
    """The credential an event names, or for an older event the hash it carried."""
    return credential or (f"{LEGACY}{legacy_hash}" if legacy_hash else "")


def fold(events: Iterable[IdentityEvent], state: Member | None = None) -> Member:
    """Fold a member's history."""
    current = state or Member()
    for event in events:
        current = evolve(current, event)
    return current


def holder(events: Iterable[IdentityEvent]) -> Holder:
    """Fold a claim's history (account or openid)."""
    current = Holder()
    for event in events:
        current = evolve_holder(current, event)
    return current


def evolve_holder(current: Holder, event: IdentityEvent) -> Holder:
    """A claim (account or openid) after one more event."""
    match event:
        case AccountClaimed(member_id=mid) | OpenidClaimed(member_id=mid):
            return Holder(member_id=mid)
        case OpenidReleased() | AccountReleased():
            return Holder()
    return current


# ---- validation -----------------------------------------------------------------------

def clean_account(account: str) -> str:
    """The account as typed, if it is 3-32 letters, digits, ``_ . @ -``."""
    account = account.strip()
    if not ACCOUNT_RE.match(account):
        raise InvalidAccount("an account is 3-32 characters: letters, digits, _ . @ -")
    return account


def clean_nickname(nickname: str) -> str:
    """The nickname, NFC-normalised and trimmed, if it is 1-20 printable characters."""
    nick = unicodedata.normalize("NFC", nickname).strip()
    if not 1 <= len(nick) <= NICKNAME_MAX:
        raise InvalidNickname(f"a nickname is 1-{NICKNAME_MAX} characters")
    if any(unicodedata.category(ch)[0] == "C" for ch in nick):
        raise InvalidNickname("a nickname cannot contain control or invisible characters")
    return nick


def check_password(password: str) -> str:
    """A password long enough to be worth hashing."""
    if len(password) < PASSWORD_MIN:
        raise WeakPassword(f"a password has at least {PASSWORD_MIN} characters")
    return password


def normalise_answer(answer: str) -> str:
    """Security answers compare trimmed and case-folded."""
    return unicodedata.normalize("NFKC", answer).strip().casefold()


# ---- decide ---------------------------------------------------------------------------

def decide_claim_account(claim: Holder, *, member_id: str, account: str
                         ) -> list[AccountClaimed]:
    """Claim the account name for a new member (nothing to do if it already holds it)."""
    if claim.member_id == member_id:
        return []
    if claim.member_id is not None:
        raise AccountTaken(f"the account {account!r} is taken")
    return [AccountClaimed(account=account, member_id=member_id)]


def decide_register(member: Member, *, member_id: str, account: str, nickname: str,
                    credential: str, at: datetime) -> list[MemberRegistered]:
    """Register the member whose account name is claimed (once)."""
    if member.exists:
        return []
    return [MemberRegistered(member_id=member_id, account=account, nickname=nickname,
                             credential=credential, at=at)]


def authenticate(member: Member, *, password_ok: bool) -> Member:
    """The member if the password matched; the same error whether unknown or wrong."""
    if not member.exists or not password_ok:
        raise InvalidCredentials("account or password is wrong")
    return member


def decide_bind(member: Member, claim: Holder, claim_holder: Member, *, openid: str,
                nickname: str, password_ok: bool, at: datetime
                ) -> tuple[OpenidClaimed | None, MemberBound | None]:
    """Bind a WeChat openid; (None, None) when it is already bound to this member."""
    authenticate(member, password_ok=password_ok)
    if clean_nickname(nickname) != member.nickname:
        raise InvalidCredentials("account or password is wrong")
    if member.openid == openid:
        return None, None
    if member.openid is not None:
        raise AlreadyBound("this member is bound to another WeChat user; unbind first")
    if _held_elsewhere(claim, claim_holder, member.member_id, openid):
        raise OpenidTaken("this WeChat user is bound to another member")
    claimed = None if claim.member_id == member.member_id else OpenidClaimed(
        openid=openid, member_id=member.member_id)
    return claimed, MemberBound(member_id=member.member_id, openid=openid, at=at)


def _held_elsewhere(claim: Holder, claim_holder: Member, member_id: str, openid: str) -> bool:
    # A claim whose holder is no longer bound to the openid is stale (an unbind that
    # stopped before releasing it) and may be taken over.
    return (claim.member_id is not None and claim.member_id != member_id
            and claim_holder.openid == openid)


def decide_erase(member: Member, *, password_ok: bool, at: datetime) -> list[MemberErased]:
    """Delete the member for good (the password once more, as proof)."""
    authenticate(member, password_ok=password_ok)
    return [MemberErased(member_id=member.member_id, at=at)]


def decide_release_account(claim: Holder, member: Member) -> list[AccountReleased]:
    """Free an erased member's account name (nothing to do if they no longer hold it)."""
    if not member.erased or claim.member_id != member.member_id or not member.account:
        return []
    return [AccountReleased(account=member.account, member_id=member.member_id)]


def decide_release_openid(claim: Holder, member: Member) -> list[OpenidReleased]:
    """Free an erased member's WeChat openid (nothing to do if they no longer hold it)."""
    if not member.erased or claim.member_id != member.member_id or not member.openid:
        return []
    return [OpenidReleased(openid=member.openid, member_id=member.member_id)]


def either(claim: Holder, legacy: Holder) -> Holder:
    """Who holds a name: its keyed claim, else a claim an older log made under the name."""
    return claim if claim.member_id is not None else legacy


def decide_unbind(member: Member, *, at: datetime) -> tuple[MemberUnbound, OpenidReleased]:
    """Unbind the member's WeChat openid."""
    if member.openid is None:
        raise NotBound("this member is not bound to WeChat")
    return (MemberUnbound(member_id=member.member_id, openid=member.openid, at=at,
                          version=member.wv + 1),
            OpenidReleased(openid=member.openid, member_id=member.member_id))


def decide_change_password(member: Member, *, password_ok: bool, credential: str,
                           at: datetime) -> PasswordChanged:
    authenticate(member, password_ok=password_ok)
    return PasswordChanged(member_id=member.member_id, credential=credential, at=at,
                           version=member.pv + 1)


def decide_change_nickname(member: Member, *, nickname: str, at: datetime
                           ) -> NicknameChanged | None:
    nick = clean_nickname(nickname)
    if nick == member.nickname:
        return None
    return NicknameChanged(member_id=member.member_id, nickname=nick, at=at)


def ensure_drive_password_unset(member: Member) -> Member:
    if member.drive is not None:
        raise DrivePasswordAlreadySet("the cloud-drive password is already set")
    return member


def decide_set_drive_password(member: Member, *, credential: str, recovery: str,
                              at: datetime) -> DrivePasswordSet:
    ensure_drive_password_unset(member)
    return DrivePasswordSet(member_id=member.member_id, credential=credential,
                            recovery=recovery, at=at)


def ensure_unlockable(member: Member, *, now: datetime) -> Member:
    """Refuse before any hashing if no drive password is set or the drive is locked."""
    if member.drive is None:
        raise DrivePasswordNotSet("set the cloud-drive password first")
    if member.locked_until is not None and now < member.locked_until:
        until = member.locked_until.isoformat(timespec="seconds")
        raise DriveLocked(f"too many wrong attempts; locked until {until}",
                          details={"locked_until": member.locked_until.isoformat()})
    return member


def decide_attempt(member: Member, *, ok: bool, now: datetime, policy: LockPolicy
                   ) -> DriveUnlocked | DriveUnlockFailed:
    """Record one drive-password (or answer) attempt: success resets, failure counts."""
    ensure_unlockable(member, now=now)
    if ok:
        return DriveUnlocked(member_id=member.member_id, at=now)
    failures = member.failures + 1
    lock = policy.lock_for(failures)
    return DriveUnlockFailed(member_id=member.member_id, failures=failures,
                             locked_until=None if lock is None else now + lock, at=now)


def decide_change_drive_password(member: Member, *, credential: str, at: datetime,
                                 by_answer: bool) -> DrivePasswordChanged:
    """Replace the drive password (after a checked old password or answer)."""
    return DrivePasswordChanged(member_id=member.member_id, credential=credential, at=at,
                                by_answer=by_answer, version=member.dv + 1)


def decide_end_session(ended: bool, *, member_id: str, session_id: str, at: datetime
                       ) -> list[SessionEnded]:
    """End a session (once: ending an ended session changes nothing)."""
    if ended:
        return []
    return [SessionEnded(member_id=member_id, session_id=session_id, at=at)]


def evolve_session(ended: bool, event: IdentityEvent) -> bool:
    """Whether a session has ended, after one more event of it."""
    return ended or isinstance(event, SessionEnded)


def failure_error(event: DriveUnlockFailed, *, by_answer: bool) -> LedgerError:
    """What a failed attempt answers: wrong, and until when it is locked if it is."""
    what = "security answer" if by_answer else "cloud-drive password"
    if event.locked_until is None:
        message = f"wrong {what}"
        details = {"failures": str(event.failures)}
    else:
        until = event.locked_until.isoformat(timespec="seconds")
        message = f"wrong {what}; locked until {until}"
        details = {"failures": str(event.failures),
                   "locked_until": event.locked_until.isoformat()}
    cls: type[LedgerError] = WrongAnswer if by_answer else WrongDrivePassword
    return cls(message, details=details)
