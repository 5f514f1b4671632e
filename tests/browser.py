"""A real browser for the console's tests: the system's Chromium driven by Playwright (never a
browser Playwright downloads), and a folder for the screenshots a reviewer can look at.

TEST_CHROMIUM names another Chromium binary; SCREENSHOTS_DIR keeps the screenshots somewhere
else than the test session's temporary folder. The folder is printed at the end of the run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

_SHOTS: list[Path] = []
_HTTP = re.compile(r"^https?://")


def chromium_executable() -> str:
    path = os.environ.get("TEST_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise RuntimeError(
            "the console tests need Chromium: scripts/test installs it (apt-get install chromium),"
            " or set TEST_CHROMIUM=/path/to/chromium"
        )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_executable())
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A browser context that reaches 127.0.0.1 only: a page that reaches for a CDN fails
    loudly (the console serves its own scripts and styles), and a mail's remote image does
    not load."""
    opened = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened.set_default_timeout(15_000)
    remote_assets: list[str] = []

    async def local_only(route: Route) -> None:
        request = route.request
        if urlsplit(request.url).hostname in ("127.0.0.1", None):
            await route.continue_()
            return
        if request.resource_type in ("script", "stylesheet", "font", "fetch", "xhr"):
            remote_assets.append(request.url)
        await route.abort()

    await opened.route(_HTTP, local_only)
    try:
        yield opened
    finally:
        await opened.close()
    assert not remote_assets, f"the console reached for assets elsewhere: {remote_assets}"


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("SCREENSHOTS_DIR")
    folder = Path(configured) if configured else tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    _SHOTS.append(folder)
    return folder


async def shoot(page: Page, folder: Path, name: str) -> Path:
    """A full-page screenshot of what the browser shows now, as `<name>.png`."""
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for folder in _SHOTS:
        terminalreporter.write_line(f"console screenshots: {folder}")
