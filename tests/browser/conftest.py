"""Fixtures for the pages, in a real browser: Debian's chromium driven by Playwright.

Each test gets its own browser (on its own event loop, where the services and the
gateway it talks to run too), contexts dressed as a phone inside WeChat, and numbered
full-page screenshots under ``tests/browser/screenshots/<test>/``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from starlette.types import ASGIApp

from deploy.freeports import free_port

HERE = Path(__file__).parent
SCREENSHOTS = HERE / "screenshots"
# WeChat's in-app browser on an iPhone; pages may read MicroMessenger from it.
WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2f) "
             "NetType/WIFI Language/zh_CN")
PHONE_WIDTH, PHONE_HEIGHT = 375, 812


def chromium_path() -> str:
    """Debian's chromium, or a failure that says how to get it (never a silent skip)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not on PATH: the browser tests drive Debian's chromium. "
                    "`make test` installs it (apt-get install --no-install-recommends "
                    "chromium fonts-wqy-microhei).", pytrace=False)
    return path


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium for the session; no sandbox, since CI runs as root in a container."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        await launched.close()


async def new_phone(browser: Browser) -> BrowserContext:
    """A context shaped like an iPhone in WeChat's in-app browser, in Chinese."""
    return await browser.new_context(
        viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT}, device_scale_factor=2,
        is_mobile=True, has_touch=True, locale="zh-CN", user_agent=WECHAT_UA)


@pytest_asyncio.fixture
async def phone(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh phone for the test."""
    context = await new_phone(browser)
    yield context
    await context.close()


@asynccontextmanager
async def serving(asgi: ASGIApp) -> AsyncIterator[str]:
    """``asgi`` on a real loopback port, served from this loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Shots:
    """Full-page screenshots of one test, numbered in the order they are taken."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken = 0

    async def __call__(self, page: Page, label: str) -> Path:
        """Save ``page`` as ``NN-label.png`` and return the file."""
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{label}.png"
        await page.screenshot(path=path, full_page=True)
        return path


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    """This test's screenshot taker; the previous run's shots of the test are removed."""
    folder = SCREENSHOTS / re.sub(r"[^\w.-]+", "-", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return Shots(folder)
