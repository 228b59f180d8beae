"""social's agency handlers: decode → load → decide → append → reply, for one agency's
aggregate (``evt.social.agency.<id>``). Members are named by account, resolved against
social's directory, as friends are; an invitation also needs the nickname."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from contracts.agency import (
    AgencyChanged,
    AgencyCommand,
    AgencyEntry,
    AgencyEvent,
    AgencyList,
    AgencyMember,
    AgencySet,
    AgencyView,
    AnyAgencyEvent,
    ChangeRole,
    ChangeSettings,
    CreateAgency,
    HandOver,
    Invite,
    ListAgencies,
    MarkSet,
    MemberCommand,
    NoSuchAgency,
    Supervision,
    ViewAgency,
    agency_id_for,
    agency_subject,
    agency_subjects,
)
from contracts.agency_state import AgencyState, evolve
from contracts.identity import account_key
from contracts.social import NoSuchMember, SocialClient
from runtime.commands import Command, Fold
from runtime.eventstore import Outgoing
from runtime.service import Call, Endpoint
from services.social import domain, tables
from services.social.handlers import Social

AGENCY: Fold[AgencyState, AgencyEvent] = Fold(msgspec.json.Decoder(AnyAgencyEvent), evolve,
                                              AgencyState())
Decide = Callable[[AgencyState, str, datetime], list[AgencyEvent]]
AgencyRequest = (CreateAgency | Invite | AgencyCommand | MemberCommand | ChangeRole
                 | Supervision | MarkSet | HandOver | ChangeSettings)


class Agencies:
    """The agency operations social serves."""

    def __init__(self, social: Social) -> None:
        self.social = social
        self.commands = social.commands
        self.pool = social.pool
        self.schema = social.schema

    def endpoints(self) -> list[Endpoint[Any, Any]]:
        """Every agency operation, each with its handler."""
        c = SocialClient
        return [
            Endpoint(c.create_agency, self.create), Endpoint(c.invite_to_agency, self.invite),
            Endpoint(c.remove_from_agency, self.remove), Endpoint(c.change_agency_role, self.role),
            Endpoint(c.assign_supervision, self.supervise),
            Endpoint(c.end_supervision, self.unsupervise), Endpoint(c.hand_over, self.hand_over),
            Endpoint(c.agency_settings, self.settings), Endpoint(c.close_agency, self.close),
            Endpoint(c.accept_invitation, self.accept), Endpoint(c.leave_agency, self.leave),
            Endpoint(c.mark_agency_set, self.mark), Endpoint(c.unmark_agency_set, self.unmark),
            Endpoint(c.agencies, self.agencies), Endpoint(c.view_agency, self.view),
        ]

    # ---- the pipeline -------------------------------------------------------------------

    async def _run(self, operation: str, req: AgencyRequest, call: Call, me: str,
                   agency_id: str, decide: Decide) -> AgencyChanged:
        """Run one agency command: load the agency, decide as ``me``, append, reply."""
        def outgoing(state: AgencyState) -> list[Outgoing]:
            return [Outgoing(subject=agency_subject(agency_id, e), event=e)
                    for e in decide(state, me, call.received_at)]

        async def body(cmd: Command) -> AgencyChanged:
            step = await self.commands.step(cmd, agency_subjects(agency_id), AGENCY, outgoing)
            return AgencyChanged(agency_id=agency_id, seq=step.seq)

        return await self.commands.run(operation, req, caller=me,
                                       correlation_id=call.correlation_id,
                                       client_address=call.client_address, body=body)

    async def _me(self, req: Any, call: Call) -> str:
        me: str = await self.social._caller(req.session, call, req.seq)
        return me

    async def _member_id(self, account: str, nickname: str | None = None) -> str:
        """The member with that account (and nickname, when one is given)."""
        row = await tables.member_by_account(self.pool, self.schema, account_key(account))
        if row is None or (nickname is not None and row["nickname"] != _nfc(nickname)):
            raise NoSuchMember("no member with that account and nickname" if nickname
                               else "no member with that account")
        return str(row["member_id"])

    # ---- the administrator's commands ---------------------------------------------------

    async def create(self, req: CreateAgency, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        aid = agency_id_for(me, req.command_id)
        return await self._run("create_agency", req, call, me, aid, lambda _s, c, at: (
            domain.decide_create(agency_id=aid, name=_nfc(req.name), caller=c, at=at)))

    async def invite(self, req: Invite, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        mid = await self._member_id(req.account, req.nickname)
        return await self._run("invite_to_agency", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_invite(
                                   s, agency_id=req.agency_id, caller=c, member_id=mid,
                                   role=req.role, at=at))

    async def remove(self, req: MemberCommand, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        mid = await self._member_id(req.account)
        return await self._run("remove_from_agency", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_remove_member(
                                   s, agency_id=req.agency_id, caller=c, member_id=mid, at=at))

    async def role(self, req: ChangeRole, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        mid = await self._member_id(req.account)
        return await self._run("change_agency_role", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_role(
                                   s, agency_id=req.agency_id, caller=c, member_id=mid,
                                   role=req.role, at=at))

    async def supervise(self, req: Supervision, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        sup, acc = await self._member_id(req.supervisor), await self._member_id(req.accountant)
        return await self._run("assign_supervision", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_supervise(
                                   s, agency_id=req.agency_id, caller=c, supervisor=sup,
                                   accountant=acc, at=at))

    async def unsupervise(self, req: Supervision, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        sup, acc = await self._member_id(req.supervisor), await self._member_id(req.accountant)
        return await self._run("end_supervision", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_unsupervise(
                                   s, agency_id=req.agency_id, caller=c, supervisor=sup,
                                   accountant=acc, at=at))

    async def hand_over(self, req: HandOver, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        owner, to = await self._member_id(req.owner), await self._member_id(req.to)
        return await self._run("hand_over", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_hand_over(
                                   s, agency_id=req.agency_id, caller=c, owner_id=owner,
                                   set_id=req.set_id, to_id=to, at=at))

    async def settings(self, req: ChangeSettings, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        return await self._run("agency_settings", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_settings(
                                   s, agency_id=req.agency_id, caller=c,
                                   supervisors_write=req.supervisors_write, at=at))

    async def close(self, req: AgencyCommand, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        return await self._run("close_agency", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_close(
                                   s, agency_id=req.agency_id, caller=c, at=at))

    # ---- the members' commands ----------------------------------------------------------

    async def accept(self, req: AgencyCommand, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        return await self._run("accept_invitation", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_accept(
                                   s, agency_id=req.agency_id, caller=c, at=at))

    async def leave(self, req: AgencyCommand, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        return await self._run("leave_agency", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_leave(
                                   s, agency_id=req.agency_id, caller=c, at=at))

    async def mark(self, req: MarkSet, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        return await self._run("mark_agency_set", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_mark(
                                   s, agency_id=req.agency_id, caller=c, set_id=req.set_id,
                                   at=at))

    async def unmark(self, req: MarkSet, call: Call) -> AgencyChanged:
        me = await self._me(req, call)
        return await self._run("unmark_agency_set", req, call, me, req.agency_id,
                               lambda s, c, at: domain.decide_unmark(
                                   s, agency_id=req.agency_id, caller=c, set_id=req.set_id,
                                   at=at))

    # ---- queries ------------------------------------------------------------------------

    async def agencies(self, req: ListAgencies, call: Call) -> AgencyList:
        me = await self._me(req, call)
        rows = await tables.places_of(self.pool, self.schema, me)
        return AgencyList(agencies=[
            AgencyEntry(agency_id=r["agency_id"], name=r["name"], role=r["role"],
                        invited=r["invited"], administrator=r["administrator"]) for r in rows])

    async def view(self, req: ViewAgency, call: Call) -> AgencyView:
        """The agency as its log says now (not a read model that may lag): for its
        members only."""
        me = await self._me(req, call)
        state, _ = await self.social.events.state(agency_subjects(req.agency_id),
                                                  AGENCY.decoder, evolve, AgencyState())
        if not state.exists or me not in state.members:
            raise NoSuchAgency("no such agency, or you are not in it")
        named = await tables.members_named(self.pool, self.schema, _everyone(state))
        return _view(req.agency_id, state, named)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _everyone(state: AgencyState) -> list[str]:
    owners = list(state.sets)
    keepers = [k for kept in state.sets.values() for k in kept.values() if k]
    return list({*state.members, *state.invited, *owners, *keepers})


def _view(agency_id: str, state: AgencyState,
          named: dict[str, asyncpg.Record]) -> AgencyView:
    def account(mid: str) -> str:
        return str(named[mid]["account"]) if mid in named else ""

    def member(mid: str, invited: bool) -> AgencyMember:
        place = (state.invited if invited else state.members)[mid]
        oversees = sorted(account(a) for a in state.supervision.get(mid, []))
        return AgencyMember(account=account(mid),
                            nickname=str(named[mid]["nickname"]) if mid in named else "",
                            role=place.role, since=place.since, invited=invited,
                            supervises=oversees)

    members = [member(m, False) for m in state.members] + [member(m, True)
                                                          for m in state.invited]
    sets = [AgencySet(owner=account(o), set_id=sid, keeper=account(k) if k else "")
            for o, kept in state.sets.items() for sid, k in kept.items()]
    return AgencyView(agency_id=agency_id, name=state.name,
                      supervisors_write=state.supervisors_write,
                      members=sorted(members, key=lambda m: (_RANK[m.role], m.account)),
                      sets=sorted(sets, key=lambda s: (s.keeper, s.owner, s.set_id)))


_RANK = {"administrator": 0, "supervisor": 1, "accountant": 2}
