"""identity's handlers: decode → load → decide → append → reply."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec

from contracts.identity import (
    ACCOUNT_RE,
    AnyIdentityEvent,
    AskQuestion,
    Bind,
    ChangeDrivePassword,
    ChangeNickname,
    ChangePassword,
    ClaimSubjects,
    DeleteMember,
    Done,
    DrivePasswordNotSet,
    DriveToken,
    DriveUnlockFailed,
    IdentityClient,
    IdentityEvent,
    InvalidToken,
    Login,
    LoginWechat,
    Logout,
    Me,
    MemberBound,
    MemberInfo,
    MemberUnbound,
    OpenidClaimed,
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
    WechatLogin,
    legacy_account_subjects,
    legacy_openid_subjects,
    member_subject,
    member_subjects,
    session_end,
    session_subjects,
)
from runtime.commands import Command, Decision, Fold, Pipeline, Step
from runtime.eventstore import EventStore, Outgoing
from runtime.service import Call, Endpoint
from runtime.tokens import VIA_PASSWORD, VIA_WECHAT, Claims, Sessions, Signer, check_session
from runtime.wechat import WeChatOAuth
from services.identity import domain
from services.identity.domain import Holder, LockPolicy, Member
from services.identity.erasure import CLAIM, Eraser
from services.identity.vault import Vault

NAMESPACE = uuid.UUID("5b0f3f9e-8a53-4f7e-9a43-6c2d8d1f0a11")
_decoder = msgspec.json.Decoder(AnyIdentityEvent)
R = TypeVar("R")


MEMBER: Fold[Member, IdentityEvent] = Fold(_decoder, domain.evolve, Member())
SESSION_END: Fold[bool, IdentityEvent] = Fold(_decoder, domain.evolve_session, False)


def _to_member(member_id: str, events: list[IdentityEvent]) -> list[Outgoing]:
    return [Outgoing(subject=member_subject(member_id, e), event=e) for e in events]


class Identity:
    """The identity service's operations over the event store."""

    def __init__(self, events: EventStore, commands: Pipeline, vault: Vault, signer: Signer,
                 sessions: Sessions, public_key: str, wechat: WeChatOAuth,
                 claims: ClaimSubjects, eraser: Eraser, *, policy: LockPolicy,
                 session_ttl: timedelta, drive_ttl: timedelta,
                 proof_ttl: timedelta = timedelta(minutes=10)) -> None:
        self.events = events
        self.commands = commands
        self.vault = vault
        self.signer = signer
        self.sessions = sessions
        self.public_key_text = public_key
        self.policy = policy
        self.session_ttl = session_ttl
        self.drive_ttl = drive_ttl
        self.wechat = wechat
        self.claims = claims
        self.eraser = eraser
        self.proof_ttl = proof_ttl

    def endpoints(self) -> list[Endpoint[Any, Any]]:
        """Every operation of the service, each with its handler."""
        return [
                Endpoint(IdentityClient.register, self.register),
                Endpoint(IdentityClient.bind, self.bind),
                Endpoint(IdentityClient.unbind, self.unbind),
                Endpoint(IdentityClient.login, self.login),
                Endpoint(IdentityClient.login_wechat, self.login_wechat),
                Endpoint(IdentityClient.logout, self.logout),
                Endpoint(IdentityClient.delete_member, self.delete_member),
                Endpoint(IdentityClient.me, self.me),
                Endpoint(IdentityClient.change_password, self.change_password),
                Endpoint(IdentityClient.change_nickname, self.change_nickname),
                Endpoint(IdentityClient.drive_password_set, self.drive_password_set),
                Endpoint(IdentityClient.drive_password_verify, self.drive_password_verify),
                Endpoint(IdentityClient.drive_password_reset, self.drive_password_reset),
                Endpoint(IdentityClient.drive_password_change, self.drive_password_change),
                Endpoint(IdentityClient.drive_question, self.drive_question),
                Endpoint(IdentityClient.public_key, self.public_key),
        ]

    # ---- loading ----------------------------------------------------------------------

    async def _member(self, member_id: str | None) -> tuple[Member, int]:
        if not member_id:
            return Member(), 0
        return await self.events.state(member_subjects(member_id), _decoder, domain.evolve,
                                      domain.Member())

    async def _claim(self, subject_filter: str) -> tuple[Holder, int]:
        return await self.events.state(subject_filter, _decoder, domain.evolve_holder, Holder())

    async def _holder(self, keyed: str, legacy: str) -> Holder:
        """Who holds a name: its keyed claim, else one an older log made (`either`)."""
        claim, _ = await self._claim(keyed)
        if claim.member_id is not None:
            return claim
        return (await self._claim(legacy))[0]

    async def _account_holder(self, account: str) -> Holder:
        return await self._holder(self.claims.account_subjects(account),
                                  legacy_account_subjects(account))

    async def _openid_holder(self, openid: str) -> Holder:
        return await self._holder(self.claims.openid_subjects(openid),
                                  legacy_openid_subjects(openid))

    def _to_openid(self, openid: str, events: list[IdentityEvent]) -> list[Outgoing]:
        return [Outgoing(subject=self.claims.openid_subject(openid, e), event=e)
                for e in events]

    async def _member_by_account(self, account: str) -> Member:
        if not ACCOUNT_RE.match(account.strip()):
            return Member()
        claim = await self._account_holder(account.strip())
        member, _ = await self._member(claim.member_id)
        return member

    async def _session(self, token: str, now: datetime) -> tuple[Member, int, Claims]:
        """The session's member, folded, once the session check every service makes
        (`Sessions`) has passed."""
        claims = await self.sessions.claims(token, now=now)
        member, seq = await self._member(claims.sub)
        return self._current(member, claims), seq, claims

    async def _signed(self, token: str, now: datetime) -> Claims:
        """A genuine, unexpired session token's claims that no logout ended, before a
        command: its password and WeChat versions are checked in the command's step,
        against the member folded for the decision, so a repeat of a password change or
        an unbind (whose own event moved the version) still answers what it answered."""
        claims = self.sessions.verifier.verify(token, kind="session", now=now)
        if await self.sessions.ended(claims):
            raise InvalidToken("this session was logged out; log in again")
        return claims

    @staticmethod
    def _current(member: Member, claims: Claims) -> Member:
        """The session's member, while nothing has ended the session."""
        if not member.exists:
            raise InvalidToken("no such member; log in again")
        check_session(claims, pv=member.pv, wv=member.wv)
        return member

    async def _run(self, operation: str, req: Any, call: Call, caller: str,
                   body: Callable[[Command], Awaitable[R]], also: str = "") -> R:
        return await self.commands.run(operation, req, caller=caller,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body,
                                       also=also)

    async def _on_member(self, cmd: Command, claims: Claims,
                         decide: Callable[[Member], Decision]) -> Step[Member, IdentityEvent]:
        """One step on the session's own member. The session is checked against the member
        folded for each decision; a repeat of a command that already appended answers from
        its events, even when they ended the session (a password change, an unbind)."""
        return await self.commands.step(cmd, member_subjects(claims.sub), MEMBER,
                                        lambda member: decide(self._current(member, claims)))

    # ---- registration and login ---------------------------------------------------------

    async def register(self, req: Register, call: Call) -> Registered:
        account = domain.clean_account(req.account)
        nickname = domain.clean_nickname(req.nickname)
        password = domain.check_password(req.password)

        async def body(cmd: Command) -> Registered:
            member_id = str(uuid.uuid5(NAMESPACE, cmd.key))
            credential = await self.vault.keep(cmd.key, member_id, "password", password)
            legacy, _ = await self._claim(legacy_account_subjects(account))
            await self.commands.step(cmd, self.claims.account_subjects(account), CLAIM,
                                     lambda claim: [
                Outgoing(subject=self.claims.account_subject(account, e), event=e)
                for e in domain.decide_claim_account(domain.either(claim, legacy),
                                                     member_id=member_id, account=account)])
            registered = await self.commands.step(
                cmd, member_subjects(member_id), MEMBER, lambda member: _to_member(
                    member_id, list(domain.decide_register(
                        member, member_id=member_id, account=account, nickname=nickname,
                        credential=credential, at=call.received_at))))
            return Registered(member_id=member_id, seq=registered.seq)

        return await self._run("register", req, call, "", body)

    async def login(self, req: Login, call: Call) -> Session:
        member = await self._member_by_account(req.account)
        ok = await self.vault.check(member.password, req.password)
        domain.authenticate(member, password_ok=ok)
        return self._session_reply(member, call.received_at, via=VIA_PASSWORD)

    async def login_wechat(self, req: LoginWechat, call: Call) -> WechatLogin:
        """WeChat's login code, exchanged here (only identity holds the app secret): the
        bound member's session, or a proof of the openid for `bind`."""
        openid = await self.wechat.openid(req.code)
        claim = await self._openid_holder(openid)
        member, _ = await self._member(claim.member_id)
        if member.openid == openid:
            s = self._session_reply(member, call.received_at, via=VIA_WECHAT)
            return WechatLogin(bound=True, member_id=s.member_id, session=s.session,
                               expires_at=s.expires_at)
        proof, expires = self.signer.issue(member_id=openid, kind="openid",
                                           now=call.received_at, ttl=self.proof_ttl, pv=0)
        return WechatLogin(bound=False, openid_proof=proof, expires_at=expires)

    def _session_reply(self, member: Member, now: datetime, *, via: str) -> Session:
        """A new session: its own id (a logout ends it alone), how it was obtained and
        the versions that can end it."""
        session, expires = self.signer.issue(
            member_id=member.member_id, kind="session", now=now, ttl=self.session_ttl,
            pv=member.pv, sid=uuid.uuid4().hex, via=via, wv=member.wv)
        return Session(session=session, member_id=member.member_id, expires_at=expires)

    async def logout(self, req: Logout, call: Call) -> Done:
        """End the session presented (a repeat, or a logout of an ended session, is done)."""
        claims = self.sessions.verifier.verify(req.session, kind="session",
                                               now=call.received_at)
        if not claims.sid:
            raise InvalidToken("this session is older than logout; it ends when it expires")
        if await self.sessions.erased(claims.sub):
            raise InvalidToken("this member was deleted")

        async def body(cmd: Command) -> Done:
            ended = await self.commands.step(
                cmd, session_subjects(claims.sid), SESSION_END, lambda done: [
                    Outgoing(subject=session_end(claims.sid), event=e)
                    for e in domain.decide_end_session(done, member_id=claims.sub,
                                                       session_id=claims.sid,
                                                       at=call.received_at)])
            return Done(seq=ended.seq)

        return await self._run("logout", req, call, claims.sub, body)

    async def me(self, req: Me, call: Call) -> MemberInfo:
        member, _, _ = await self._session(req.session, call.received_at)
        return MemberInfo(member_id=member.member_id, account=member.account,
                          nickname=member.nickname, bound=member.openid is not None,
                          drive_password_set=member.drive is not None)

    async def public_key(self, req: PublicKeyRequest, call: Call) -> PublicKey:
        return PublicKey(algorithm="Ed25519", key=self.public_key_text)

    # ---- WeChat binding -------------------------------------------------------------------

    async def bind(self, req: Bind, call: Call) -> Done:
        # The openid comes only from a proof identity signed after a WeChat code exchange.
        openid = self.sessions.verifier.verify(req.openid_proof, kind="openid",
                                               now=call.received_at).sub
        known = await self._member_by_account(req.account)
        ok = await self.vault.check(known.password, req.password)
        domain.authenticate(known, password_ok=ok)

        async def decision(member: Member, claim: Holder) -> tuple[
                OpenidClaimed | None, MemberBound | None]:
            holder, _ = await self._member(claim.member_id)
            return domain.decide_bind(member, claim, holder, openid=openid,
                                      nickname=req.nickname, password_ok=ok,
                                      at=call.received_at)

        async def claim_openid(claim: Holder) -> list[Outgoing]:
            legacy, _ = await self._claim(legacy_openid_subjects(openid))
            claimed, _ = await decision((await self._member(known.member_id))[0],
                                        domain.either(claim, legacy))
            return self._to_openid(openid, [claimed] if claimed else [])

        async def bind_member(member: Member) -> list[Outgoing]:
            _, bound = await decision(member, await self._openid_holder(openid))
            return _to_member(member.member_id, [bound] if bound else [])

        async def body(cmd: Command) -> Done:
            await self.commands.step(cmd.part("claim"), self.claims.openid_subjects(openid),
                                     CLAIM, claim_openid)
            bound = await self.commands.step(cmd.part("bind"), member_subjects(known.member_id),
                                             MEMBER, bind_member)
            return Done(seq=bound.seq)

        # The openid is what a bind asks for: a reused command id with another one is
        # another request (command_reused), not a repeat.
        return await self._run("bind", req, call, known.member_id, body, also=openid)

    async def unbind(self, req: Unbind, call: Call) -> Done:
        claims = await self._signed(req.session, call.received_at)

        async def body(cmd: Command) -> Done:
            unbound = await self._on_member(cmd.part("unbind"), claims, lambda member: (
                _to_member(member.member_id, [domain.decide_unbind(member,
                                                                   at=call.received_at)[0]])))
            gone = unbound.events[0]
            assert isinstance(gone, MemberUnbound)
            released = OpenidReleased(openid=gone.openid, member_id=claims.sub)
            await self.eraser.release("openid", gone.openid, cmd, "release", lambda claim: (
                [released] if claim.member_id == claims.sub else []))
            return Done(seq=unbound.seq)

        return await self._run("unbind", req, call, claims.sub, body)

    async def delete_member(self, req: DeleteMember, call: Call) -> Done:
        """Erase the member: the password proves it is them; the erasure's other steps
        follow at once (`Eraser`), and again from the log should this stop half-way."""
        claims = await self._signed(req.session, call.received_at)

        async def body(cmd: Command) -> Done:
            async def decide(member: Member) -> list[Outgoing]:
                ok = await self.vault.check(member.password, req.password)
                return _to_member(member.member_id, list(domain.decide_erase(
                    member, password_ok=ok, at=call.received_at)))

            erased = await self._on_member(cmd.part("erase"), claims, decide)
            await self.eraser.complete(claims.sub, cmd)
            return Done(seq=erased.seq)

        return await self._run("delete_member", req, call, claims.sub, body)

    # ---- member password and nickname ---------------------------------------------------

    async def change_password(self, req: ChangePassword, call: Call) -> Done:
        claims = await self._signed(req.session, call.received_at)
        new_password = domain.check_password(req.new_password)

        async def body(cmd: Command) -> Done:
            async def decide(member: Member) -> list[Outgoing]:
                ok = await self.vault.check(member.password, req.old_password)
                domain.authenticate(member, password_ok=ok)
                credential = await self.vault.keep(cmd.key, member.member_id, "password",
                                                   new_password)
                return _to_member(member.member_id, [domain.decide_change_password(
                    member, password_ok=ok, credential=credential, at=call.received_at)])

            return Done(seq=(await self._on_member(cmd, claims, decide)).seq)

        return await self._run("change_password", req, call, claims.sub, body)

    async def change_nickname(self, req: ChangeNickname, call: Call) -> Done:
        claims = await self._signed(req.session, call.received_at)

        def decide(member: Member) -> list[Outgoing]:
            event = domain.decide_change_nickname(member, nickname=req.nickname,
                                                  at=call.received_at)
            return _to_member(member.member_id, [event] if event else [])

        async def body(cmd: Command) -> Done:
            return Done(seq=(await self._on_member(cmd, claims, decide)).seq)

        return await self._run("change_nickname", req, call, claims.sub, body)

    # ---- cloud-drive password -------------------------------------------------------------

    async def drive_password_set(self, req: SetDrivePassword, call: Call) -> Done:
        member, _, claims = await self._session(req.session, call.received_at)
        domain.ensure_drive_password_unset(member)
        password = domain.check_password(req.password)
        answer = domain.normalise_answer(req.answer)

        async def body(cmd: Command) -> Done:
            async def decide(current: Member) -> list[Outgoing]:
                domain.ensure_drive_password_unset(current)
                drive = await self.vault.keep(cmd.key, claims.sub, "drive", password)
                recovery = await self.vault.keep(cmd.key, claims.sub, "recovery", answer,
                                                 question=req.question.strip())
                return _to_member(current.member_id, [domain.decide_set_drive_password(
                    current, credential=drive, recovery=recovery, at=call.received_at)])

            return Done(seq=(await self._on_member(cmd, claims, decide)).seq)

        return await self._run("drive_password_set", req, call, claims.sub, body)

    async def drive_question(self, req: AskQuestion, call: Call) -> SecurityQuestion:
        member, _, _ = await self._session(req.session, call.received_at)
        if member.drive is None:
            raise DrivePasswordNotSet("set the cloud-drive password first")
        return SecurityQuestion(question=await self.vault.question(member))

    async def drive_password_verify(self, req: VerifyDrivePassword, call: Call) -> DriveToken:
        claims = await self._signed(req.session, call.received_at)

        async def body(cmd: Command) -> DriveToken:
            step = await self._attempt(cmd, claims, call, lambda m: self.vault.check(
                m.drive, req.password), by_answer=False)
            drive, expires = self.signer.issue(member_id=claims.sub, kind="drive",
                                               now=call.received_at, ttl=self.drive_ttl,
                                               pv=step.state.pv, dv=step.state.dv)
            return DriveToken(drive_token=drive, expires_at=expires, seq=step.seq)

        return await self._run("drive_password_verify", req, call, claims.sub, body)

    async def drive_password_reset(self, req: ResetDrivePassword, call: Call) -> Done:
        answer = domain.normalise_answer(req.answer)
        return await self._replace_drive_password(
            "drive_password_reset", req, req.new_password, call,
            lambda m: self.vault.check(m.recovery, answer), by_answer=True)

    async def drive_password_change(self, req: ChangeDrivePassword, call: Call) -> Done:
        return await self._replace_drive_password(
            "drive_password_change", req, req.new_password, call,
            lambda m: self.vault.check(m.drive, req.old_password), by_answer=False)

    async def _replace_drive_password(self, operation: str,
                                      req: ResetDrivePassword | ChangeDrivePassword,
                                      new_password: str, call: Call,
                                      check: Callable[[Member], Awaitable[bool]], *,
                                      by_answer: bool) -> Done:
        claims = await self._signed(req.session, call.received_at)
        new_secret = domain.check_password(new_password)

        async def body(cmd: Command) -> Done:
            await self._attempt(cmd.part("check"), claims, call, check, by_answer=by_answer)

            async def decide(m: Member) -> list[Outgoing]:
                credential = await self.vault.keep(cmd.key, m.member_id, "drive", new_secret)
                return _to_member(m.member_id, [domain.decide_change_drive_password(
                    m, credential=credential, at=call.received_at, by_answer=by_answer)])

            changed = await self._on_member(cmd.part("change"), claims, decide)
            return Done(seq=changed.seq)

        return await self._run(operation, req, call, claims.sub, body)

    async def _attempt(self, cmd: Command, claims: Claims, call: Call,
                       check: Callable[[Member], Awaitable[bool]], *, by_answer: bool
                       ) -> Step[Member, IdentityEvent]:
        """One counted attempt, serialised through the member's stream: parallel guesses
        conflict and are re-decided against the new failure count, so none slips past
        the lockout. A repeat of the command answers what the attempt answered, without
        checking anything again."""
        async def decide(member: Member) -> list[Outgoing]:
            domain.ensure_unlockable(member, now=call.received_at)
            ok = await check(member)
            return _to_member(member.member_id, [domain.decide_attempt(
                member, ok=ok, now=call.received_at, policy=self.policy)])

        step = await self._on_member(cmd, claims, decide)
        if isinstance(step.events[0], DriveUnlockFailed):
            raise domain.failure_error(step.events[0], by_answer=by_answer)
        return step
