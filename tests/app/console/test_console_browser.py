"""The staff console in a real browser: Debian's chromium, headless, driven by Playwright.

A Telegram user (the loopback fake Bot API) asks for a person; a staff member signs in
to the console with a token, sees the handoff, reads the conversation, answers, and the
fake Telegram receives the answer in the user's chat. What the user writes next shows
in the console. Closing the handoff gives the user back to the concierge, whose next
answer comes from the knowledge base. Any Content-Security-Policy violation, or any
error in the browser's console, fails the test.

The daemon runs in this process on trio; the browser is driven from a worker thread
(Playwright's sync API runs its own event loop there) that reaches the fake through
``trio.from_thread``. Set ``CONSOLE_SCREENSHOT=docs/console.png`` to refresh the
README's screenshot.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Page, expect, sync_playwright

from concierge.app.api import Role, issue_token
from concierge.domain import Reply as R
from concierge.protocol import utcnow
from tests.app.test_channels_e2e import daemon
from tests.fakes.telegram_api import FakeTelegram
from tests.shipped import reply_text

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
USER = 5550001
STAFF_CHAT = "-1001234567890"
ENV = {
    "CONCIERGE_JWT_KEYS": "console=" + "k" * 40,
    "CONCIERGE_STAFF_CHANNEL": "telegram",
    "CONCIERGE_STAFF_CHAT_ID": STAFF_CHAT,
    "TELEGRAM_POLL_TIMEOUT_S": "1",
    "CONCIERGE_USER_RATE_PER_MIN": "600",
    "CONCIERGE_USER_BURST": "50",
}
WATCH_CSP = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportViolation(`${event.effectiveDirective} blocked ${event.blockedURI}`);
});
"""


class Telegram:
    """The fake Bot API, seen from the browser's thread."""

    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake

    def user_writes(self, text: str) -> None:
        update = self._fake.text_message(user_id=USER, text=text, first_name="Ana")
        trio.from_thread.run_sync(self._fake.add_update, update)

    def texts_to(self, chat_id: int | str) -> list[str]:
        return trio.from_thread.run_sync(self._fake.texts_to, chat_id)

    def wait_for(self, condition: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
        deadline = time.monotonic() + within_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"still waiting after {within_s:g} s for {what}")
            time.sleep(0.1)


def drive_console(base_url: str, token: str, telegram: Telegram, screenshot: Path) -> list[str]:
    """Everything the staff member does; returns the CSP violations and console errors seen."""
    problems: list[str] = []
    chromium = shutil.which("chromium")
    assert chromium is not None
    # trio-asyncio (imported by the store) makes new asyncio loops trio-asyncio's; a policy
    # set in this thread only gives Playwright a plain asyncio loop here.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        return _drive(chromium, base_url, token, telegram, screenshot, problems)
    finally:
        asyncio.set_event_loop_policy(None)


def _drive(
    chromium: str,
    base_url: str,
    token: str,
    telegram: Telegram,
    screenshot: Path,
    problems: list[str],
) -> list[str]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 820}, locale="fr-FR")
            page.expose_function("reportViolation", lambda text: problems.append(f"CSP: {text}"))
            page.add_init_script(WATCH_CSP)
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            answer_from_the_console(page, base_url, token, telegram, screenshot)
        finally:
            browser.close()
    return problems


def answer_from_the_console(
    page: Page, base_url: str, token: str, telegram: Telegram, screenshot: Path
) -> None:
    page.goto(f"{base_url}/console")
    expect(page.get_by_test_id("sign-in")).to_be_visible()
    assert token not in page.url
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_test_id("who")).to_have_text("Père Jean · staff")
    assert page.evaluate("sessionStorage.getItem('concierge.token')") == token
    assert token not in page.url

    item = page.get_by_test_id("handoff-list").get_by_role("button").filter(has_text="Ana")
    expect(item).to_be_visible(timeout=15_000)
    item.click()
    messages = page.get_by_test_id("messages")
    expect(messages).to_contain_text("je voudrais parler à un prêtre")

    page.locator("#reply-text").fill("Bonjour Ana, je suis le père Jean. Je vous appelle ce soir.")
    page.get_by_role("button", name="Envoyer").click()
    sent = reply_text(
        R.STAFF_REPLY, "fr", text="Bonjour Ana, je suis le père Jean. Je vous appelle ce soir."
    )
    telegram.wait_for(lambda: sent in telegram.texts_to(USER), "the staff reply on Telegram")
    expect(messages.locator("[data-sender=staff]")).to_contain_text("Je vous appelle ce soir")
    expect(page.locator("#handoff-meta")).to_contain_text("prise en charge par Père Jean")

    telegram.user_writes("Merci beaucoup, je serai là après 18h.")
    expect(messages).to_contain_text("je serai là après 18h", timeout=15_000)
    telegram.wait_for(
        lambda: any("je serai là après 18h" in t for t in telegram.texts_to(STAFF_CHAT)),
        "the user's message forwarded to the staff chat",
    )
    page.screenshot(path=str(screenshot))

    page.get_by_role("button", name="Clore").click()
    expect(page.locator("#handoff-meta")).to_contain_text("close le", timeout=15_000)
    closed = reply_text(R.HANDOFF_CLOSED, "fr")
    telegram.wait_for(lambda: closed in telegram.texts_to(USER), "the user told it is over")
    expect(page.get_by_test_id("queue-empty" if False else "handoff-list")).not_to_contain_text(
        "Ana"
    )

    telegram.user_writes("A quelle heure est la messe dimanche ?")
    telegram.wait_for(
        lambda: any("10h30" in t for t in telegram.texts_to(USER)),
        "the concierge answering again",
    )


async def test_a_staff_member_answers_a_telegram_user_from_the_console(tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    fake = FakeTelegram()
    async with fake.serve():
        env: dict[str, Any] = {
            **ENV,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "TELEGRAM_API_BASE_URL": fake.url,
        }
        async with daemon(tmp_path, **env) as rt:
            fake.add_update(
                fake.text_message(
                    user_id=USER,
                    text="Bonjour, je voudrais parler à un prêtre s'il vous plaît",
                    first_name="Ana",
                )
            )
            with trio.fail_after(30):
                while not any("Ana" in t for t in fake.texts_to(STAFF_CHAT)):
                    await trio.sleep(0.05)
            token = issue_token(
                rt.settings.api, subject="Père Jean", role=Role.STAFF, ttl_s=3600, now=utcnow()
            )
            screenshot = Path(os.environ.get("CONSOLE_SCREENSHOT") or tmp_path / "console.png")
            problems = await trio.to_thread.run_sync(
                drive_console, rt.http_binds[0], token, Telegram(fake), screenshot
            )
    assert problems == []
    assert (await trio.Path(screenshot).stat()).st_size > 10_000
