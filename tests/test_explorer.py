"""The browser table explorer (crossbar-config/web/) in real headless Chromium, on a real node.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright's sync API; etcd is read and
written directly through its JSON gateway, so the page is checked against what etcd really holds.
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from playwright.sync_api import sync_playwright

from txetcd import prefix_end
from txetcd.embedded import EtcdProcess

from .wamp import ROOT, CrossbarNode

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NAMESPACE = b"app/"
ARTIFACTS = ROOT / "artifacts"


def users_key(user: str) -> bytes:
    return NAMESPACE + struct.pack(">H", 1) + uuid.UUID(user).bytes


def settings_key(name: str) -> bytes:
    return NAMESPACE + struct.pack(">H", 2) + name.encode()


class EtcdGateway:
    """Blocking reads and writes through etcd's JSON gateway: no reactor needed in the test."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/v3/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    @staticmethod
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def put(self, key: bytes, value: bytes) -> int:
        reply = self.post("kv/put", {"key": self.b64(key), "value": self.b64(value)})
        return int(reply["header"]["revision"])

    def get(self, key: bytes) -> bytes | None:
        kvs = self.post("kv/range", {"key": self.b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def delete(self, key: bytes) -> None:
        self.post("kv/deleterange", {"key": self.b64(key)})

    def wipe(self, prefix: bytes) -> None:
        self.post("kv/deleterange", {"key": self.b64(prefix),
                                      "range_end": self.b64(prefix_end(prefix))})

    def put_user(self, user: str, value: Any) -> int:
        return self.put(users_key(user), json.dumps(value).encode())

    def put_setting(self, name: str, value: Any) -> int:
        return self.put(settings_key(name), cbor2.dumps(value))


@pytest.fixture
def etcd(etcd35: EtcdProcess) -> EtcdGateway:
    gateway = EtcdGateway(etcd35.url)
    gateway.wipe(NAMESPACE)
    return gateway


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, node: CrossbarNode) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def open_explorer(page: Any, node: CrossbarNode, authid: str, table: str = "users") -> None:
    """Load the page from the node, log in with a ticket and wait for the table's first page."""
    page.goto(f"http://127.0.0.1:{node.port}/")
    page.select_option("#login-authid", authid)
    page.fill("#login-ticket", f"{authid}-secret")
    page.click("#login-button")
    page.wait_for_selector("#conn[data-state=connected]")
    page.wait_for_selector("#rows[data-state=ready]")
    if page.input_value("#table-select") != table:
        page.evaluate("() => { document.querySelector('#rows').dataset.state = 'switching'; }")
        page.select_option("#table-select", table)
        page.wait_for_selector("#rows[data-state=ready]")


def row(page: Any, key: str) -> Any:
    return page.locator(f'#rows tbody tr[data-key="{key}"]')


def listed_keys(page: Any) -> list[str]:
    return page.eval_on_selector_all("#rows tbody tr[data-key]",
                                     "rows => rows.map(r => r.dataset.key)")


def open_row(page: Any, key: str) -> None:
    row(page, key).click()
    page.wait_for_selector(f"#viewer[data-state=ready] #viewer-key:text-is('{key}')")


def wait_for_filter(page: Any, prefix: str, state: str) -> None:
    page.evaluate("() => { document.querySelector('#rows').dataset.state = 'filtering'; }")
    page.fill("#prefix", prefix)
    page.click("#apply-filter")
    page.wait_for_selector(f"#rows[data-state={state}]")


def test_lists_pages_filters_and_shows_rows_written_directly(
        page: Any, node: CrossbarNode, etcd: EtcdGateway) -> None:
    users = sorted(str(uuid.uuid4()) for _ in range(3))
    for n, user in enumerate(users):
        etcd.put_user(user, {"name": f"user {n}", "tags": ["a", "b"]})
    for n in range(30):
        etcd.put_setting(f"opt{n:02d}", {"n": n})
    etcd.put_setting("blob", b"\x00\xffhi")

    open_explorer(page, node, "reader")
    assert listed_keys(page) == users  # uuid rows in etcd (byte) order
    assert "user 0" in row(page, users[0]).inner_text()
    # A prefix needs string/binary keys: the component's refusal is shown with its URI.
    wait_for_filter(page, "ab", "error")
    assert page.get_attribute("#error", "data-uri") == "etcd.error.invalid_argument"
    assert "prefix scans need string or binary keys" in page.inner_text("#error")

    page.select_option("#table-select", "settings")
    page.wait_for_selector("#rows tbody tr[data-key=blob]")
    assert listed_keys(page) == ["blob"] + [f"opt{n:02d}" for n in range(24)]
    assert page.inner_text("#page-info") == "page 1 · 31 rows in table"
    page.click("#next")
    page.wait_for_selector("#rows tbody tr[data-key=opt24]")
    assert listed_keys(page) == [f"opt{n:02d}" for n in range(24, 30)]
    assert page.is_disabled("#next")
    page.click("#prev")
    page.wait_for_selector("#rows tbody tr[data-key=blob]")

    wait_for_filter(page, "opt1", "ready")
    assert listed_keys(page) == [f"opt1{n}" for n in range(10)]
    assert page.inner_text("#page-info") == "page 1 · 10 rows with this prefix"

    wait_for_filter(page, "", "ready")
    open_row(page, "blob")  # CBOR bytes are shown as hex and base64
    assert json.loads(page.inner_text("#viewer-value")) == {"$hex": "00ff6869"}
    assert page.inner_text("#viewer-bytes") == "4 bytes · base64 AP9oaQ=="
    assert page.inner_text("#viewer-meta").startswith("revision ")


def test_writer_creates_edits_and_deletes_rows_in_etcd(
        page: Any, node: CrossbarNode, etcd: EtcdGateway) -> None:
    etcd.put_setting("theme", {"dark": True})
    open_explorer(page, node, "writer", "settings")

    open_row(page, "theme")
    page.click("#edit")
    page.fill("#editor-value", '{"dark": false, "accent": {"$hex": "c0ffee"}}')
    page.click("#save")
    page.wait_for_selector("#viewer[data-state=ready]")
    assert cbor2.loads(etcd.get(settings_key("theme")) or b"") == {
        "dark": False, "accent": b"\xc0\xff\xee"}

    page.click("#new-row")
    page.fill("#editor-key", "lang")
    page.fill("#editor-value", '"en"')
    page.click("#save")
    page.wait_for_selector("#rows tbody tr[data-key=lang]")  # via the on_change event
    assert cbor2.loads(etcd.get(settings_key("lang")) or b"") == "en"
    # Creating a row that exists is refused, not overwritten.
    page.click("#new-row")
    page.fill("#editor-key", "lang")
    page.fill("#editor-value", '"de"')
    page.click("#save")
    page.wait_for_selector("#editor-error[data-uri='etcd.error.conflict']")
    assert cbor2.loads(etcd.get(settings_key("lang")) or b"") == "en"
    page.click("#cancel")

    open_row(page, "theme")
    page.click("#delete")
    page.click("#delete")  # the second click confirms
    page.wait_for_selector("#rows tbody tr[data-key=theme]", state="detached")
    assert etcd.get(settings_key("theme")) is None


def test_direct_etcd_writes_show_up_live(page: Any, node: CrossbarNode,
                                         etcd: EtcdGateway) -> None:
    users = sorted(str(uuid.uuid4()) for _ in range(6))
    for n, user in enumerate(users[:5]):
        etcd.put_user(user, {"name": ["ada", "grace", "edsger", "barbara", "ken"][n],
                             "since": 2019 + n})
    open_explorer(page, node, "writer")
    open_row(page, users[1])

    etcd.put_user(users[5], {"name": "dennis", "since": 2024})
    row(page, users[5]).wait_for(timeout=1000)
    assert listed_keys(page) == users
    etcd.put_user(users[1], {"name": "grace", "since": 2018, "admin": True})
    page.wait_for_function(
        "key => document.querySelector(`#rows tr[data-key='${key}']`).innerText.includes('admin')",
        arg=users[1], timeout=1000)
    assert "flash-put" in (row(page, users[1]).get_attribute("class") or "")
    # The open viewer follows the row too.
    page.wait_for_selector("#viewer-notice:has-text('changed at revision')", timeout=1000)
    assert json.loads(page.inner_text("#viewer-value"))["admin"] is True

    page.wait_for_selector("#page-info:text-is('page 1 · 6 rows in table')")
    ARTIFACTS.mkdir(exist_ok=True)
    page.mouse.move(640, 700)  # no hover highlight in the picture
    page.screenshot(path=str(ARTIFACTS / "explorer.png"),
                    clip={"x": 0, "y": 0, "width": 1280, "height": 440})

    etcd.delete(users_key(users[3]))
    row(page, users[3]).wait_for(state="detached", timeout=2000)  # flashes, then goes
    assert listed_keys(page) == users[:3] + users[4:]


def test_reader_cannot_write(page: Any, node: CrossbarNode, etcd: EtcdGateway) -> None:
    etcd.put_setting("theme", "dark")
    open_explorer(page, node, "reader", "settings")
    open_row(page, "theme")
    for control in ("#new-row", "#edit", "#delete"):
        assert not page.is_visible(control)
    # Calling put anyway is refused by the router's role, not just hidden by the page.
    refused = page.evaluate("""async () => {
        try { await explorer.session.call('etcd.settings.put', ['theme', 'light']); return null; }
        catch (err) { return err.error; }
    }""")
    assert refused == "wamp.error.not_authorized"
    shown = page.evaluate("""() => call('settings.delete', ['theme']).then(
        () => null, (err) => err.error)""")
    assert shown == "wamp.error.not_authorized"
    assert page.get_attribute("#error", "data-uri") == "wamp.error.not_authorized"
    assert cbor2.loads(etcd.get(settings_key("theme")) or b"") == "dark"


def test_concurrent_edit_is_reported_as_conflict(page: Any, node: CrossbarNode,
                                                 etcd: EtcdGateway) -> None:
    user = str(uuid.uuid4())
    etcd.put_user(user, {"name": "ada"})
    open_explorer(page, node, "writer")
    open_row(page, user)
    page.click("#edit")
    etcd.put_user(user, {"name": "ada lovelace"})  # someone else, after the editor opened
    page.fill("#editor-value", '{"name": "countess"}')
    page.click("#save")
    page.wait_for_selector("#editor-error[data-uri='etcd.error.conflict']")
    assert "not at revision" in page.inner_text("#editor-error")
    assert json.loads(etcd.get(users_key(user)) or b"") == {"name": "ada lovelace"}



def test_connection_indicator_follows_the_node(page: Any, node: CrossbarNode,
                                               etcd: EtcdGateway) -> None:
    """Last in the module: it restarts the shared node."""
    open_explorer(page, node, "reader", "settings")
    node.stop()
    page.wait_for_selector("#conn[data-state=reconnecting]")
    node.start()
    page.wait_for_selector("#conn[data-state=connected]", timeout=30_000)
    page.wait_for_selector("#rows[data-state=ready]")
    etcd.put_setting("after-restart", True)  # the page subscribed again
    row(page, "after-restart").wait_for(timeout=5000)
