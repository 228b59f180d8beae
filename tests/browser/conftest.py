"""Fixtures for the pages, in a real browser: Debian's chromium driven by Playwright.

One browser for the session; each test gets a fresh context dressed as a phone inside
WeChat, and numbered full-page screenshots under ``tests/browser/screenshots/<test>/``.
The browser lives on pytest-asyncio's session loop (the project default is a loop per
test), so every test in this folder is moved onto that loop too.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

HERE = Path(__file__).parent
SCREENSHOTS = HERE / "screenshots"
# WeChat's in-app browser on an iPhone; pages may read MicroMessenger from it.
WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2f) "
             "NetType/WIFI Language/zh_CN")
PHONE_WIDTH, PHONE_HEIGHT = 375, 812
SESSION_LOOP = pytest.mark.asyncio(loop_scope="session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run this folder's async tests on the session loop, where the browser lives."""
    for item in items:
        if item.path.is_relative_to(HERE) and pytest_asyncio.is_async_test(item):
            item.add_marker(SESSION_LOOP, append=False)


def chromium_path() -> str:
    """Debian's chromium, or a failure that says how to get it (never a silent skip)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not on PATH: the browser tests drive Debian's chromium. "
                    "`make test` installs it (apt-get install --no-install-recommends "
                    "chromium fonts-wqy-microhei).", pytrace=False)
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless chromium for the session; no sandbox, since CI runs as root in a container."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="session")
async def phone(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh context shaped like an iPhone in WeChat's in-app browser, in Chinese."""
    context = await browser.new_context(
        viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT}, device_scale_factor=2,
        is_mobile=True, has_touch=True, locale="zh-CN", user_agent=WECHAT_UA)
    yield context
    await context.close()


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
