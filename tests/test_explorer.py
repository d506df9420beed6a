"""The browser table explorer (crossbar-config/web/) in real headless Chromium, on a real node.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright's sync API; etcd is read and
written directly through its JSON gateway, so the page is checked against what etcd really holds.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import pytest_twisted
from playwright.sync_api import expect, sync_playwright
from twisted.internet import reactor
from twisted.internet.task import deferLater

from component.config import RESERVED_SLOT
from txetcd import prefix_end
from txetcd.embedded import EtcdProcess
from txetcd.pmap.codecs import TimestampKey
from txetcd.pmap.layout import slot_prefix

from .typed import SERIALIZERS, USER_SCHEMA, session_as
from .wamp import ROOT, CrossbarNode

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NAMESPACE = b"app/"
COORDINATION = slot_prefix(RESERVED_SLOT) + b"wamp/"  # component.publisher's elections, positions
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
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                # The module's etcd has short election timeouts: on a loaded machine it may be
                # between leaders for a moment (503), and nothing was applied then.
                if exc.code != 503 or attempt == 4:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    @staticmethod
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    def put(self, key: bytes, value: bytes) -> int:
        reply = self.post("kv/put", {"key": self.b64(key), "value": self.b64(value)})
        return int(reply["header"]["revision"])

    def get(self, key: bytes, revision: int = 0) -> bytes | None:
        kvs = self.post("kv/range", {"key": self.b64(key), "revision": revision}).get("kvs", [])
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def delete(self, key: bytes) -> None:
        self.post("kv/deleterange", {"key": self.b64(key)})

    def revision(self) -> int:
        return int(self.post("kv/range", {"key": self.b64(b"\0")})["header"]["revision"])

    def metric(self, name: str, label: str) -> float:
        """The sum of a Prometheus metric's samples in etcd's /metrics whose labels say label."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and label in line)

    def delete_range(self, key: bytes, end: bytes) -> None:
        self.post("kv/deleterange", {"key": self.b64(key), "range_end": self.b64(end)})

    def wipe(self, prefix: bytes) -> None:
        """Delete every key under ``prefix`` but the running component's publisher elections
        and positions (deleting a leader's key under it leaves a publisher nobody sees)."""
        keep = prefix + COORDINATION
        self.delete_range(prefix, keep)
        self.delete_range(prefix_end(keep), prefix_end(prefix))

    def put_user(self, user: str, value: Any) -> int:
        return self.put(users_key(user), json.dumps(value).encode())

    def put_setting(self, name: str, value: Any) -> int:
        return self.put(settings_key(name), cbor2.dumps(value))


FILL = """
import struct, sys
import cbor2
from twisted.internet import defer, task
from txetcd import Client, OpSet

async def fill(reactor, url, count, stem):
    client = Client(reactor, url=url, namespace=b"app/")
    slots = defer.DeferredSemaphore(32)  # etcd commits concurrent txns in one raft batch
    def txn(start):
        return client.txn(success=[
            OpSet(struct.pack(">H", 2) + f"{stem}{n:06d}".encode(),
                  cbor2.dumps({"n": n, "label": f"{stem} {n}"}))
            for n in range(start, min(count, start + 128))])  # etcd's --max-txn-ops
    try:
        await defer.gatherResults([slots.run(txn, start) for start in range(0, count, 128)])
    finally:
        await client.close()

url, count, stem = sys.argv[1], int(sys.argv[2]), sys.argv[3]
task.react(lambda reactor: defer.ensureDeferred(fill(reactor, url, count, stem)))
"""


def fill_settings(etcd: EtcdGateway, count: int, stem: str) -> None:
    """``count`` settings rows put straight into etcd by txetcd (in a child process with its
    own reactor), as concurrent txns of 128 puts: 100,000 rows take about 10-30 s this way
    (by machine load), far longer one WAMP call at a time."""
    subprocess.run([sys.executable, "-c", FILL, etcd.url, str(count), stem], check=True,
                   cwd=ROOT, timeout=120)


# Besides the shipped tables: timestamp and oid keys (the "new key" helpers differ per key
# kind), and a typed table with a JSON Schema and indexes (issue #15).
# typed's users schema (name, email, age, address) with a few more kinds of field.
STAFF_SCHEMA = {**USER_SCHEMA, "properties": {
    **USER_SCHEMA["properties"],
    "score": {"type": "integer", "multipleOf": 5},  # not in the page's validator subset
    "role": {"enum": ["admin", "user"]},
    "active": {"type": "boolean"},
}}
EXTRA_TABLES = [{"name": "events", "slot": 6, "key": "timestamp", "value": "json"},
                {"name": "items", "slot": 4, "key": "oid", "value": "cbor"},
                {"name": "staff", "slot": 5, "key": "uuid", "value": "json",
                 "schema": STAFF_SCHEMA,
                 "indexes": [{"name": "by_email", "field": "email", "unique": True},
                             {"name": "by_city", "field": "/address/city"}]}]


@pytest.fixture(scope="module")
def node(etcd35: EtcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrossbarNode]:
    """The repo's node with the extra tables, shared by the module's tests."""
    crossbar = CrossbarNode(tmp_path_factory.mktemp("node"), etcd35.url)
    config_path = crossbar.cbdir / "config.json"
    config = json.loads(config_path.read_text())
    config["workers"][1]["components"][0]["extra"]["tables"].extend(EXTRA_TABLES)
    config_path.write_text(json.dumps(config, indent=2))
    crossbar.start()
    try:
        yield crossbar
    finally:
        crossbar.stop()


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
    expect(page.locator("#page-info")).to_have_text("page 1 · 31 rows in table")
    page.click("#next")
    page.wait_for_selector("#rows tbody tr[data-key=opt24]")
    assert listed_keys(page) == [f"opt{n:02d}" for n in range(24, 30)]
    expect(page.locator("#page-info")).to_have_text("page 2 · 31 rows in table")  # was "page 3"
    assert page.is_disabled("#next")
    page.click("#prev")
    page.wait_for_selector("#rows tbody tr[data-key=blob]")
    expect(page.locator("#page-info")).to_have_text("page 1 · 31 rows in table")

    wait_for_filter(page, "opt1", "ready")
    assert listed_keys(page) == [f"opt1{n}" for n in range(10)]
    expect(page.locator("#page-info")).to_have_text("page 1 · 10 rows with this prefix")

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
    # The pane stays open and says when the row went (the revision of the delete in etcd).
    page.wait_for_selector("#viewer-notice:has-text('deleted at revision')")
    deleted_at = int(page.inner_text("#viewer-notice").rsplit(" ", 1)[1])
    assert etcd.get(settings_key("theme"), revision=deleted_at - 1) is not None
    assert etcd.get(settings_key("theme"), revision=deleted_at) is None
    assert page.is_visible("#detail") and not page.is_visible("#edit")


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
        "key => document.querySelector(`#rows tr[data-key='${key}']`).innerText.includes('2018')",
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


def test_banner_shows_the_latest_error_only(page: Any, node: CrossbarNode,
                                            etcd: EtcdGateway) -> None:
    etcd.put_setting("theme", "dark")
    open_explorer(page, node, "reader")
    wait_for_filter(page, "ab", "error")  # users has uuid keys: no prefix scans
    assert page.get_attribute("#error", "data-uri") == "etcd.error.invalid_argument"
    page.evaluate("() => call('settings.delete', ['theme']).catch(() => null)")
    page.wait_for_selector("#error[data-uri='wamp.error.not_authorized']")
    assert "prefix scans" not in page.inner_text("#error")  # replaced, not appended
    assert page.locator("#error").count() == 1
    wait_for_filter(page, "", "ready")  # a new attempt that works clears the stale banner
    assert not page.is_visible("#error")


def test_empty_table_says_so_and_offers_the_first_row(page: Any, node: CrossbarNode,
                                                      etcd: EtcdGateway) -> None:
    open_explorer(page, node, "writer", "settings")
    empty = page.locator("#rows tbody tr.empty")
    assert "The table settings is empty" in empty.inner_text()
    empty.locator("button:has-text('Create the first row')").click()
    page.fill("#editor-key", "first")
    page.fill("#editor-value", '{"ok": true}')
    page.click("#save")
    row(page, "first").wait_for()
    assert cbor2.loads(etcd.get(settings_key("first")) or b"") == {"ok": True}


NUMBERS = "cells => cells.map(c => +c.innerText)"


def test_fields_are_columns_sorted_copied_and_expanded(page: Any, node: CrossbarNode,
                                                       etcd: EtcdGateway) -> None:
    people = [("ada", 36, "london"), ("grace", 85, "arlington"), ("edsger", 72, "nuenen"),
              ("barbara", 9, "boston")]
    users = sorted(str(uuid.uuid4()) for _ in people)
    for user, (name, age, city) in zip(users, people, strict=True):
        etcd.put_user(user, {"name": name, "age": age, "city": city, "bio": "x" * 600})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_explorer(page, node, "reader")
    headers = page.eval_on_selector_all("#rows thead th", "ths => ths.map(t => t.dataset.column)")
    assert headers == ["key", "name", "age", "city", "bio"]
    by_name = dict(zip(users, [p[0] for p in people], strict=True))
    assert row(page, users[0]).locator("td[data-column=name]").inner_text() == by_name[users[0]]
    # A long value is cut in the cell and whole on hover (the title).
    bio = row(page, users[0]).locator("td[data-column=bio]")
    assert bio.inner_text().endswith("…") and bio.get_attribute("title") == "x" * 600

    # A field sorts this page only, and the page says so; key order comes from etcd.
    page.click("#rows thead th[data-column=age]")
    ages = page.eval_on_selector_all("#rows tbody td[data-column=age]", NUMBERS)
    assert ages == [9, 36, 72, 85]
    assert "within this page only" in page.inner_text("#sort-note")
    page.click("#rows thead th[data-column=age]")
    ages = page.eval_on_selector_all("#rows tbody td[data-column=age]", NUMBERS)
    assert ages == [85, 72, 36, 9]
    page.click("#rows thead th[data-column=key]")  # back to key order
    page.wait_for_selector("#rows[data-state=ready]")
    assert listed_keys(page) == users
    page.click("#rows thead th[data-column=key]")  # descending, read backwards from etcd
    page.wait_for_selector("#rows thead th[data-column=key][aria-sort=descending]")
    page.wait_for_selector("#rows[data-state=ready]")
    assert listed_keys(page) == users[::-1]
    assert page.evaluate("() => explorer.scans.at(-1).reverse") is True

    # The columns are chosen per table and remembered across reloads.
    page.click("#columns summary")
    page.uncheck("#column-list input[value=bio]")
    page.check("#column-list input[value='$value']")
    page.reload()
    open_explorer(page, node, "reader")
    headers = page.eval_on_selector_all("#rows thead th", "ths => ths.map(t => t.dataset.column)")
    assert headers == ["key", "$value", "name", "age", "city"]

    # Copy buttons: the key from its row, key and value from the viewer; a row expands in place.
    target = row(page, users[1])
    target.hover()
    target.locator("button.copy-key").click()
    assert page.evaluate("() => navigator.clipboard.readText()") == users[1]
    target.locator("button.expand").click()
    expanded = page.locator(f'#rows tr.expanded-value[data-value-of="{users[1]}"]')
    assert json.loads(expanded.inner_text())["city"] == people[1][2]
    open_row(page, users[2])
    page.click("#copy-key")
    assert page.evaluate("() => navigator.clipboard.readText()") == users[2]
    page.click("#copy-value")
    copied = json.loads(page.evaluate("() => navigator.clipboard.readText()"))
    assert copied["name"] == by_name[users[2]]


def test_keyboard_moves_opens_filters_and_closes(page: Any, node: CrossbarNode,
                                                 etcd: EtcdGateway) -> None:
    for n in range(5):
        etcd.put_setting(f"k{n}", n)
    open_explorer(page, node, "reader", "settings")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("() => document.activeElement.dataset.key") == "k1"
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[data-state=ready] #viewer-key:text-is('k1')")
    page.keyboard.press("Escape")
    assert not page.is_visible("#detail")
    assert page.evaluate("() => document.activeElement.dataset.key") == "k1"
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "prefix"
    page.evaluate("() => { document.querySelector('#rows').dataset.state = 'filtering'; }")
    page.keyboard.type("k3")
    page.keyboard.press("Enter")
    page.wait_for_selector("#rows[data-state=ready]")
    assert listed_keys(page) == ["k3"]
    page.keyboard.press("Escape")  # leaves the filter field
    assert page.evaluate("() => document.activeElement.id") != "prefix"


def test_editor_checks_json_live_and_makes_new_keys(page: Any, node: CrossbarNode,
                                                    etcd: EtcdGateway) -> None:
    open_explorer(page, node, "writer", "settings")
    page.click("#new-row")
    assert not page.is_visible("#new-key")  # string keys: the user names them
    page.fill("#editor-key", "broken")
    page.fill("#editor-value", '{"a": 1,')
    page.wait_for_selector("#editor-check.bad:has-text('JSON syntax error')")
    assert "line 1" in page.inner_text("#editor-check")
    assert page.is_disabled("#save")
    page.fill("#editor-value", '{"a": 1}')
    page.wait_for_selector("#editor-check.ok:text-is('valid JSON')")
    assert page.is_enabled("#save")
    page.keyboard.press("Escape")
    assert not page.is_visible("#detail")

    page.select_option("#table-select", "users")
    page.wait_for_selector("#rows[data-state=ready]")
    page.click("#new-row")
    first = page.input_value("#editor-key")
    page.click("#new-key:text-is('generate')")
    second = page.input_value("#editor-key")
    assert first != second and str(uuid.UUID(second)) == second
    page.fill("#editor-value", '{"name": "new"}')
    page.click("#save")
    page.wait_for_selector(f"#viewer[data-state=ready] #viewer-key:text-is('{second}')")
    assert json.loads(etcd.get(users_key(second)) or b"") == {"name": "new"}

    page.select_option("#table-select", "events")  # timestamp keys: "now"
    page.wait_for_selector("#rows[data-state=ready]")
    page.click("#new-row")
    before = time.time_ns()
    page.click("#new-key:text-is('now')")
    stamp = int(page.input_value("#editor-key"))
    assert before - 10**9 < stamp <= time.time_ns()
    page.fill("#editor-value", '{"what": "deploy"}')
    page.click("#save")
    page.wait_for_selector(f"#viewer[data-state=ready] #viewer-key:text-is('{stamp}')")
    stored = etcd.get(NAMESPACE + struct.pack(">H", 6) + TimestampKey().encode(stamp))
    assert json.loads(stored or b"") == {"what": "deploy"}

    etcd.put(NAMESPACE + struct.pack(">HQ", 4, 41), cbor2.dumps("item 41"))
    page.select_option("#table-select", "items")  # oid keys: one past the highest
    page.wait_for_selector("#rows[data-state=ready]")
    page.click("#new-row")
    page.click("#new-key:text-is('next free')")
    page.wait_for_function("() => document.querySelector('#editor-key').value === '42'")


def test_store_panel_shows_etcd_and_publishers_live(page: Any, node: CrossbarNode,
                                                    etcd: EtcdGateway, etcd35: EtcdProcess) -> None:
    open_explorer(page, node, "reader")  # subscribing to users makes an instance publish it
    page.click("#store-button")
    page.wait_for_selector("#store-members tbody tr[data-id]")
    version = json.loads(urllib.request.urlopen(f"{etcd35.url}/version", timeout=5).read())
    assert page.inner_text("#store-version") == version["etcdserver"]
    member = page.locator("#store-members tbody tr[data-id]")
    assert member.count() == 1 and "leader" in member.inner_text()
    assert etcd35.url in member.inner_text()
    assert page.inner_text("#store-size").endswith("B)") or "iB" in page.inner_text("#store-size")
    assert "% of 2.0 GiB" in page.inner_text("#store-quota")  # etcd's default quota
    publisher = page.locator("#store-tables tr[data-table=users] td").nth(3)
    publisher_text = page.wait_for_function(
        "() => document.querySelector('#store-tables tr[data-table=users] td:nth-child(4)')"
        ".innerText.includes(':')", timeout=20_000)
    assert publisher_text and publisher.inner_text().startswith(socket.gethostname() + ":")
    assert "nobody" in page.locator("#store-tables tr[data-table=people]").inner_text()
    before = int(page.inner_text("#store-revision"))
    revision = etcd.put_setting("bump", 1)
    page.wait_for_function(
        f"() => +document.querySelector('#store-revision').innerText >= {revision}",
        timeout=10_000)
    assert revision > before
    page.keyboard.press("Escape")
    assert not page.is_visible("#store")


def test_export_downloads_json_lines_with_progress(page: Any, node: CrossbarNode,
                                                   etcd: EtcdGateway) -> None:
    fill_settings(etcd, 12_000, "exp")
    etcd.put_setting("other", {"x": b"\x01"})
    open_explorer(page, node, "reader", "settings")
    progress: list[str] = []
    page.expose_function("noteProgress", lambda text: progress.append(text))
    page.evaluate("""() => new MutationObserver(() => window.noteProgress(
        document.querySelector('#export-text').innerText)).observe(
        document.querySelector('#export-text'),
        {childList: true, characterData: true, subtree: true})""")
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    assert download.suggested_filename == "settings.jsonl"
    lines = [json.loads(line) for line in Path(download.path()).read_text().splitlines()]
    assert len(lines) == 12_001
    assert [line["key"] for line in lines[:2]] == ["exp000000", "exp000001"]
    assert lines[-1] == {"key": "other", "value": {"x": {"$hex": "01"}}}
    assert any(" of 12001 rows" in p and not p.startswith("12001") for p in progress)  # midway
    page.wait_for_selector("#export-text:has-text('12001 rows exported')")

    wait_for_filter(page, "exp00001", "ready")
    with page.expect_download() as info:
        page.click("#export")
    lines = Path(info.value.path()).read_text().splitlines()
    assert info.value.suggested_filename == "settings-exp00001.jsonl"
    assert [json.loads(line)["key"] for line in lines] == [f"exp0000{n:02d}" for n in range(10, 20)]


# The boxes that must neither overlap their siblings nor leave the viewport.
GEOMETRY_CHECK = (Path(__file__).parent / "explorer_geometry.js").read_text()


@pytest.mark.parametrize("width", [360, 1280, 1920])
def test_layout_fits_phone_to_wall_screens(page: Any, node: CrossbarNode, etcd: EtcdGateway,
                                           width: int) -> None:
    users = sorted(str(uuid.uuid4()) for _ in range(8))
    names = ["ada", "grace", "edsger", "barbara", "ken", "dennis", "frances", "john"]
    for n, user in enumerate(users):
        etcd.put_user(user, {"name": names[n], "since": 2015 + n, "admin": n % 3 == 0,
                             "langs": ["c", "lisp"][: 1 + n % 2]})
    page.set_viewport_size({"width": width, "height": 900 if width > 400 else 760})
    open_explorer(page, node, "writer")
    page.click("#store-button")
    page.wait_for_selector("#store-members tbody tr[data-id]")
    open_row(page, users[2])
    # The users table's publisher (host:pid) once elected: a precondition, not a timing test
    # (the previous width's page has just left, so that publisher stops before this one is
    # elected). It once stayed away for over 30 s: the leaving page stayed on the relay's books
    # (tests/test_leaving_subscribers.py) and its publisher ran on, after ``wipe`` had deleted
    # its election key.
    page.wait_for_selector("#store-tables tr[data-table=users] td:has-text(':')", timeout=30_000)
    page.mouse.move(width - 5, 895 if width > 400 else 755)  # no hover highlight in the picture
    problems = page.evaluate(GEOMETRY_CHECK)
    assert problems == []
    if width <= 900:  # stacked: the detail pane is under the table, not beside it
        browser_box = page.locator("#browser").bounding_box()
        detail_box = page.locator("#detail").bounding_box()
        assert detail_box["y"] >= browser_box["y"] + browser_box["height"]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"explorer-{width}.png"
    page.screenshot(path=str(shot), full_page=True)
    if width == 1280 and os.environ.get("ETCD_WAMP_REFRESH_SCREENSHOT") == "1":
        # Only on request: a test run must not leave the checkout's tracked files changed.
        shutil.copyfile(shot, ROOT / "docs" / "explorer.png")


def test_100k_rows_first_page_fast_and_paging_by_cursor(page: Any, node: CrossbarNode,
                                                        etcd: EtcdGateway) -> None:
    fill_settings(etcd, 100_000, "row")
    try:
        page_through_100k(page, node, etcd)
    finally:  # in slices: one delete of 100,000 keys can outlast the gateway's patience
        for n in range(10):
            etcd.delete_range(settings_key(f"row{n}"), settings_key(f"row{n + 1}"))


def page_through_100k(page: Any, node: CrossbarNode, etcd: EtcdGateway) -> None:
    assert etcd.post("kv/range", {"key": EtcdGateway.b64(settings_key("")),
                                  "range_end": EtcdGateway.b64(prefix_end(settings_key(""))),
                                  "count_only": True})["count"] == "100000"
    page.goto(f"http://127.0.0.1:{node.port}/")
    page.select_option("#login-authid", "reader")
    page.fill("#login-ticket", "reader-secret")
    page.click("#login-button")
    page.wait_for_selector("#rows[data-state=ready]")
    page.evaluate("() => { document.querySelector('#rows').dataset.state = 'switching'; }")
    started = time.monotonic()
    page.select_option("#table-select", "settings")
    page.wait_for_selector("#rows tbody tr[data-key=row000000]")
    first_page = time.monotonic() - started
    print(f"\n100k rows: first page shown {first_page * 1000:.0f} ms after choosing the table")
    assert first_page < 1.0
    page.wait_for_selector("#page-info:text-is('page 1 · 100000 rows in table')")

    ranges = etcd.metric("grpc_server_handled_total", 'grpc_method="Range"')
    scans = page.evaluate("() => explorer.scans.length")
    for n in range(1, 4):
        page.click("#next")
        page.wait_for_selector(f"#rows tbody tr[data-key=row{25 * n:06d}]")
        page.wait_for_selector("#rows[data-state=ready]")
        assert page.inner_text("#page-info").startswith(f"page {n + 1} ")
    page.click("#prev")
    page.wait_for_selector("#rows tbody tr[data-key=row000050]")
    page.click("#prev")
    page.wait_for_selector("#rows tbody tr[data-key=row000025]")
    assert page.inner_text("#page-info").startswith("page 2 ")
    made = page.evaluate(f"() => explorer.scans.slice({scans})")
    # Each page is one scan of 26 rows from its own first key: none starts over from the top.
    assert [m.get("from_key") for m in made] == ["row000025", "row000050", "row000075",
                                                 "row000050", "row000025"]
    assert all(m["limit"] == 26 for m in made)
    # ...and etcd served one range request per page (a few more for the component's own reads).
    served = etcd.metric("grpc_server_handled_total", 'grpc_method="Range"') - ranges
    assert 5 <= served <= 10, served


def staff_key(person: str) -> bytes:
    return NAMESPACE + struct.pack(">H", 5) + uuid.UUID(person).bytes


def put_staff(page: Any, rows: dict[str, Any]) -> None:
    """Rows written through the component (so that its indexes hold them), as the page's writer."""
    page.evaluate("""async (rows) => { for (const [key, value] of Object.entries(rows))
        await call('staff.put', [key, value]); }""", rows)


def test_schema_form_checks_fields_as_they_are_typed(page: Any, node: CrossbarNode,
                                                     etcd: EtcdGateway) -> None:
    open_explorer(page, node, "writer", "staff")
    page.click("#new-row")
    assert page.is_visible("#editor-form") and not page.is_visible("#editor-value")
    key = page.input_value("#editor-key")
    field = lambda name: page.locator(f'#editor-form label.field[data-pointer="/{name}"]')  # noqa: E731
    # Required fields missing: each says so next to itself, and Save waits.
    assert "is required" in field("name").locator(".field-error").inner_text()
    assert page.is_disabled("#save")
    field("name").locator("input").fill("ada")
    field("email").locator("input").fill("ada-at-example")
    assert "must match" in field("email").locator(".field-error").inner_text()
    assert field("name").locator(".field-error").inner_text() == ""
    field("email").locator("input").fill("ada@example.org")
    field("age").locator("input").fill("-3")
    assert "must be >= 0" in field("age").locator(".field-error").inner_text()
    field("age").locator("input").fill("36")
    field("role").locator("select").select_option('"admin"')
    field("active").locator("input").check()
    field("address").locator("textarea").fill('{"city": "london"')
    assert "not JSON" in field("address").locator(".field-error").inner_text()
    field("address").locator("textarea").fill('{"city": "london"}')
    page.wait_for_selector("#editor-check.ok:text-is(\"valid against the table's schema\")")
    # The JSON view shows the same value, checked against the schema as it is typed.
    page.click("#mode-json")
    value = json.loads(page.input_value("#editor-value"))
    assert value == {"name": "ada", "email": "ada@example.org", "age": 36, "role": "admin",
                     "active": True, "address": {"city": "london"}}
    page.fill("#editor-value", json.dumps({**value, "nick": "countess"}))
    page.wait_for_selector("#editor-problems li[data-pointer='/nick']")
    assert "not an allowed property" in page.inner_text("#editor-problems")
    page.fill("#editor-value", json.dumps({**value, "score": 7}))
    page.click("#mode-form")
    # multipleOf is beyond the page's checks: the component refuses, and the pointer it names
    # puts its message next to the field.
    page.click("#save")
    page.wait_for_selector("#editor-error[data-uri='etcd.error.invalid_value']")
    assert "multipleOf" in field("score").locator(".field-error").inner_text()
    assert etcd.get(staff_key(key)) is None
    field("score").locator("input").fill("10")
    page.click("#save")
    page.wait_for_selector(f"#viewer[data-state=ready] #viewer-key:text-is('{key}')")
    assert json.loads(etcd.get(staff_key(key)) or b"") == {**value, "score": 10}


def test_lookup_by_unique_and_plain_index(page: Any, node: CrossbarNode,
                                          etcd: EtcdGateway) -> None:
    people = {str(uuid.uuid4()): {"name": name, "email": f"{name}@example.org",
                                  "address": {"city": city}}
              for name, city in [("ada", "london"), ("grace", "arlington"), ("alan", "london"),
                                 ("edsger", "nuenen")]}
    open_explorer(page, node, "reader", "staff")
    writer = page.context.new_page()
    open_explorer(writer, node, "writer", "staff")
    put_staff(writer, people)
    writer.close()
    by_name = {v["name"]: k for k, v in people.items()}
    page.wait_for_selector("#page-info:text-is('page 1 · 4 rows in table')")
    assert page.is_visible("#lookup")
    page.select_option("#index-select", "by_email")
    page.fill("#index-value", "grace@example.org")
    page.click("#index-lookup")
    page.wait_for_selector("#rows[data-state=ready]")
    assert listed_keys(page) == [by_name["grace"]]
    assert "(index lookup)" in page.inner_text("#page-info")
    page.select_option("#index-select", "by_city")
    page.fill("#index-value", "london")
    page.click("#index-lookup")
    page.wait_for_function(
        "() => document.querySelectorAll('#rows tbody tr[data-key]').length == 2")
    assert sorted(listed_keys(page)) == sorted([by_name["ada"], by_name["alan"]])
    page.fill("#index-value", "paris")
    page.click("#index-lookup")
    page.wait_for_selector("#rows tbody tr.empty:has-text('no row has by_city = \"paris\"')")
    page.click("#index-clear")
    page.wait_for_selector("#page-info:text-is('page 1 · 4 rows in table')")
    assert len(listed_keys(page)) == 4


def test_history_diffs_and_restores_a_version(page: Any, node: CrossbarNode,
                                              etcd: EtcdGateway) -> None:
    person = str(uuid.uuid4())
    versions = [{"name": "ada", "email": "ada@example.org"},
                {"name": "ada", "email": "ada@example.org", "age": 36},
                {"name": "ada lovelace", "email": "ada@example.org", "age": 36}]
    revisions = [etcd.put(staff_key(person), json.dumps(v).encode()) for v in versions]
    open_explorer(page, node, "writer", "staff")
    open_row(page, person)
    page.click("#show-history")
    page.wait_for_selector("#history[data-state=ready]")
    listed = page.eval_on_selector_all("#history-list li",
                                       "lis => lis.map(l => +l.dataset.revision)")
    assert listed == revisions[::-1]  # newest first
    # The diff of the newest version against the one before it.
    assert page.eval_on_selector_all("#diff .del", "s => s.map(x => x.innerText.trim())") == [
        '-   "name": "ada",']
    assert page.eval_on_selector_all("#diff .add", "s => s.map(x => x.innerText.trim())") == [
        '+   "name": "ada lovelace",']
    page.select_option("#diff-from", str(revisions[0]))
    assert '+   "age": 36' in page.inner_text("#diff")
    # Restore the first version: a put guarded by the revision the history showed.
    first = page.locator(f"#history-list li[data-revision='{revisions[0]}']")
    first.locator("button.restore").click()
    page.wait_for_selector("#history-result:has-text('restored revision')")
    assert json.loads(etcd.get(staff_key(person)) or b"") == versions[0]
    page.wait_for_function(
        "() => document.querySelectorAll('#history-list li').length == 4")
    # Someone else writes after the history was read: the restore is refused, nothing written.
    etcd.put(staff_key(person), json.dumps(versions[2]).encode())
    page.locator(f"#history-list li[data-revision='{revisions[1]}'] button.restore").click()
    page.wait_for_selector("#history-result:has-text('not restored')")
    assert json.loads(etcd.get(staff_key(person)) or b"") == versions[2]
    # A deleted row keeps its history, and can be brought back from it.
    page.click("#history-back")
    page.wait_for_selector("#viewer[data-state=ready]")
    page.click("#delete")
    page.click("#delete")
    page.wait_for_selector("#viewer-notice:has-text('deleted at revision')")
    page.click("#show-history")
    page.wait_for_selector("#history[data-state=ready] #history-list li.delete", timeout=20_000)
    page.locator(f"#history-list li[data-revision='{revisions[0]}'] button.restore").click()
    page.wait_for_selector("#history-result:has-text('restored revision')")
    assert json.loads(etcd.get(staff_key(person)) or b"") == versions[0]


@pytest_twisted.ensureDeferred
async def test_status_reports_the_store_on_every_serializer(node: CrossbarNode,
                                                             etcd: EtcdGateway,
                                                             etcd35: EtcdProcess) -> None:
    """What the store panel shows comes from ``etcd.status``: members, leader, db size, quota
    and each table's publisher, the same on json, cbor and msgpack (ops' ``status`` reads it)."""
    watcher = await session_as(node.url, "cbor", "reader")
    await watcher.subscribe(lambda *a, **kw: None, "etcd.users.on_change")  # users gets published
    try:
        for serializer in SERIALIZERS:
            session = await session_as(node.url, serializer, "reader")
            try:
                for _ in range(150):  # the election takes a moment on a loaded machine
                    status = await session.call("etcd.status")
                    publishers = {t["name"]: t["publisher"] for t in status["tables"]}
                    if publishers["users"]:
                        break
                    await deferLater(reactor, 0.1, lambda: None)
            finally:
                session.leave()
            store = status["etcd"]
            assert [m["client_urls"] for m in store["members"]] == [[etcd35.url]]
            assert store["members"][0]["id"] == store["leader"] == store["member"]
            assert store["quota_bytes"] == 2 * 1024**3  # etcd's default --quota-backend-bytes
            assert 0 < store["db_size_in_use"] <= store["db_size"] < store["quota_bytes"]
            assert store["revision"] >= etcd.revision() - 5
            host, pid = publishers["users"].rsplit(":", 1)
            assert host == socket.gethostname() and pid.isdigit()
            assert publishers["people"] is None  # nobody subscribes to it: nobody publishes
            staff = next(t for t in status["tables"] if t["name"] == "staff")
            assert staff["schema"] == STAFF_SCHEMA
    finally:
        watcher.leave()


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
