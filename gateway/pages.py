"""The WeChat Member Center (会员中心): server-rendered pages for the guide's steps 1-3,
clients of the services over NATS like the desktop API.

A member arrives from the official account's menu at ``/wx``; without a session the
browser goes through WeChat's web OAuth (snsapi_base) and comes back to ``/wx/callback``,
where identity exchanges the code: a bound WeChat user gets a session cookie, another one
the bind form. Every form carries a CSRF token and a command id made when the page was
rendered, so a form sent twice is one command. Errors are shown in Chinese by code
(`gateway.messages`), with the HTTP status of their class.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from nats.aio.client import Client as NATS
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from contracts import agency as agc
from contracts import identity as idc
from contracts import sharing as shc
from contracts import social as soc
from contracts import storage as stc
from contracts.errors import BadRequest, Internal, LedgerError, Unauthenticated
from contracts.operations import Operation
from gateway import views, web
from gateway.api import public, read_limited, status_of
from gateway.limits import Limiter, client_address
from gateway.messages import message
from runtime.settings import Settings

ROOT = "/wx"
STATIC = f"{ROOT}/static"
MAX_FIELDS = 120
NOTICES = {"bound": "绑定成功，欢迎使用会员中心。", "friend_added": "已添加好友。",
           "friend_removed": "已删除好友，你们之间的共享已全部结束。",
           "shared": "共享成功。", "revoked": "已取消共享。",
           "agency_created": "代账公司已创建，您是它的管理员。",
           "invited": "邀请已发出：对方在自己的会员中心“代账公司”中接受后即加入。",
           "joined": "已加入代账公司。", "role_changed": "角色已修改。",
           "member_removed": "已移除该成员，其通过本公司获得的账套权限已全部结束。",
           "supervision_assigned": "督导关系已安排。", "supervision_ended": "督导关系已结束。",
           "handed_over": "账套已移交。", "settings_saved": "设置已保存。",
           "agency_left": "您已退出该代账公司，通过它获得的账套权限已全部结束。"}
log = logging.getLogger("ledgershare.gateway")


@dataclass(frozen=True)
class Page:
    """A template to render, with what it shows."""

    template: str
    title: str
    context: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass(frozen=True)
class Form:
    """A posted form (URL-encoded), each name with all its values."""

    fields: dict[str, list[str]]

    def one(self, name: str) -> str:
        return self.fields.get(name, [""])[-1].strip()

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def integers(self, name: str) -> list[int]:
        try:
            return [int(v) for v in self.all(name)]
        except ValueError:
            raise BadRequest(f"{name} must be whole numbers") from None


Handler = Callable[[Request, web.Visitor], Awaitable[Response | Page]]


class Pages:
    """The Member Center on a connected NATS client."""

    def __init__(self, nc: NATS, settings: Settings, limiter: Limiter) -> None:
        timeout = settings.request_timeout_s
        self.limiter = limiter
        self.identity = idc.IdentityClient(nc, timeout=timeout)
        self.social = soc.SocialClient(nc, timeout=timeout)
        self.storage = stc.StorageClient(nc, timeout=timeout)
        self.sharing = shc.SharingClient(nc, timeout=timeout)
        self.settings = settings
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway", "templates"), autoescape=True,
            undefined=jinja2.StrictUndefined)
        self.templates.filters.update(cn_date=views.cn_date, cn_time=views.cn_time,
                                      mb=views.megabytes, share_line=views.share_line,
                                      role_name=views.role_name)

    def routes(self) -> list[BaseRoute]:
        get, post = ["GET"], ["POST"]
        return [
            Route(ROOT, self._page(self.home), methods=get),
            Route(f"{ROOT}/login", self._page(self.login), methods=get),
            Route(f"{ROOT}/callback", self._page(self.callback), methods=get),
            Route(f"{ROOT}/bind", self._page(self.bind_form), methods=get),
            Route(f"{ROOT}/bind", self._page(self.bind), methods=post),
            Route(f"{ROOT}/logout", self._page(self.logout), methods=post),
            Route(f"{ROOT}/me", self._page(self.member_info), methods=get),
            Route(f"{ROOT}/friends", self._page(self.friends), methods=get),
            Route(f"{ROOT}/friends/add", self._page(self.add_friend), methods=post),
            Route(f"{ROOT}/friends/remove", self._page(self.confirm_removal), methods=get),
            Route(f"{ROOT}/friends/remove", self._page(self.remove_friend), methods=post),
            Route(f"{ROOT}/drive", self._page(self.drive), methods=get),
            Route(f"{ROOT}/share", self._page(self.share_form), methods=get),
            Route(f"{ROOT}/share", self._page(self.share), methods=post),
            Route(f"{ROOT}/shares", self._page(self.shares), methods=get),
            Route(f"{ROOT}/shares/revoke", self._page(self.revoke), methods=post),
            Route(f"{ROOT}/agencies", self._page(self.agencies), methods=get),
            Route(f"{ROOT}/agencies/create", self._page(self.create_agency), methods=post),
            Route(f"{ROOT}/agencies/accept", self._page(self.accept_invitation),
                  methods=post),
            Route(f"{ROOT}/agency", self._page(self.agency), methods=get),
            Route(f"{ROOT}/agency/settings", self._page(self.agency_settings), methods=post),
            Route(f"{ROOT}/agency/invite", self._page(self.invite), methods=post),
            Route(f"{ROOT}/agency/role", self._page(self.change_role), methods=post),
            Route(f"{ROOT}/agency/remove", self._page(self.confirm_member_removal),
                  methods=get),
            Route(f"{ROOT}/agency/remove", self._page(self.remove_member), methods=post),
            Route(f"{ROOT}/agency/supervise", self._page(self.assign_supervision),
                  methods=post),
            Route(f"{ROOT}/agency/unsupervise", self._page(self.end_supervision),
                  methods=post),
            Route(f"{ROOT}/agency/hand_over", self._page(self.hand_over), methods=post),
            Route(f"{ROOT}/agency/leave", self._page(self.confirm_leaving), methods=get),
            Route(f"{ROOT}/agency/leave", self._page(self.leave_agency), methods=post),
            Mount(STATIC, StaticFiles(packages=[("gateway", "static")]), name="static"),
        ]

    # ---- the frame every page shares ---------------------------------------------------

    def _page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            visitor = web.visitor(request)
            try:
                answer = await handler(request, visitor)
            except Unauthenticated:
                answer = self._to_login(request, visitor)
            except LedgerError as err:
                answer = _error_page(err)
            except Exception:
                log.exception("internal error on %s", request.url.path)
                answer = _error_page(Internal("internal error"))
            response = self._render(answer, request, visitor)
            web.keep_csrf_key(response, visitor)
            return response

        return endpoint

    def _render(self, answer: Response | Page, request: Request,
                visitor: web.Visitor) -> Response:
        if isinstance(answer, Response):
            return answer
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        context = {"title": answer.title, "csrf": visitor.csrf, "notice": notice,
                   "command_id": _command_id, "root": ROOT, "static": STATIC,
                   "error": "", "form_error": "", "values": {}} | answer.context
        html = self.templates.get_template(answer.template).render(context)
        return HTMLResponse(html, status_code=answer.status)

    def _to_login(self, request: Request, visitor: web.Visitor) -> Response:
        """Back to the WeChat login, the session forgotten. An htmx request is told to
        navigate for real: WeChat's pages cannot be fetched by a script."""
        if request.headers.get("hx-request"):
            response: Response = Response(status_code=204, headers={"HX-Redirect": ROOT
                                                                     + "/login"})
        else:
            response = RedirectResponse(f"{ROOT}/login", status_code=303)
        web.forget(response, visitor, web.SESSION_COOKIE)
        return response

    async def _form(self, request: Request, visitor: web.Visitor) -> Form:
        """The posted form, after its CSRF token is checked."""
        body = await read_limited(request, self.settings.gateway_max_body_bytes)
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True,
                              max_num_fields=MAX_FIELDS, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest("the form could not be read") from None
        form: dict[str, list[str]] = {}
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        parsed = Form(form)
        visitor.check_csrf(parsed.one("csrf"))
        return parsed

    async def _admit(self, request: Request, operation: Operation[Any, Any],
                     account: str) -> None:
        """Count a throttled call (the desktop API's limits, shared with it)."""
        await self.limiter.admit(operation, client_address(request, self.limiter.trusted),
                                 account)

    def _session(self, visitor: web.Visitor) -> str:
        if not visitor.session:
            raise Unauthenticated("no session")
        return visitor.session

    # ---- WeChat login and bind ----------------------------------------------------------

    async def login(self, request: Request, visitor: web.Visitor) -> Response:
        """To WeChat's authorize page, with a state this browser must bring back."""
        state = web.new_state()
        target = f"{self.settings.wechat_open_base}/connect/oauth2/authorize?" + urlencode({
            "appid": self.settings.wechat_appid, "redirect_uri": self._callback_url(request),
            "response_type": "code", "scope": "snsapi_base", "state": state,
        }, quote_via=quote) + "#wechat_redirect"
        response = RedirectResponse(target, status_code=303)
        web.keep(response, visitor, web.STATE_COOKIE, state, max_age=web.STATE_TTL_S)
        return response

    def _callback_url(self, request: Request) -> str:
        base = self.settings.gateway_public_url.rstrip("/")
        return f"{base or str(request.base_url).rstrip('/')}{ROOT}/callback"

    async def callback(self, request: Request, visitor: web.Visitor) -> Response | Page:
        """WeChat sent the browser back with a one-time code: log in, or on to bind."""
        web.check_state(request, request.query_params.get("state", ""))
        code = request.query_params.get("code", "")
        if not code:  # the member declined the authorization
            return Page("error.html", "未授权", {"error": message("wechat_code_refused")},
                        status=400)
        await self._admit(request, idc.IdentityClient.login_wechat, "")
        try:
            login = await self.identity.login_wechat(idc.LoginWechat(code=code))
        except LedgerError as err:  # shown, never retried: a refused code would loop
            return _error_page(err)
        response = RedirectResponse(ROOT if login.bound else f"{ROOT}/bind", status_code=303)
        web.forget(response, visitor, web.STATE_COOKIE)
        if login.bound:
            self._start_session(response, visitor, login.session, login.expires_at)
        else:
            web.keep(response, visitor, web.PROOF_COOKIE, login.openid_proof,
                     max_age=_seconds_until(login.expires_at))
        return response

    def _start_session(self, response: Response, visitor: web.Visitor, session: str,
                       expires_at: datetime) -> None:
        web.keep(response, visitor, web.SESSION_COOKIE, session,
                 max_age=_seconds_until(expires_at))

    async def bind_form(self, request: Request, visitor: web.Visitor) -> Response | Page:
        if visitor.session:
            return RedirectResponse(ROOT, status_code=303)
        if not visitor.proof:
            return RedirectResponse(f"{ROOT}/login", status_code=303)
        return Page("bind.html", "绑定会员账号")

    async def bind(self, request: Request, visitor: web.Visitor) -> Response | Page:
        """Bind this WeChat user to an account, then log in with the same password."""
        form = await self._form(request, visitor)
        if not visitor.proof:
            return RedirectResponse(f"{ROOT}/login", status_code=303)
        account, password = form.one("account"), form.all("password")[-1:] or [""]
        try:
            await self._admit(request, idc.IdentityClient.bind,
                              self.limiter.account_of({"account": account}))
            await self.identity.bind(idc.Bind(
                command_id=form.one("command_id"), openid_proof=visitor.proof,
                account=account, password=password[0], nickname=form.one("nickname")))
            session = await self.identity.login(idc.Login(account=account,
                                                          password=password[0]))
        except idc.InvalidCredentials as err:
            return self._form_error("bind.html", "绑定会员账号", err, form, {})
        except Unauthenticated:  # the proof expired: WeChat has to vouch again
            response = RedirectResponse(f"{ROOT}/login", status_code=303)
            web.forget(response, visitor, web.PROOF_COOKIE)
            return response
        except LedgerError as err:
            return self._form_error("bind.html", "绑定会员账号", err, form, {})
        response = RedirectResponse(f"{ROOT}?done=bound", status_code=303)
        web.forget(response, visitor, web.PROOF_COOKIE)
        self._start_session(response, visitor, session.session, session.expires_at)
        return response

    def _form_error(self, template: str, title: str, err: LedgerError, form: Form,
                    context: dict[str, Any]) -> Page:
        """The form again, with what was typed (never a password) and why it was refused."""
        values = {k: v[-1] for k, v in form.fields.items()
                  if "password" not in k and k not in {"csrf", "command_id"}}
        err = public(err, "page")
        return Page(template, title, {**context, "values": values,
                                      "form_error": message(err.code)},
                    status=status_of(type(err)))

    async def _again(self, page: Callable[[], Awaitable[Page]], err: LedgerError,
                     form: Form) -> Page:
        """The form's page again, showing why ``err`` refused it; the error alone when
        the page cannot be shown (a session that ended is a new login)."""
        if isinstance(err, Unauthenticated):
            raise err
        try:
            shown = await page()
        except LedgerError:
            return _error_page(err)
        return self._form_error(shown.template, shown.title, err, form, shown.context)

    async def logout(self, request: Request, visitor: web.Visitor) -> Response:
        """End the session at identity (everywhere at once), then forget the cookie."""
        form = await self._form(request, visitor)
        if visitor.session:
            try:
                await self.identity.logout(idc.Logout(command_id=form.one("command_id"),
                                                      session=visitor.session))
            except Unauthenticated:
                pass  # ended already: forgetting the cookie is all there is left to do
        # Not back to the login: WeChat would let the member straight in again.
        response = self._render(Page("left.html", "已退出会员中心"), request, visitor)
        web.forget(response, visitor, web.SESSION_COOKIE)
        return response

    # ---- member info and friends --------------------------------------------------------

    async def home(self, request: Request, visitor: web.Visitor) -> Page:
        me = await self.identity.me(idc.Me(session=self._session(visitor)))
        return Page("home.html", "会员中心", {"me": me})

    async def member_info(self, request: Request, visitor: web.Visitor) -> Page:
        me = await self.identity.me(idc.Me(session=self._session(visitor)))
        return Page("member_info.html", "会员信息", {"me": me})

    async def friends(self, request: Request, visitor: web.Visitor) -> Page:
        return await self._friends_page(visitor, _seq(request))

    async def _friends_page(self, visitor: web.Visitor, seq: int = 0, **extra: Any) -> Page:
        listed = await self.social.list_friends(soc.ListFriends(
            session=self._session(visitor), seq=seq))
        return Page("friends.html", "我的好友", {"friends": listed.friends, **extra})

    async def add_friend(self, request: Request, visitor: web.Visitor) -> Response | Page:
        form = await self._form(request, visitor)
        try:
            added = await self.social.add_friend(soc.AddFriend(
                command_id=form.one("command_id"), session=self._session(visitor),
                account=form.one("account"), nickname=form.one("nickname")))
        except LedgerError as err:
            return await self._again(lambda: self._friends_page(visitor), err, form)
        return _see(f"{ROOT}/friends", done="friend_added", seq=added.seq)

    async def confirm_removal(self, request: Request, visitor: web.Visitor) -> Page:
        account = request.query_params.get("account", "")
        listed = await self.social.list_friends(soc.ListFriends(
            session=self._session(visitor)))
        friend = next((f for f in listed.friends if f.account == account), None)
        if friend is None:
            raise soc.NotFriends("not a friend")
        return Page("remove_friend.html", "删除好友", {"friend": friend})

    async def remove_friend(self, request: Request, visitor: web.Visitor) -> Response:
        form = await self._form(request, visitor)
        removed = await self.social.remove_friend(soc.RemoveFriend(
            command_id=form.one("command_id"), session=self._session(visitor),
            account=form.one("account")))
        return _see(f"{ROOT}/friends", done="friend_removed", seq=removed.seq)

    # ---- the drive and its shares --------------------------------------------------------

    async def drive(self, request: Request, visitor: web.Visitor) -> Page:
        session = self._session(visitor)
        listing = await self.storage.drive(stc.DriveRequest(session=session,
                                                            seq=_seq(request)))
        me = await self.identity.me(idc.Me(session=session))
        friends = await self.social.list_friends(soc.ListFriends(session=session))
        return Page("drive.html", "网盘列表", {
            "listing": listing, "sets": views.drive_sets(listing, me.member_id,
                                                         friends.friends)})

    async def share_form(self, request: Request, visitor: web.Visitor) -> Page:
        return await self._share_page(visitor, request.query_params.get("set", ""))

    async def _share_page(self, visitor: web.Visitor, set_id: str, **extra: Any) -> Page:
        session = self._session(visitor)
        listing = await self.storage.drive(stc.DriveRequest(session=session))
        name, years = views.set_years(listing, set_id)
        if not years:
            raise shc.NoBackup("no backup of that set")
        friends = await self.social.list_friends(soc.ListFriends(session=session))
        return Page("share.html", "共享给好友", {
            "set_id": set_id, "set_name": name, "years": years,
            "friends": friends.friends, **extra})

    async def share(self, request: Request, visitor: web.Visitor) -> Response | Page:
        form = await self._form(request, visitor)
        set_id = form.one("set_id")
        try:
            granted = await self.sharing.grant(_grant(form, self._session(visitor)))
        except LedgerError as err:
            return await self._again(lambda: self._share_page(visitor, set_id), err, form)
        return _see(f"{ROOT}/shares", done="shared", seq=granted.seq, set=set_id)

    async def shares(self, request: Request, visitor: web.Visitor) -> Page:
        listed = await self.sharing.shares(shc.ShareListRequest(
            session=self._session(visitor), seq=_seq(request)))
        only = request.query_params.get("set", "")
        shown = [s for s in listed.sets if s.friends and (not only or s.set_id == only)]
        return Page("shares.html", "共享列表", {
            "summary": views.share_summary(listed.sets), "sets": shown, "only": only})

    async def revoke(self, request: Request, visitor: web.Visitor) -> Response:
        form = await self._form(request, visitor)
        revoked = await self.sharing.revoke(shc.Revoke(
            command_id=form.one("command_id"), session=self._session(visitor),
            set_id=form.one("set_id"), friend=form.one("friend") or None))
        return _see(f"{ROOT}/shares", done="revoked", seq=revoked.seq)

    # ---- agencies (代账公司): members, roles, supervision, the agency's sets ----------------

    async def agencies(self, request: Request, visitor: web.Visitor) -> Page:
        return await self._agencies_page(visitor, _seq(request))

    async def _agencies_page(self, visitor: web.Visitor, seq: int = 0, **extra: Any) -> Page:
        listed = await self.social.agencies(agc.ListAgencies(
            session=self._session(visitor), seq=seq))
        entries = sorted(listed.agencies, key=lambda a: (a.name, a.agency_id))
        return Page("agencies.html", "代账公司", {
            "joined": [a for a in entries if not a.invited],
            "invitations": [a for a in entries if a.invited], "failed": "", **extra})

    async def create_agency(self, request: Request, visitor: web.Visitor) -> Response | Page:
        form = await self._form(request, visitor)
        try:
            made = await self.social.create_agency(agc.CreateAgency(
                command_id=form.one("command_id"), session=self._session(visitor),
                name=form.one("name")))
        except LedgerError as err:
            return await self._again(lambda: self._agencies_page(visitor, failed="create"),
                                     err, form)
        return _see(f"{ROOT}/agency", id=made.agency_id, done="agency_created", seq=made.seq)

    async def accept_invitation(self, request: Request,
                                visitor: web.Visitor) -> Response | Page:
        form = await self._form(request, visitor)
        try:
            joined = await self.social.accept_invitation(agc.AgencyCommand(
                command_id=form.one("command_id"), session=self._session(visitor),
                agency_id=form.one("agency_id")))
        except LedgerError as err:
            return await self._again(lambda: self._agencies_page(visitor, failed="accept"),
                                     err, form)
        return _see(f"{ROOT}/agency", id=joined.agency_id, done="joined", seq=joined.seq)

    async def agency(self, request: Request, visitor: web.Visitor) -> Page:
        return await self._agency_page(visitor, request.query_params.get("id", ""),
                                       _seq(request))

    async def _agency_page(self, visitor: web.Visitor, agency_id: str, seq: int = 0,
                           **extra: Any) -> Page:
        session = self._session(visitor)
        view = await self.social.view_agency(agc.ViewAgency(
            session=session, agency_id=agency_id, seq=seq))
        me = await self.identity.me(idc.Me(session=session))
        return Page("agency.html", view.name, {
            "agency": view, "shown": views.agency_page(view, me.account), "failed": "",
            **extra})

    async def _agency_command(self, request: Request, visitor: web.Visitor, failed: str,
                              done: str,
                              send: Callable[[Form, str, str],
                                             Awaitable[agc.AgencyChanged]]) -> Response | Page:
        """One of the agency page's forms: its command, then the page showing its effect
        (or the page again, saying why it was refused)."""
        form = await self._form(request, visitor)
        agency_id = form.one("agency_id")
        try:
            changed = await send(form, self._session(visitor), agency_id)
        except LedgerError as err:
            return await self._again(
                lambda: self._agency_page(visitor, agency_id, failed=failed), err, form)
        return _see(f"{ROOT}/agency", id=changed.agency_id or agency_id, done=done,
                    seq=changed.seq)

    async def agency_settings(self, request: Request, visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            return await self.social.agency_settings(agc.ChangeSettings(
                command_id=form.one("command_id"), session=session, agency_id=agency_id,
                supervisors_write=form.one("supervisors_write") == "on"))
        return await self._agency_command(request, visitor, "settings", "settings_saved",
                                          send)

    async def invite(self, request: Request, visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            return await self.social.invite_to_agency(agc.Invite(
                command_id=form.one("command_id"), session=session, agency_id=agency_id,
                account=form.one("account"), nickname=form.one("nickname"),
                role=_staff_role(form.one("role"))))
        return await self._agency_command(request, visitor, "invite", "invited", send)

    async def change_role(self, request: Request, visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            return await self.social.change_agency_role(agc.ChangeRole(
                command_id=form.one("command_id"), session=session, agency_id=agency_id,
                account=form.one("account"), role=_staff_role(form.one("role"))))
        return await self._agency_command(request, visitor, "role", "role_changed", send)

    async def confirm_member_removal(self, request: Request, visitor: web.Visitor) -> Page:
        agency_id = request.query_params.get("id", "")
        account = request.query_params.get("account", "")
        shown = await self._agency_page(visitor, agency_id)
        page: views.AgencyPage = shown.context["shown"]
        if not page.admin:
            raise agc.NotAgencyAdmin("only the agency's administrator may do that")
        member = next((m for m in page.members if m.account == account), None)
        if member is None:
            raise agc.NotInAgency("that member is not in the agency")
        if member.role == "administrator":
            raise agc.AdministratorStays("the administrator cannot be removed")
        return Page("remove_member.html", "移除成员", {
            "agency": shown.context["agency"], "member": member})

    async def remove_member(self, request: Request, visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            return await self.social.remove_from_agency(agc.MemberCommand(
                command_id=form.one("command_id"), session=session, agency_id=agency_id,
                account=form.one("account")))
        return await self._agency_command(request, visitor, "remove", "member_removed", send)

    async def assign_supervision(self, request: Request,
                                 visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            return await self.social.assign_supervision(_supervision(form, session,
                                                                     agency_id))
        return await self._agency_command(request, visitor, "supervise",
                                          "supervision_assigned", send)

    async def end_supervision(self, request: Request, visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            return await self.social.end_supervision(_supervision(form, session, agency_id))
        return await self._agency_command(request, visitor, "unsupervise",
                                          "supervision_ended", send)

    async def hand_over(self, request: Request, visitor: web.Visitor) -> Response | Page:
        async def send(form: Form, session: str, agency_id: str) -> agc.AgencyChanged:
            # "<owner account>/<set id>": a set id has no "/", so the last one splits them.
            owner, _, set_id = form.one("set").rpartition("/")
            return await self.social.hand_over(agc.HandOver(
                command_id=form.one("command_id"), session=session, agency_id=agency_id,
                owner=owner, set_id=set_id, to=form.one("to")))
        return await self._agency_command(request, visitor, "hand_over", "handed_over", send)

    async def confirm_leaving(self, request: Request, visitor: web.Visitor) -> Page:
        shown = await self._agency_page(visitor, request.query_params.get("id", ""))
        page: views.AgencyPage = shown.context["shown"]
        if page.admin:
            raise agc.AdministratorStays("the administrator cannot leave")
        return Page("leave_agency.html", "退出代账公司", {
            "agency": shown.context["agency"], "role": page.my_role or ""})

    async def leave_agency(self, request: Request, visitor: web.Visitor) -> Response | Page:
        form = await self._form(request, visitor)
        agency_id = form.one("agency_id")
        try:
            left = await self.social.leave_agency(agc.AgencyCommand(
                command_id=form.one("command_id"), session=self._session(visitor),
                agency_id=agency_id))
        except LedgerError as err:
            return await self._again(
                lambda: self._agency_page(visitor, agency_id, failed="leave"), err, form)
        return _see(f"{ROOT}/agencies", done="agency_left", seq=left.seq)


def _staff_role(value: str) -> agc.StaffRole:
    """The role a form chose: an invitation or a role change gives one of two."""
    if value == "supervisor":
        return "supervisor"
    if value == "accountant":
        return "accountant"
    raise BadRequest("the role must be supervisor or accountant")


def _supervision(form: Form, session: str, agency_id: str) -> agc.Supervision:
    return agc.Supervision(command_id=form.one("command_id"), session=session,
                           agency_id=agency_id, supervisor=form.one("supervisor"),
                           accountant=form.one("accountant"))


def _error_page(err: LedgerError) -> Page:
    """The page of a refusal, in Chinese, with the status of its class."""
    err = public(err, "page")
    return Page("error.html", "出错了", {"error": message(err.code)},
                status=status_of(type(err)))


def _grant(form: Form, session: str) -> shc.Grant:
    """The share the form asks for: no year ticked means every year; a date, the last
    day of the share."""
    day = form.one("expires")
    try:
        until = views.expiry(date.fromisoformat(day)) if day else None
    except ValueError:
        raise BadRequest("the expiry is not a date") from None
    years = form.integers("years")
    return shc.Grant(command_id=form.one("command_id"), session=session,
                     set_id=form.one("set_id"), friends=form.all("friends"),
                     permission="read-only" if form.one("permission") == "read-only"
                     else "read-write", years=years or None, expires_at=until)


def _see(path: str, **query: str | int) -> Response:
    """After a command, the page that shows its effect (303: the reload is a GET), with
    the command's log position so the page waits for it."""
    return RedirectResponse(f"{path}?{urlencode(query)}", status_code=303)


def _seq(request: Request) -> int:
    """The log position a page should reflect (from a redirect after a command)."""
    given = request.query_params.get("seq", "")
    return int(given) if given.isdigit() and len(given) < 19 else 0


def _seconds_until(moment: datetime) -> int:
    return max(0, int((moment - datetime.now(UTC)).total_seconds()))


def _command_id() -> str:
    """A command id for one form (each form of a page gets its own)."""
    return uuid.uuid4().hex
