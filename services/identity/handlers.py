"""identity's handlers: decode → load → decide → append → reply."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import msgspec

from contracts.base import Reply
from contracts.identity import (
    ACCOUNT_RE,
    AnyIdentityEvent,
    AskQuestion,
    Bind,
    ChangeDrivePassword,
    ChangeNickname,
    ChangePassword,
    Done,
    DrivePasswordNotSet,
    DriveToken,
    DriveUnlockFailed,
    IdentityEvent,
    InvalidToken,
    Login,
    LoginOpenid,
    Me,
    MemberInfo,
    NotBound,
    OpenidReleased,
    PublicKey,
    PublicKeyRequest,
    Register,
    Registered,
    ResetDrivePassword,
    SecurityQuestion,
    Session,
    SetDrivePassword,
    Unbind,
    VerifyDrivePassword,
    account_scope,
    account_subject,
    member_scope,
    member_subject,
    openid_scope,
    openid_subject,
)
from runtime.eventstore import EventStore, Outgoing, with_retry
from runtime.passwords import Hasher
from runtime.service import Call, Endpoint
from runtime.tokens import Claims, Signer, Verifier
from services.identity import domain
from services.identity.domain import Holder, LockPolicy, Member

NAMESPACE = uuid.UUID("5b0f3f9e-8a53-4f7e-9a43-6c2d8d1f0a11")
_decoder = msgspec.json.Decoder(AnyIdentityEvent)


class Identity:
    """The identity service's operations over the event store."""

    def __init__(self, store: EventStore, hasher: Hasher, signer: Signer, verifier: Verifier,
                 public_key: str, *, policy: LockPolicy, session_ttl: timedelta,
                 drive_ttl: timedelta) -> None:
        self.store = store
        self.hasher = hasher
        self.signer = signer
        self.verifier = verifier
        self.public_key_text = public_key
        self.policy = policy
        self.session_ttl = session_ttl
        self.drive_ttl = drive_ttl

    def endpoints(self) -> list[Endpoint]:
        """Every operation of the service."""
        ops: list[tuple[str, type, Callable[..., Awaitable[Reply]]]] = [
            ("register", Register, self.register), ("bind", Bind, self.bind),
            ("unbind", Unbind, self.unbind), ("login", Login, self.login),
            ("login_openid", LoginOpenid, self.login_openid), ("me", Me, self.me),
            ("change_password", ChangePassword, self.change_password),
            ("change_nickname", ChangeNickname, self.change_nickname),
            ("drive_password_set", SetDrivePassword, self.drive_password_set),
            ("drive_password_verify", VerifyDrivePassword, self.drive_password_verify),
            ("drive_password_reset", ResetDrivePassword, self.drive_password_reset),
            ("drive_password_change", ChangeDrivePassword, self.drive_password_change),
            ("drive_question", AskQuestion, self.drive_question),
            ("public_key", PublicKeyRequest, self.public_key),
        ]
        return [Endpoint(name, kind, handler) for name, kind, handler in ops]

    # ---- loading ----------------------------------------------------------------------

    async def _member(self, member_id: str | None) -> tuple[Member, int]:
        if not member_id:
            return Member(), 0
        return await self.store.state(member_scope(member_id), _decoder, domain.evolve,
                                      domain.Member())

    async def _claim(self, scope: str) -> tuple[Holder, int]:
        events, seq = await self.store.history(scope, _decoder)
        return domain.holder(events), seq

    async def _member_by_account(self, account: str) -> Member:
        if not ACCOUNT_RE.match(account.strip()):
            return Member()
        claim, _ = await self._claim(account_scope(account.strip()))
        member, _ = await self._member(claim.member_id)
        return member

    async def _session(self, token: str, now: datetime) -> tuple[Member, int, Claims]:
        claims = self.verifier.verify(token, kind="session", now=now)
        member, seq = await self._member(claims.sub)
        if not member.exists or member.pv != claims.pv:
            raise InvalidToken("the password has changed since this token; log in again")
        return member, seq, claims

    async def _append(self, scope: str, subject: str, event: IdentityEvent, *,
                      expected: int | None, msg_id: str, call: Call, actor: str = "") -> int:
        return await self.store.append(scope, [Outgoing(subject=subject, event=event)],
                                       expected=expected, msg_id=msg_id,
                                       meta=call.meta(msg_id, actor))

    async def _to_member(self, member: Member, seq: int, event: IdentityEvent, msg_id: str,
                         call: Call) -> int:
        return await self._append(member_scope(member.member_id),
                                  member_subject(member.member_id, event), event,
                                  expected=seq, msg_id=msg_id, call=call,
                                  actor=member.member_id)

    # ---- registration and login ---------------------------------------------------------

    async def register(self, req: Register, call: Call) -> Registered:
        account = domain.clean_account(req.account)
        nickname = domain.clean_nickname(req.nickname)
        password_hash = await self.hasher.hash(domain.check_password(req.password))
        member_id = str(uuid.uuid5(NAMESPACE, f"register:{req.command_id}"))

        async def attempt() -> Registered:
            claim, claim_seq = await self._claim(account_scope(account))
            claimed, registered = domain.decide_register(
                claim, member_id=member_id, account=account, nickname=nickname,
                password_hash=password_hash, at=call.received_at)
            if claim.member_id is None:
                await self._append(account_scope(account), account_subject(account), claimed,
                                   expected=claim_seq, msg_id=f"{req.command_id}-claim",
                                   call=call)
            token = await self._append(member_scope(member_id),
                                       member_subject(member_id, registered), registered,
                                       expected=0, msg_id=f"{req.command_id}-member", call=call)
            return Registered(member_id=member_id, token=token)

        return await with_retry(attempt)

    async def login(self, req: Login, call: Call) -> Session:
        member = await self._member_by_account(req.account)
        ok = await self.hasher.verify(member.password_hash or None, req.password)
        domain.authenticate(member, password_ok=ok)
        return self._session_reply(member, call.received_at)

    async def login_openid(self, req: LoginOpenid, call: Call) -> Session:
        claim, _ = await self._claim(openid_scope(req.openid))
        member, _ = await self._member(claim.member_id)
        if member.openid != req.openid:
            raise NotBound("this WeChat user is not bound to a member")
        return self._session_reply(member, call.received_at)

    def _session_reply(self, member: Member, now: datetime) -> Session:
        token, expires = self.signer.issue(member_id=member.member_id, kind="session",
                                           now=now, ttl=self.session_ttl, pv=member.pv)
        return Session(token=token, member_id=member.member_id, expires_at=expires)

    async def me(self, req: Me, call: Call) -> MemberInfo:
        member, _, _ = await self._session(req.session, call.received_at)
        return MemberInfo(member_id=member.member_id, account=member.account,
                          nickname=member.nickname, bound=member.openid is not None,
                          drive_password_set=member.drive_hash is not None)

    async def public_key(self, req: PublicKeyRequest, call: Call) -> PublicKey:
        return PublicKey(algorithm="Ed25519", key=self.public_key_text)

    # ---- WeChat binding -------------------------------------------------------------------

    async def bind(self, req: Bind, call: Call) -> Done:
        known = await self._member_by_account(req.account)
        ok = await self.hasher.verify(known.password_hash or None, req.password)
        domain.authenticate(known, password_ok=ok)

        async def attempt() -> Done:
            member, seq = await self._member(known.member_id)
            claim, claim_seq = await self._claim(openid_scope(req.openid))
            holder, _ = await self._member(claim.member_id)
            claimed, bound = domain.decide_bind(
                member, claim, holder, openid=req.openid, nickname=req.nickname,
                password_ok=ok, at=call.received_at)
            if claimed is not None:
                await self._append(openid_scope(req.openid), openid_subject(req.openid, claimed),
                                   claimed, expected=claim_seq,
                                   msg_id=f"{req.command_id}-claim", call=call)
            if bound is None:
                return Done(token=seq)
            return Done(token=await self._to_member(member, seq, bound,
                                                    f"{req.command_id}-bind", call))

        return await with_retry(attempt)

    async def unbind(self, req: Unbind, call: Call) -> Done:
        async def attempt() -> Done:
            member, seq, _ = await self._session(req.session, call.received_at)
            unbound, released = domain.decide_unbind(member, at=call.received_at)
            token = await self._to_member(member, seq, unbound, f"{req.command_id}-unbind", call)
            await self._release(released, req.command_id, call)
            return Done(token=token)

        return await with_retry(attempt)

    async def _release(self, released: OpenidReleased, command_id: str, call: Call) -> None:
        claim, claim_seq = await self._claim(openid_scope(released.openid))
        if claim.member_id == released.member_id:
            await self._append(openid_scope(released.openid),
                               openid_subject(released.openid, released), released,
                               expected=claim_seq, msg_id=f"{command_id}-release", call=call)

    # ---- member password and nickname ---------------------------------------------------

    async def change_password(self, req: ChangePassword, call: Call) -> Done:
        member, _, _ = await self._session(req.session, call.received_at)
        ok = await self.hasher.verify(member.password_hash, req.old_password)
        new_hash = await self.hasher.hash(domain.check_password(req.new_password))

        async def attempt() -> Done:
            current, seq, _ = await self._session(req.session, call.received_at)
            event = domain.decide_change_password(current, password_ok=ok, new_hash=new_hash,
                                                  at=call.received_at)
            return Done(token=await self._to_member(current, seq, event, req.command_id, call))

        return await with_retry(attempt)

    async def change_nickname(self, req: ChangeNickname, call: Call) -> Done:
        async def attempt() -> Done:
            member, seq, _ = await self._session(req.session, call.received_at)
            event = domain.decide_change_nickname(member, nickname=req.nickname,
                                                  at=call.received_at)
            if event is None:
                return Done(token=seq)
            return Done(token=await self._to_member(member, seq, event, req.command_id, call))

        return await with_retry(attempt)

    # ---- cloud-drive password -------------------------------------------------------------

    async def drive_password_set(self, req: SetDrivePassword, call: Call) -> Done:
        member, _, _ = await self._session(req.session, call.received_at)
        domain.decide_set_drive_password(member, password_hash="", question=req.question,
                                         answer_hash="", at=call.received_at)
        password_hash = await self.hasher.hash(domain.check_password(req.password))
        answer_hash = await self.hasher.hash(domain.normalise_answer(req.answer))

        async def attempt() -> Done:
            current, seq, _ = await self._session(req.session, call.received_at)
            event = domain.decide_set_drive_password(
                current, password_hash=password_hash, question=req.question,
                answer_hash=answer_hash, at=call.received_at)
            return Done(token=await self._to_member(current, seq, event, req.command_id, call))

        return await with_retry(attempt)

    async def drive_question(self, req: AskQuestion, call: Call) -> SecurityQuestion:
        member, _, _ = await self._session(req.session, call.received_at)
        if member.drive_hash is None:
            raise DrivePasswordNotSet("set the cloud-drive password first")
        return SecurityQuestion(question=member.question)

    async def drive_password_verify(self, req: VerifyDrivePassword, call: Call) -> DriveToken:
        member, token = await self._attempt(req.session, req.command_id, call,
                                            lambda m: self.hasher.verify(m.drive_hash,
                                                                         req.password),
                                            by_answer=False)
        drive, expires = self.signer.issue(member_id=member.member_id, kind="drive",
                                           now=call.received_at, ttl=self.drive_ttl,
                                           pv=member.pv)
        return DriveToken(drive_token=drive, expires_at=expires, token=token)

    async def drive_password_reset(self, req: ResetDrivePassword, call: Call) -> Done:
        answer = domain.normalise_answer(req.answer)
        return await self._replace_drive_password(
            req.session, req.command_id, req.new_password, call,
            lambda m: self.hasher.verify(m.answer_hash, answer), by_answer=True)

    async def drive_password_change(self, req: ChangeDrivePassword, call: Call) -> Done:
        return await self._replace_drive_password(
            req.session, req.command_id, req.new_password, call,
            lambda m: self.hasher.verify(m.drive_hash, req.old_password), by_answer=False)

    async def _replace_drive_password(self, session: str, command_id: str, new_password: str,
                                      call: Call, check: Callable[[Member], Awaitable[bool]],
                                      *, by_answer: bool) -> Done:
        new_hash = await self.hasher.hash(domain.check_password(new_password))
        await self._attempt(session, f"{command_id}-check", call, check, by_answer=by_answer)

        async def attempt() -> Done:
            current, seq, _ = await self._session(session, call.received_at)
            event = domain.decide_change_drive_password(current, new_hash=new_hash,
                                                        at=call.received_at, by_answer=by_answer)
            return Done(token=await self._to_member(current, seq, event, command_id, call))

        return await with_retry(attempt)

    async def _attempt(self, session: str, msg_id: str, call: Call,
                       check: Callable[[Member], Awaitable[bool]], *, by_answer: bool
                       ) -> tuple[Member, int]:
        """One counted attempt, serialised through the member's stream: parallel guesses
        conflict and are re-decided against the new failure count, so none slips past
        the lockout."""
        async def attempt() -> tuple[Member, int, IdentityEvent]:
            member, seq, _ = await self._session(session, call.received_at)
            domain.ensure_unlockable(member, now=call.received_at)
            ok = await check(member)
            event = domain.decide_attempt(member, ok=ok, now=call.received_at,
                                          policy=self.policy)
            token = await self._to_member(member, seq, event, msg_id, call)
            return member, token, event

        member, token, event = await with_retry(attempt, attempts=50)
        if isinstance(event, DriveUnlockFailed):
            raise domain.failure_error(event, by_answer=by_answer)
        return member, token

