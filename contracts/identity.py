"""identity: members, WeChat binding, session and drive tokens, cloud-drive password.

Subjects:
  evt.identity.member.<member_id>.<Event>     one member's history
  evt.identity.account.<claim>.AccountClaimed|AccountReleased   uniqueness claim
  evt.identity.openid.<claim>.OpenidClaimed|OpenidReleased
    <claim> is a keyed hash of the name (`ClaimSubjects`), never the name: subjects are
    not encrypted, and are not erased. Older logs have the name's base64 ("b…") there.
  evt.identity.session.<session id>.SessionEnded   a session logged out
Requests: identity.<operation>.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from datetime import datetime
from typing import Annotated

import msgspec

from contracts.base import CommandReply, Event, Reply, Request
from contracts.client import ServiceClient
from contracts.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from contracts.operations import Operation
from contracts.subjects import aggregate_subjects, encode_id, event_subject, every_instance
from contracts.text import plain_text

CONTEXT = "identity"

ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.@-]{3,32}$")
Account = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
# Friends see a nickname and a member sees their own question: plain text only. A blank
# nickname is left to the domain (trimmed, then invalid_nickname); a blank question is not.
Nickname = Annotated[str, plain_text(min_length=1, max_length=64)]
Question = Annotated[str, plain_text(min_length=1, max_length=200, blank=False)]
Short = Annotated[str, msgspec.Meta(max_length=200)]
OpenId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
CommandId = Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


# ---- events ---------------------------------------------------------------------------

class IdentityEvent(Event, frozen=True, kw_only=True):
    """Base of identity's events."""


class AccountClaimed(IdentityEvent, frozen=True, kw_only=True):
    """An account name (case-insensitive) now belongs to a member (appended at sequence 0)."""

    personal = (("account", "member_id"),)

    account: str
    member_id: str


class MemberRegistered(IdentityEvent, frozen=True, kw_only=True):
    """A member joined: account, nickname, and the id of their login-password credential
    (its hash stays in identity's own store, never in the log)."""

    personal = (("account", "member_id"), ("nickname", "member_id"))

    member_id: str
    account: str
    nickname: str
    at: datetime
    credential: str = ""
    password_hash: str = ""  # only in events from before the credential store


class AccountReleased(IdentityEvent, frozen=True, kw_only=True):
    """An account name is free again (its member was erased)."""

    personal = (("account", "member_id"),)

    account: str
    member_id: str


class MemberErased(IdentityEvent, frozen=True, kw_only=True):
    """A member deleted their account: their personal data in the log is unreadable from
    now on (their key is destroyed), their names are released, their drive emptied and
    their shares ended. Nothing else about them remains."""

    member_id: str
    at: datetime


class NicknameChanged(IdentityEvent, frozen=True, kw_only=True):
    """A member's nickname changed (friend lookups use the new one)."""

    personal = (("nickname", "member_id"),)

    member_id: str
    nickname: str
    at: datetime


class PasswordChanged(IdentityEvent, frozen=True, kw_only=True):
    """A member's password changed (to the credential named); tokens of earlier versions
    stop working."""

    member_id: str
    at: datetime
    version: int = 0  # the member's password version from now on (0: older events)
    credential: str = ""
    password_hash: str = ""  # only in events from before the credential store


class OpenidClaimed(IdentityEvent, frozen=True, kw_only=True):
    """A WeChat openid now belongs to a member."""

    personal = (("openid", "member_id"),)

    openid: str
    member_id: str


class OpenidReleased(IdentityEvent, frozen=True, kw_only=True):
    """A WeChat openid is free again (after an unbind)."""

    personal = (("openid", "member_id"),)

    openid: str
    member_id: str


class MemberBound(IdentityEvent, frozen=True, kw_only=True):
    """A member bound their account to a WeChat user (step 1 of the guide)."""

    personal = (("openid", "member_id"),)

    member_id: str
    openid: str
    at: datetime


class MemberUnbound(IdentityEvent, frozen=True, kw_only=True):
    """A member removed their WeChat binding; the sessions obtained through WeChat end."""

    personal = (("openid", "member_id"),)

    member_id: str
    openid: str
    at: datetime
    version: int = 0  # the member's WeChat version from now on (0: older events)


class DrivePasswordSet(IdentityEvent, frozen=True, kw_only=True):
    """The cloud-drive password and the security question with its answer were set (first
    use): the ids of the two credentials; the question and hashes stay in identity's
    store."""

    personal = (("question", "member_id"),)

    member_id: str
    at: datetime
    credential: str = ""
    recovery: str = ""
    # only in events from before the credential store:
    password_hash: str = ""
    question: str = ""
    answer_hash: str = ""


class DrivePasswordChanged(IdentityEvent, frozen=True, kw_only=True):
    """The cloud-drive password changed (with the old one, or by the answer); drive
    tokens issued before stop working."""

    member_id: str
    at: datetime
    by_answer: bool = False
    version: int = 0  # the member's drive-password version from now on (0: older events)
    credential: str = ""
    password_hash: str = ""  # only in events from before the credential store


class SessionEnded(IdentityEvent, frozen=True, kw_only=True):
    """A member logged out: that session stops working at once, everywhere."""

    member_id: str
    session_id: str
    at: datetime


class DriveUnlockFailed(IdentityEvent, frozen=True, kw_only=True):
    """A wrong cloud-drive password or answer; says until when the drive is locked."""

    member_id: str
    failures: int
    locked_until: datetime | None
    at: datetime


class DriveUnlocked(IdentityEvent, frozen=True, kw_only=True):
    """The right cloud-drive password: a drive token was issued; failures reset."""

    member_id: str
    at: datetime


AnyIdentityEvent = (
    AccountClaimed | AccountReleased | MemberErased | MemberRegistered | NicknameChanged
    | PasswordChanged | OpenidClaimed | OpenidReleased | MemberBound | MemberUnbound
    | DrivePasswordSet | DrivePasswordChanged
    | DriveUnlockFailed | DriveUnlocked | SessionEnded
)


def member_subjects(member_id: str) -> str:
    return aggregate_subjects(CONTEXT, "member", member_id)


def member_subject(member_id: str, event: IdentityEvent) -> str:
    return event_subject(CONTEXT, "member", member_id, type(event).__name__)


def password_changes(member_id: str) -> str:
    """The subject of a member's PasswordChanged events."""
    return event_subject(CONTEXT, "member", member_id, "PasswordChanged")


def unbinds(member_id: str) -> str:
    """The subject of a member's MemberUnbound events."""
    return event_subject(CONTEXT, "member", member_id, "MemberUnbound")


def drive_password_changes(member_id: str) -> str:
    """The subject of a member's DrivePasswordChanged events."""
    return event_subject(CONTEXT, "member", member_id, "DrivePasswordChanged")


def session_end(session_id: str) -> str:
    """The subject where a session's end is recorded (one aggregate per session)."""
    return event_subject(CONTEXT, "session", session_id, "SessionEnded")


def session_subjects(session_id: str) -> str:
    return aggregate_subjects(CONTEXT, "session", session_id)


def account_key(account: str) -> str:
    """Accounts are unique case-insensitively."""
    return unicodedata.normalize("NFKC", account).casefold()


def erasures(member_id: str) -> str:
    """The subject of a member's MemberErased event."""
    return event_subject(CONTEXT, "member", member_id, "MemberErased")


ERASURES = every_instance(CONTEXT, "member", "MemberErased")  # every member's


class ClaimSubjects:
    """Where account and openid claims live: a keyed hash (HMAC-SHA256 with identity's
    ``subject_key``) of the name, so the log's subjects name nobody and a guessed account
    cannot be confirmed from them without the key. Claims an older log made under the
    name's base64 are read there too (`legacy_*`), until an operator rewrites the log."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the claim subject key must have at least 16 bytes")
        self._key = key

    def _token(self, kind: str, name: str) -> str:
        mac = hmac.new(self._key, f"{kind}\x1f{name}".encode(), hashlib.sha256)
        return "k" + mac.hexdigest()[:40]

    def account_subjects(self, account: str) -> str:
        return aggregate_subjects(CONTEXT, "account", self._token("account", account_key(account)))

    def account_subject(self, account: str, event: IdentityEvent) -> str:
        return event_subject(CONTEXT, "account", self._token("account", account_key(account)),
                             type(event).__name__)

    def openid_subjects(self, openid: str) -> str:
        return aggregate_subjects(CONTEXT, "openid", self._token("openid", openid))

    def openid_subject(self, openid: str, event: IdentityEvent) -> str:
        return event_subject(CONTEXT, "openid", self._token("openid", openid),
                             type(event).__name__)


def legacy_account_subjects(account: str) -> str:
    """Where a log from before keyed claims has an account's claim."""
    return aggregate_subjects(CONTEXT, "account", encode_id(account_key(account)))


def legacy_account_subject(account: str, event: IdentityEvent) -> str:
    return event_subject(CONTEXT, "account", encode_id(account_key(account)),
                         type(event).__name__)


def legacy_openid_subjects(openid: str) -> str:
    """Where a log from before keyed claims has an openid's claim."""
    return aggregate_subjects(CONTEXT, "openid", encode_id(openid))


def legacy_openid_subject(openid: str, event: IdentityEvent) -> str:
    return event_subject(CONTEXT, "openid", encode_id(openid), type(event).__name__)


# ---- errors ---------------------------------------------------------------------------

class InvalidAccount(BadRequest):
    """The account name is not 3-32 characters of letters, digits, ``_ . @ -``."""

    code = "invalid_account"


class InvalidNickname(BadRequest):
    """The nickname is empty, longer than 20 characters, or holds invisible characters."""

    code = "invalid_nickname"


class WeakPassword(BadRequest):
    """The password is shorter than the minimum length."""

    code = "weak_password"


class AccountTaken(Conflict):
    """Another member already has that account name (names are case-insensitive)."""

    code = "account_taken"


class InvalidCredentials(Unauthenticated):
    """The account and password do not match (an unknown account answers the same)."""

    code = "invalid_credentials"


class InvalidToken(Unauthenticated):
    """The session or drive token is missing, altered, expired or superseded; log in again."""

    code = "invalid_token"


class OpenidTaken(Conflict):
    """That WeChat openid is already bound to another member."""

    code = "openid_taken"


class AlreadyBound(Conflict):
    """The member is already bound to a WeChat openid."""

    code = "already_bound"


class WechatCodeRefused(Unauthenticated):
    """WeChat refused the login code (unknown, expired or used already); log in again."""

    code = "wechat_code_refused"


class SnapshotUser(Forbidden):
    """WeChat's snapshot page (is_snapshotuser): the member has not really authorized."""

    code = "wechat_snapshot_user"


class WechatUnavailable(Unavailable):
    """WeChat's login service did not answer, or is not configured; try again later."""

    code = "wechat_unavailable"


class NotBound(NotFound):
    """No member is bound to that openid (or the member has no openid bound)."""

    code = "not_bound"


class DrivePasswordAlreadySet(Conflict):
    """The cloud-drive password is set already; change or reset it instead."""

    code = "drive_password_already_set"


class DrivePasswordNotSet(NotFound):
    """No cloud-drive password is set yet."""

    code = "drive_password_not_set"


class DriveLocked(Forbidden):
    """Too many wrong cloud-drive passwords: locked until the time in ``details``."""

    code = "drive_locked"


class WrongDrivePassword(Unauthenticated):
    """The cloud-drive password is wrong (the attempt is counted)."""

    code = "wrong_drive_password"


class WrongAnswer(Unauthenticated):
    """The answer to the security question is wrong."""

    code = "wrong_answer"


# ---- requests and replies ------------------------------------------------------------

class Register(Request, frozen=True, kw_only=True):
    command_id: CommandId
    account: Account
    password: Secret
    nickname: Nickname


class Registered(CommandReply, frozen=True, kw_only=True):
    member_id: str


class Bind(Request, frozen=True, kw_only=True):
    """Bind the WeChat user an ``openid_proof`` (from `login_wechat`) names to an account."""

    command_id: CommandId
    openid_proof: str
    account: Account
    password: Secret
    nickname: Nickname


class Unbind(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str


class Logout(Request, frozen=True, kw_only=True):
    """End this session (the member's other sessions go on)."""

    command_id: CommandId
    session: str


class DeleteMember(Request, frozen=True, kw_only=True):
    """Delete this member for good (the login password again, as proof)."""

    command_id: CommandId
    session: str
    password: Secret


class Done(CommandReply, frozen=True, kw_only=True):
    """A command that has nothing to report but its log position (seq)."""


class Login(Request, frozen=True, kw_only=True):
    account: Account
    password: Secret


class LoginWechat(Request, frozen=True, kw_only=True):
    """Log in with the code WeChat's web OAuth gave the member's browser (snsapi_base)."""

    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128,
                                      pattern=r"^[A-Za-z0-9_-]+$")]


class WechatLogin(Reply, frozen=True, kw_only=True):
    """A bound WeChat user's session; or, for a user bound to no member, a short-lived
    proof of the openid that `bind` takes (an openid alone is never a credential)."""

    bound: bool
    member_id: str = ""
    session: str = ""
    openid_proof: str = ""
    expires_at: datetime


class Session(Reply, frozen=True, kw_only=True):
    session: str
    member_id: str
    expires_at: datetime


class Me(Request, frozen=True, kw_only=True):
    session: str


class MemberInfo(Reply, frozen=True, kw_only=True):
    member_id: str
    account: str
    nickname: str
    bound: bool
    drive_password_set: bool


class ChangePassword(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    old_password: Secret
    new_password: Secret


class ChangeNickname(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    nickname: Nickname


class SetDrivePassword(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    password: Secret
    question: Question
    answer: Secret


class VerifyDrivePassword(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    password: Secret


class DriveToken(CommandReply, frozen=True, kw_only=True):
    drive_token: str
    expires_at: datetime


class ResetDrivePassword(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    answer: Secret
    new_password: Secret


class ChangeDrivePassword(Request, frozen=True, kw_only=True):
    command_id: CommandId
    session: str
    old_password: Secret
    new_password: Secret


class SecurityQuestion(Reply, frozen=True, kw_only=True):
    question: str


class AskQuestion(Request, frozen=True, kw_only=True):
    session: str


class PublicKeyRequest(Request, frozen=True, kw_only=True):
    pass


class PublicKey(Reply, frozen=True, kw_only=True):
    algorithm: str
    key: str


SESSION = (InvalidToken,)
PASSWORD = (InvalidAccount, InvalidNickname, WeakPassword)


class IdentityClient(ServiceClient):
    """The identity service's operations (those that check a secret or claim an account
    name are throttled at the edge)."""

    context = CONTEXT
    register = Operation(Register, Registered, errors=(*PASSWORD, AccountTaken),
                         throttled=True)
    # bind authenticates an existing account (a malformed one, or a short password, is
    # invalid_credentials, as at login); it claims no account name.
    bind = Operation(Bind, Done, errors=(InvalidNickname, InvalidCredentials, OpenidTaken,
                                         AlreadyBound, InvalidToken),
                     throttled=True)
    unbind = Operation(Unbind, Done, errors=(*SESSION, NotBound))
    logout = Operation(Logout, Done, errors=SESSION)
    delete_member = Operation(DeleteMember, Done, errors=(*SESSION, InvalidCredentials),
                              throttled=True)
    # A malformed account answers like an unknown one: no answer tells which exist.
    login = Operation(Login, Session, errors=(InvalidCredentials,),
                      throttled=True)
    login_wechat = Operation(LoginWechat, WechatLogin, errors=(
        WechatCodeRefused, SnapshotUser, WechatUnavailable), audience=frozenset({"wechat"}),
        throttled=True)
    me = Operation(Me, MemberInfo, errors=SESSION)
    change_password = Operation(ChangePassword, Done, errors=(
        *SESSION, InvalidCredentials, WeakPassword), throttled=True)
    change_nickname = Operation(ChangeNickname, Done, errors=(*SESSION, InvalidNickname))
    drive_password_set = Operation(SetDrivePassword, Done, errors=(
        *SESSION, DrivePasswordAlreadySet, WeakPassword), throttled=True)
    drive_password_verify = Operation(VerifyDrivePassword, DriveToken, errors=(
        *SESSION, DrivePasswordNotSet, DriveLocked, WrongDrivePassword), throttled=True)
    drive_password_reset = Operation(ResetDrivePassword, Done, errors=(
        *SESSION, DrivePasswordNotSet, DriveLocked, WrongAnswer, WeakPassword),
        throttled=True)
    drive_password_change = Operation(ChangeDrivePassword, Done, errors=(
        *SESSION, DrivePasswordNotSet, DriveLocked, WrongDrivePassword, WeakPassword),
        throttled=True)
    drive_question = Operation(AskQuestion, SecurityQuestion, errors=(
        *SESSION, DrivePasswordNotSet))
    public_key = Operation(PublicKeyRequest, PublicKey)
