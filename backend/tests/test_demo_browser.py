"""The demo page in a real browser: Playwright driving Debian's Chromium (`make chromium`
installs it) against the app served by uvicorn on a free port (embedded backend) and the
stand-in OpenAI-compatible LLM. Screenshots go to test-results/ (not committed)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
import uvicorn

from config import PROJECT_DIR
from main import create_app
from services.storage.embedded_postgres import EmbeddedPostgres
from tests.conftest import CHAT_LLM_BASE_URL, make_settings
from tests.llm_stand_in import LLMStandIn
from tests.tokens import TEST_JWT_SECRET

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
RESULTS_DIR = PROJECT_DIR / "test-results"

if not Path(CHROMIUM).exists():
    _why = (
        f"Chromium not found at {CHROMIUM}: `make chromium` installs Debian's (apt-get install"
        " chromium); set CHROMIUM_PATH for another one"
    )
    if os.environ.get("CI"):  # CI installs it (make test runs make chromium): never skip there
        raise RuntimeError(_why)
    pytest.skip(_why, allow_module_level=True)

from playwright.async_api import Browser, Page, Route, async_playwright, expect  # noqa: E402

expect.set_options(timeout=15_000)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def serve(settings_overrides: dict[str, Any], server: EmbeddedPostgres) -> AsyncIterator[str]:
    """The app under uvicorn on a free loopback port, in this event loop; yields its URL."""
    settings = make_settings(
        memory_backend="embedded",
        data_dir=server.pgdata.parent,
        supabase_jwt_secret=TEST_JWT_SECRET,
        **settings_overrides,
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    uvicorn_server = uvicorn.Server(config)
    task = asyncio.create_task(uvicorn_server.serve())
    async with asyncio.timeout(30):
        while not uvicorn_server.started:
            if task.done():
                task.result()  # raises what stopped it
            await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        await task


@pytest.fixture
def llm() -> Iterator[LLMStandIn]:
    with respx.mock(base_url=CHAT_LLM_BASE_URL, assert_all_called=False) as router:
        yield LLMStandIn(router)


@pytest.fixture
async def live_url(embedded_server: EmbeddedPostgres, llm: LLMStandIn) -> AsyncIterator[str]:
    chat = {"llm_base_url": CHAT_LLM_BASE_URL, "llm_model": "companion-test-model"}
    async for url in serve(chat, embedded_server):
        yield url


@pytest.fixture
async def live_url_one_turn_per_minute(
    embedded_server: EmbeddedPostgres, llm: LLMStandIn
) -> AsyncIterator[str]:
    chat = {
        "llm_base_url": CHAT_LLM_BASE_URL,
        "llm_model": "companion-test-model",
        "chat_turns_per_minute": 1,
    }
    async for url in serve(chat, embedded_server):
        yield url


@pytest.fixture
async def live_url_without_llm(embedded_server: EmbeddedPostgres) -> AsyncIterator[str]:
    async for url in serve({}, embedded_server):
        yield url


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_signed_in(browser: Browser, url: str, user_id: str = "") -> Page:
    # A fixed locale and time zone: dates on the page read the same on every machine.
    page = await browser.new_page(locale="en-GB", timezone_id="UTC")
    page.on("pageerror", lambda error: pytest.fail(f"script error on the page: {error}"))
    await page.goto(f"{url}/demo/")
    await expect(page.get_by_role("heading", name="Memory service demo")).to_be_visible()
    await page.get_by_label("User id").fill(user_id)
    await page.get_by_role("button", name="Sign in (dev)").click()
    await expect(page.locator("#signed-in")).to_be_visible()
    await expect(page.locator("#memory-version")).not_to_have_text("not loaded")
    return page


async def screenshot(page: Page, name: str) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    await page.screenshot(path=RESULTS_DIR / name, full_page=True)


async def stored(url: str, page: Page, path: str) -> Any:
    """What the API answers the page's user at /api/memory/`path` (read with the page's own
    token; through the browser's request API, as respx holds httpx in this process)."""
    token = await page.evaluate("sessionStorage.getItem('demo-token')")
    response = await page.request.get(
        f"{url}/api/memory/{path}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.ok, response.status
    return await response.json()


async def chat(page: Page, message: str) -> None:
    """Send `message` with the keyboard and wait for its reply to finish."""
    replies = page.locator("#chat-log li.assistant")
    before = await replies.count()
    await page.get_by_label("Message").fill(message)
    await page.get_by_label("Message").press("Enter")
    await expect(replies.nth(before)).to_have_attribute("data-done", "true")


def shown_date(created_at: str) -> str:
    """How the page (locale en-GB, time zone UTC) writes a stored created_at."""
    when = datetime.fromisoformat(created_at).astimezone(UTC)
    return when.strftime("%d/%m/%Y, %H:%M:%S")


class TestDemoInChromium:
    async def test_chat_streams_memory_grows_and_a_stale_save_shows_412(
        self, browser: Browser, live_url: str, llm: LLMStandIn
    ) -> None:
        page = await open_signed_in(browser, live_url)
        user_id = (await page.locator("#signed-in-user").text_content() or "").strip()
        await expect(page.locator("#count-episodic_memory")).to_have_text("0")

        # Send with the keyboard; the reply streams: part of it shows while the LLM holds.
        release = llm.stream_held(["Hel", "lo ", "Mia"], [", how ", "is Momo?"])
        await page.get_by_label("Message").fill("Hi! My cat is called Momo.")
        await page.get_by_label("Message").press("Enter")
        reply = page.locator("#chat-log li.assistant")
        await expect(reply.locator(".text")).to_have_text("Hello Mia")
        await expect(reply).not_to_have_attribute("data-done", "true")
        await expect(reply.locator(".text")).to_have_attribute("data-pieces", "3")
        release.set()
        await expect(reply.locator(".text")).to_have_text("Hello Mia, how is Momo?")
        await expect(reply).to_have_attribute("data-done", "true")
        assert llm.turns[0]["stream"] is True

        # The memory pane refreshed after the turn: both episodes are there.
        await expect(page.locator("#count-episodic_memory")).to_have_text("2")
        episodes = page.locator("#field-episodic_memory li")
        await expect(episodes.nth(0)).to_have_text("user: Hi! My cat is called Momo.")
        await expect(episodes.nth(1)).to_have_text("assistant: Hello Mia, how is Momo?")

        # Edit current_state and save it (If-Match the loaded version).
        await page.get_by_label("current_state").fill('{"mood": "happy"}')
        await page.get_by_role("button", name="Save current_state").click()
        await expect(page.locator("#status")).to_have_text("Saved current_state.")
        assert await stored(live_url, page, "current_state") == {"mood": "happy"}

        # A second tab of the same user saves first: this tab's save is stale, a 412 is shown
        # and the other tab's value stays.
        other = await open_signed_in(browser, live_url, user_id)
        await page.get_by_label("current_state").fill('{"mood": "excited"}')
        await other.get_by_label("current_state").fill('{"mood": "sleepy"}')
        await other.get_by_role("button", name="Save current_state").click()
        await expect(other.locator("#status")).to_have_text("Saved current_state.")
        await page.get_by_role("button", name="Save current_state").click()
        await expect(page.get_by_role("alert")).to_contain_text("(412)")
        assert await stored(live_url, page, "current_state") == {"mood": "sleepy"}
        await screenshot(page, "demo-412.png")

        # Reloading shows the other tab's value; saving again then works.
        await page.get_by_role("button", name="Reload memory").click()
        await expect(page.get_by_label("current_state")).to_have_value(
            json.dumps({"mood": "sleepy"}, indent=2)
        )
        await expect(page.get_by_role("alert")).to_be_hidden()
        await screenshot(page, "demo.png")

    async def test_search_lists_the_matching_episode_with_its_date_and_score(
        self, browser: Browser, live_url: str, llm: LLMStandIn
    ) -> None:
        page = await open_signed_in(browser, live_url)
        llm.replies = ["What a lovely name!", "Dinosaurs are great."]
        await chat(page, "My cat is called Momo.")
        await chat(page, "I like dinosaurs.")
        await expect(page.locator("#count-episodic_memory")).to_have_text("4")

        # A word of the first message: its episode, and only it, with its date and score.
        await page.get_by_label("Search past conversations").fill("Momo")
        await page.get_by_label("Search past conversations").press("Enter")
        hits = page.locator("#search-results li")
        await expect(hits).to_have_count(1)
        await expect(hits.locator(".text")).to_have_text("user: My cat is called Momo.")
        await expect(page.locator("#search-none")).to_be_hidden()
        await expect(page.locator("#status")).to_have_text("1 result(s) (text search).")
        episode = next(
            e
            for e in await stored(live_url, page, "episodic_memory")
            if e["content"] == "My cat is called Momo."
        )
        date = hits.locator("time")
        await expect(date).to_have_attribute("datetime", episode["created_at"])
        await expect(date).to_have_text(shown_date(episode["created_at"]))
        answer = await stored(live_url, page, "search?q=Momo")
        assert [hit["id"] for hit in answer["results"]] == [episode["id"]]
        score_text = await hits.locator(".score").text_content() or ""
        assert re.fullmatch(r"score \d+\.\d{3}", score_text), score_text
        score = float(score_text.removeprefix("score "))
        assert score > 0 and abs(score - answer["results"][0]["score"]) <= 0.0005
        await screenshot(page, "demo-search.png")

        # No match: an empty list and a clear "no results" line.
        await page.get_by_label("Search past conversations").fill("giraffe")
        await page.get_by_role("button", name="Search", exact=True).click()
        await expect(page.locator("#search-none")).to_have_text(
            "No results: no past message matches \u201cgiraffe\u201d."
        )
        await expect(hits).to_have_count(0)
        await expect(page.locator("#status")).to_have_text("0 result(s) (text search).")

        # A match again hides that line; the reply found by its own word.
        await page.get_by_label("Search past conversations").fill("great")
        await page.get_by_role("button", name="Search", exact=True).click()
        await expect(hits.locator(".text")).to_have_text(["assistant: Dinosaurs are great."])
        await expect(page.locator("#search-none")).to_be_hidden()

    async def test_a_turn_past_the_chat_limit_shows_the_429_detail_and_retry_after(
        self, browser: Browser, live_url_one_turn_per_minute: str, llm: LLMStandIn
    ) -> None:
        """A real 429: the app allows one chat turn a minute (CHAT_TURNS_PER_MINUTE=1)."""
        page = await open_signed_in(browser, live_url_one_turn_per_minute)
        await chat(page, "Hello!")
        await expect(page.locator("#count-episodic_memory")).to_have_text("2")

        async with page.expect_response("**/api/chat") as refused:
            await page.get_by_label("Message").fill("Hello again!")
            await page.get_by_label("Message").press("Enter")
        response = await refused.value
        assert response.status == 429
        retry_after = int(response.headers["retry-after"])
        assert 1 <= retry_after <= 60
        detail = (await response.json())["detail"]
        assert detail  # the server's words, shown as they are
        alert = page.get_by_role("alert")
        await expect(alert).to_have_text(
            f"Chat failed (429): {detail} Retry after {retry_after} s."
        )
        failed = page.locator("#chat-log li.assistant").nth(1)
        await expect(failed).to_have_class(re.compile(r"\bfailed\b"))
        await expect(failed.locator(".text")).to_have_text("(no reply)")
        await expect(page.get_by_role("button", name="Send")).to_be_enabled()
        # Nothing of the refused turn was stored, and only one turn reached the LLM.
        await expect(page.locator("#count-episodic_memory")).to_have_text("2")
        assert len(await stored(live_url_one_turn_per_minute, page, "episodic_memory")) == 2
        assert len(llm.turns) == 1
        await screenshot(page, "demo-429.png")

    async def test_error_states_are_shown(
        self, browser: Browser, live_url_without_llm: str
    ) -> None:
        page = await open_signed_in(browser, live_url_without_llm)
        alert = page.get_by_role("alert")

        # No LLM configured: the 503 and the settings to set.
        await page.get_by_label("Message").fill("Hello?")
        await page.get_by_role("button", name="Send").click()
        await expect(alert).to_contain_text("(503)")
        await expect(alert).to_contain_text("LLM_BASE_URL")

        # Rate limited (429): a real one, in the test above.

        # Network down.
        await page.route("**/api/memory", lambda route: route.abort("internetdisconnected"))
        await page.get_by_role("button", name="Reload memory").click()
        await expect(alert).to_contain_text("cannot reach the server")

        # A token the server refuses: 401, back to the sign-in form.
        await page.unroute("**/api/memory")
        await page.evaluate("sessionStorage.setItem('demo-token', 'not.a.token')")
        await page.reload()
        await expect(alert).to_contain_text("(401)")
        await expect(page.get_by_role("button", name="Sign in (dev)")).to_be_visible()
        await screenshot(page, "demo-errors.png")


class TestDocsOfflineInChromium:
    async def test_swagger_ui_and_redoc_render_with_every_other_host_blocked(
        self, browser: Browser, live_url_without_llm: str
    ) -> None:
        page = await browser.new_page()
        elsewhere: list[str] = []

        async def local_only(route: Route) -> None:
            if route.request.url.startswith(live_url_without_llm):
                await route.continue_()
            else:
                elsewhere.append(route.request.url)
                await route.abort("internetdisconnected")

        await page.route("**/*", local_only)
        await page.goto(f"{live_url_without_llm}/docs")
        await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Memory service")
        await expect(page.locator(".opblock-summary-path").first).to_be_visible()
        await page.goto(f"{live_url_without_llm}/redoc")
        await expect(page.get_by_role("heading", name="Memory service (0.1.0)")).to_be_visible()
        # Nothing the pages need comes from elsewhere (ReDoc's "powered by" logo is refused by
        # the CSP before any request is made).
        assert elsewhere == []
