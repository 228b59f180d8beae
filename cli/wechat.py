"""What a member's WeChat app does when they open the Member Center from the official
account: authorize (choosing who they are on the local stand-in's page) and bring back a
one-time login code. Only the local stand-in (deploy/wechat.py) can be driven this way."""

from __future__ import annotations

import html
import re
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx

from contracts.errors import Unavailable
from deploy.wechat import AUTHORIZE_PATH, CHOOSE_PATH
from runtime.settings import Settings

# Where the Member Center would take the code; the browser never gets there here.
CALLBACK = "http://127.0.0.1/member-center/wechat"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


async def login_code(settings: Settings, user: str) -> str:
    """A login code for WeChat user ``user`` of the configured app, from the stand-in."""
    state = secrets.token_urlsafe(8)
    try:
        async with httpx.AsyncClient(base_url=settings.wechat_open_base, timeout=10) as web:
            page = await web.get(AUTHORIZE_PATH, params={
                "appid": settings.wechat_appid, "redirect_uri": CALLBACK,
                "response_type": "code", "scope": "snsapi_base", "state": state})
            fields = {k: html.unescape(v) for k, v in _HIDDEN.findall(page.text)}
            chosen = await web.post(CHOOSE_PATH, data={**fields, "user": user})
    except httpx.HTTPError as err:
        raise Unavailable(f"the WeChat stand-in at {settings.wechat_open_base} did not "
                          f"answer ({err}); is the stack up?") from None
    query = parse_qs(urlsplit(chosen.headers.get("location", "")).query)
    if chosen.status_code != 302 or query.get("state") != [state]:
        raise Unavailable(f"the WeChat stand-in gave no login code ({chosen.status_code})")
    code: str = query["code"][0]
    return code
