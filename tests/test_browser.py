"""The chat page in a real browser (Debian's chromium driven by Playwright), against real replicas on Redis.

Each test saves a screenshot of the page when it ends and prints where (under SCREENSHOTS).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, ReverseProxy, require_browser
from tests.harness import APPS, Replica
from web import mount_app

try:
    from playwright.async_api import Page, expect

    expect.set_options(timeout=15_000)
except ImportError:  # the `browser` fixture fails every browser test saying how to install it
    Page = Any  # type: ignore[misc,assignment]

DEMO = "web.demo.app:app"
BROWSER_APP = "tests.apps.browser_app:app"

#: Installed before the page's scripts: records every text a streaming message shows, every frame the
#: page sends on a websocket, and the page's cumulative layout shift (shifts caused by recent input
#: excluded, as browsers report them).
OBSERVERS = """
window.__partials = [];
window.__sent = [];
window.__layoutShift = 0;
const send = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__sent.push(String(data));
  return send.call(this, data);
};
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) if (!entry.hadRecentInput) window.__layoutShift += entry.value;
}).observe({ type: "layout-shift", buffered: true });
addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    for (const body of document.querySelectorAll('#messages .msg[data-streaming="true"] .msg-body')) {
      if (window.__partials.at(-1) !== body.textContent) window.__partials.push(body.textContent);
    }
  }).observe(document.getElementById("messages"), {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
});
"""


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async_playwright = require_browser()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def new_page(
    browser: Any, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Page]:
    """A page in a fresh browser context (empty storage); screenshotted when the test ends."""
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    await context.add_init_script(OBSERVERS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await screenshot(page, request.node.name, capsys)
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def proxies() -> Iterator[Callable[..., ReverseProxy]]:
    started: list[ReverseProxy] = []

    def start(upstreams: list[Replica], prefix: str = "") -> ReverseProxy:
        proxy = ReverseProxy([r.port for r in upstreams], prefix).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


async def screenshot(page: Page, name: str, capsys: pytest.CaptureFixture[str]) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^\w.-]+", "-", name).strip("-") + ".png")
    await page.screenshot(path=str(path))
    with capsys.disabled():
        print(f"\nscreenshot: {path}")
    return path


# -- page helpers --------------------------------------------------------------------------------


def status(page: Page) -> Any:
    return page.locator("#status")


def bodies(page: Page, kind: str, text: str | re.Pattern[str]) -> Any:
    """Message bodies of `kind` ("assistant_message" or "user_message") containing `text`."""
    return page.locator(f'#messages .msg[data-type="{kind}"] .msg-body').filter(has_text=text)


def mine(page: Page, text: str) -> Any:
    return page.locator('#messages .msg[data-type="user_message"] .msg-body').filter(
        has_text=re.compile(f"^{re.escape(text)}$")
    )


async def connected(page: Page) -> str:
    """Wait until the page holds a session; returns its id."""
    await expect(status(page)).to_have_attribute("data-state", "connected")
    value = page.locator("#session-id-value")
    await expect(value).to_have_text(re.compile(r"^[A-Za-z0-9_-]{16,64}$"))
    return await value.inner_text()


async def say(page: Page, text: str) -> None:
    """Type into the focused message box and press Enter, as a keyboard user does."""
    await expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")
    await expect(mine(page, text)).to_have_count(1)


async def finished_reply(page: Page, text: str) -> None:
    reply = page.locator('#messages .msg[data-type="assistant_message"]').filter(has_text=text)
    await expect(reply).to_have_count(1)
    await expect(reply).to_have_attribute("data-streaming", "false")


#: True once the page has acknowledged (`ack`) the highest offset it processed.
ACKED_ALL = """(key) => {
  const acks = window.__sent.filter((frame) => frame.startsWith('42["ack",'));
  const stored = JSON.parse(sessionStorage.getItem(key) || "{}").lastOffset;
  return acks.length > 0 && JSON.parse(acks.at(-1).slice(2))[1].offset === stored;
}"""


async def acked_all(page: Page, chat_path: str = "/chat") -> list[str]:
    """Wait until the page acknowledged everything it processed; returns the ack frames it sent."""
    await page.wait_for_function(ACKED_ALL, arg=f"switchboard-chat:{chat_path}/")
    return [f for f in await page.evaluate("window.__sent") if f.startswith('42["ack",')]


async def in_thread(call: Callable[[], Any]) -> Any:
    """Blocking harness calls (starting or stopping a replica) off the loop the browser runs on."""
    return await asyncio.to_thread(call)


Start = Callable[..., Awaitable[Replica]]


@pytest.fixture
def start(replicas: Callable[..., Replica]) -> Start:
    async def start_one(**kwargs: Any) -> Replica:
        return await in_thread(lambda: replicas(**kwargs))

    return start_one


# -- the page, end to end ------------------------------------------------------------------------


async def test_chat_page_across_two_replicas_behind_a_proxy(
    start: Start, proxies: Callable[..., ReverseProxy], new_page: Page
) -> None:
    """The README's demo on two replicas behind a plain round-robin proxy (no sticky sessions)."""
    a, b = await asyncio.gather(start(app=DEMO), start(app=DEMO))
    proxy = proxies([a, b])
    page = new_page
    await page.goto(proxy.url + "/chat")  # redirected to /chat/
    assert page.url == proxy.url + "/chat/"
    session_id = await connected(page)
    await expect(bodies(page, "assistant_message", f"Your session id is {session_id}")).to_have_count(1)

    # Keyboard only: the message box has the focus; Enter sends; the echo streams in token by token.
    await say(page, "hello from the browser")
    await finished_reply(page, "You said: hello from the browser")
    partials = await page.evaluate("window.__partials")
    final = "You said: hello from the browser "
    assert len(partials) >= 3, partials
    assert all(final.startswith(p) for p in partials), partials
    assert await page.evaluate("window.__layoutShift") < 0.05
    await expect(page.locator("#working .working-inner")).to_be_hidden()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Send")).to_be_focused()

    # A send from the replica that does not hold the socket reaches the page.
    holder = a if proxy.socket_upstreams[-1] == a.port else b
    other = b if holder is a else a
    assert (await other.aget(f"/hello/{session_id}")).status_code == 200
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(1)

    # The session id is shown and copied with a click (for `curl /hello/{session_id}`).
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await page.get_by_role("button", name=re.compile("Session")).click()
    await expect(page.locator("#copy-feedback")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == session_id

    # A reload keeps the session (same id) and its history, whichever replica the page lands on.
    await page.reload()
    assert await connected(page) == session_id
    await expect(mine(page, "hello from the browser")).to_have_count(1)
    await finished_reply(page, "You said: hello from the browser")
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(1)

    # The replica holding the socket goes away: the page reconnects through the proxy to the other one
    # and resumes the same session there.
    holder = a if proxy.socket_upstreams[-1] == a.port else b
    other = b if holder is a else a
    async with page.expect_websocket():
        await in_thread(holder.process.stop)
    assert await connected(page) == session_id
    assert proxy.socket_upstreams[-1] == other.port
    await say(page, "still here?")
    await finished_reply(page, "You said: still here?")
    assert (await other.aget(f"/hello/{session_id}")).status_code == 200
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(2)

    # A narrow screen: no sideways scrolling, the composer still there.
    await page.set_viewport_size({"width": 390, "height": 760})
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await expect(page.get_by_role("button", name="Send")).to_be_in_viewport()


@pytest.mark.parametrize(
    ("chat_path", "prefix"), [("", ""), ("/chat", "/prefix")], ids=["root", "sub-path-behind-prefix"]
)
async def test_page_at_the_root_and_below_a_proxy_prefix(
    chat_path: str, prefix: str, start: Start, proxies: Callable[..., ReverseProxy], new_page: Page
) -> None:
    """The page finds its socket from where it was loaded: `/`, or `/prefix/chat/` with app.root_path."""
    replica = await start(app=BROWSER_APP, path=chat_path, env={"ROOT_PATH": prefix})
    proxy = proxies([replica], prefix=prefix)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        assert (await http.get("/app")).json() == {"app": "parent"}  # not shadowed by the page
    page = new_page
    await page.goto(proxy.url + (chat_path or "/"))
    assert page.url == proxy.url + chat_path + "/"
    session_id = await connected(page)
    await expect(bodies(page, "assistant_message", f"started {session_id}")).to_have_count(1)
    await say(page, "ping")
    await finished_reply(page, "echo 1: ping")
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        assert (await http.get(f"/hello/{session_id}")).status_code == 200
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(1)


async def test_answering_an_ask(start: Start, proxies: Callable[..., ReverseProxy], new_page: Page) -> None:
    """`/ask` in the demo: a question with an answer box and a countdown, shown once across a
    reconnect (the server asks again) and after a reload, answered from the keyboard."""
    replica = await start(app=DEMO)
    proxy = proxies([replica])
    page = new_page
    await page.goto(proxy.url + "/chat/")
    await connected(page)
    await say(page, "/ask")
    await expect(bodies(page, "assistant_message", "What is your name?")).to_have_count(1)
    ask = page.locator("#messages form.ask")
    await expect(ask).to_have_count(1)
    await expect(ask.locator(".ask-countdown")).to_have_text(re.compile(r"^0:[0-3]\d left$"))
    await expect(page.get_by_role("textbox", name="Your answer")).to_be_focused()

    await proxy.cut()
    await expect(status(page)).to_have_attribute("data-state", "reconnecting")
    proxy.restore()
    await expect(status(page)).to_have_attribute("data-state", "connected")
    await expect(ask).to_have_count(1)

    await page.reload()
    await connected(page)
    await expect(ask).to_have_count(1)
    await expect(bodies(page, "assistant_message", "What is your name?")).to_have_count(1)
    answer = page.get_by_role("textbox", name="Your answer")
    await expect(answer).to_be_focused()
    await page.keyboard.type("Ada")
    await page.keyboard.press("Enter")
    await expect(bodies(page, "assistant_message", "Nice to meet you, Ada!")).to_have_count(1)
    await expect(ask).to_have_count(0)
    await expect(mine(page, "Ada")).to_have_count(1)
    await expect(page.get_by_role("textbox", name="Message")).to_be_focused()


# -- the mailbox: replay after a reload or a reconnect -------------------------------------------


async def test_reload_rebuilds_the_history_from_the_replay(start: Start, new_page: Page) -> None:
    replica = await start(app=DEMO)
    page = new_page
    await page.goto(replica.url + "/chat/")  # straight from the replica, no proxy
    session_id = await connected(page)
    # The greeting first, so that the page shows it before the message typed next.
    await expect(bodies(page, "assistant_message", f"Your session id is {session_id}")).to_have_count(1)
    await say(page, "first")
    await finished_reply(page, "You said: first")
    assert (await replica.aget(f"/hello/{session_id}")).status_code == 200
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(1)
    await acked_all(page)  # acknowledged messages stay in the log: a reload gets them all back

    await page.reload()
    assert await connected(page) == session_id
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(1)
    await expect(status(page)).to_have_text("Connected · restored 3 messages")
    texts = [t.strip() for t in await page.locator("#messages .msg-body").all_inner_texts()]
    assert texts[1:] == ["first", "You said: first", "Hello World"], texts
    assert texts[0].startswith(f"Hello! Your session id is {session_id}"), texts


async def test_missed_messages_are_replayed_after_a_reconnect(
    start: Start, proxies: Callable[..., ReverseProxy], new_page: Page
) -> None:
    replica = await start(app=DEMO)
    proxy = proxies([replica])
    page = new_page
    await page.goto(proxy.url + "/chat/")
    session_id = await connected(page)
    await say(page, "one")
    await finished_reply(page, "You said: one")
    # What the page processed is acknowledged: each ack names a higher offset than the one before (so
    # no offset is acknowledged twice), and the last one the highest processed. How the three durable
    # events (greeting, stream start, stream end) fall into batches depends on the page's 500 ms ack
    # timer against the stream, i.e. on the machine's load, so the number of acks is not asserted.
    acks = await acked_all(page)
    assert all(re.fullmatch(r'42\["ack",\{"offset":"\d+-\d+"\}\]', ack) for ack in acks), acks
    acked = [int(json.loads(ack[2:])[1]["offset"].split("-")[0]) for ack in acks]
    assert acked == sorted(set(acked)) and 1 <= len(acked) <= 3, acks

    await proxy.cut()
    await expect(status(page)).to_have_attribute("data-state", "reconnecting")
    await expect(status(page)).to_have_text("Reconnecting…")
    assert (await replica.aget(f"/hello/{session_id}")).status_code == 200  # while the page is away
    proxy.restore()
    await expect(status(page)).to_have_text("Connected · replayed 1 missed message")
    assert await connected(page) == session_id
    await expect(bodies(page, "assistant_message", "Hello World")).to_have_count(1)
    await expect(bodies(page, "assistant_message", "You said: one")).to_have_count(1)  # no duplicates


# -- how mount_app serves the page (in process, no browser) --------------------------------------


@pytest.fixture
def parent() -> FastAPI:
    return FastAPI()


async def fetch(app: FastAPI, method: str, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.request(method, url)


async def test_page_routes_never_shadow_the_parent(parent: FastAPI) -> None:
    mount_app(parent, APPS / "chat.py", path="")

    @parent.get("/")  # declared after mount_app, still wins
    async def home() -> dict[str, str]:
        return {"app": "parent"}

    @parent.get("/_switchboard/mine")
    async def mine_route() -> dict[str, str]:
        return {"app": "parent"}

    assert (await fetch(parent, "GET", "/")).json() == {"app": "parent"}
    assert (await fetch(parent, "GET", "/_switchboard/mine")).json() == {"app": "parent"}
    script = await fetch(parent, "GET", "/_switchboard/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert (await fetch(parent, "GET", "/elsewhere")).json() == {"detail": "Not Found"}


@pytest.mark.parametrize("root_path", ["", "/prefix"])
async def test_page_and_assets_at_a_sub_path(parent: FastAPI, root_path: str) -> None:
    parent.root_path = root_path
    mount_app(parent, APPS / "chat.py", path="/chat")
    for url in ("/chat", f"{root_path}/chat"):  # behind a proxy that strips the prefix, or not
        redirect = await fetch(parent, "GET", url + "?x=1")
        assert redirect.status_code == 308 and redirect.headers["location"] == "chat/?x=1"
    page = await fetch(parent, "GET", f"{root_path}/chat/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert 'src="_switchboard/app.js"' in page.text  # relative: works under any prefix
    head = await fetch(parent, "HEAD", "/chat/")
    assert head.status_code == 200 and not head.content
    for asset, kind in [("style.css", "text/css"), ("socket.io.min.js", "text/javascript")]:
        response = await fetch(parent, "GET", f"/chat/_switchboard/{asset}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind), asset
    for missing in ("index.html", "nope.js", ".hidden", "%2e%2e%2fpage.py"):
        assert (await fetch(parent, "GET", f"/chat/_switchboard/{missing}")).status_code == 404, missing
    assert (await fetch(parent, "POST", "/chat/")).status_code in (404, 405)
    assert (await fetch(parent, "GET", "/")).status_code == 404  # nothing at the root but the parent's


# -- signing in ------------------------------------------------------------------------------------

LOGIN_APP = "tests.apps.login_app:app"
#: The cookie is not Secure here: the test serves plain http on 127.0.0.1, where a browser would drop it.
LOGIN_ENV = {"SWITCHBOARD_AUTH_SECRET": "b" * 48, "SWITCHBOARD_COOKIE_SECURE": "false"}


async def access_cookie(page: Page) -> dict[str, Any] | None:
    return next((c for c in await page.context.cookies() if c["name"] == "access_token"), None)


async def test_page_signs_in_with_a_password_and_out_again(start: Start, new_page: Page) -> None:
    replica = await start(app=LOGIN_APP, env=LOGIN_ENV)
    page = new_page
    await page.goto(replica.url + "/chat/")
    form = page.locator("#login")
    await expect(form).to_be_visible()  # the handshake was refused with token_missing
    await expect(status(page)).to_have_text("Sign in required")
    await expect(page.get_by_role("textbox", name="Message")).to_be_disabled()

    # Keyboard only: the username field has the focus; a wrong password says so and keeps the form.
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.keyboard.type("ann")
    await page.keyboard.press("Tab")
    await page.keyboard.type("not-the-password")
    await page.keyboard.press("Enter")
    await expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    assert await access_cookie(page) is None
    await page.get_by_label("Password").fill("ann-password")
    await page.keyboard.press("Enter")

    session_id = await connected(page)
    await expect(form).to_be_hidden()
    await expect(bodies(page, "assistant_message", "hello ann")).to_have_count(1)
    await say(page, "hi there")
    await finished_reply(page, "ann said: hi there")
    cookie = await access_cookie(page)
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert "access_token" not in await page.evaluate("document.cookie")  # scripts cannot read it

    # A reload presents the cookie again and resumes the same session.
    await page.reload()
    assert await connected(page) == session_id
    await expect(form).to_be_hidden()

    # Signing out clears the cookie and the tab's conversation: the form is back.
    await page.get_by_role("button", name="Sign out").click()
    await expect(form).to_be_visible()
    assert await access_cookie(page) is None
    await expect(page.locator("#messages .msg")).to_have_count(0)


async def test_page_signs_in_through_an_authenticating_proxy(start: Start, new_page: Page) -> None:
    """Behind oauth2-proxy style auth the proxy adds the user's headers; the page signs in without a form."""
    replica = await start(app=LOGIN_APP, env=LOGIN_ENV)
    page = new_page
    await page.context.set_extra_http_headers({"X-Forwarded-User": "dave"})
    await page.goto(replica.url + "/chat/")
    await connected(page)
    await expect(bodies(page, "assistant_message", "hello dave")).to_have_count(1)
    await expect(page.locator("#login")).to_be_hidden()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
