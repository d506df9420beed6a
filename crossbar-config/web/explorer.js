// etcd-wamp explorer: browse, watch and edit the component's tables over WAMP (autobahn-js).
// Plain ES modules, no build step. The WebSocket URL comes from `location`, so the page works on
// whatever host and port the node's web transport serves it from.
//
// Typed tables (schemas, indexes, history) are feature-detected per table with `describe`: a
// component without it answers wamp.error.no_such_procedure and the page falls back to plain
// JSON editing and key-only browsing.
import { validate } from "./lib/validate.js";
import { diffLines } from "./lib/diff.js";
import {
  LocalError, base64ToBytes, bytesToBase64, compareKeys, describe,
  formatBytes, hexToBytes, keyText, newUuid, nowNanoseconds, parseJson, parseKey, reviveBytes,
  showJson, startsWith,
} from "./lib/values.js";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const WS_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const FLASH_MS = 1700;
const STORE_REFRESH_MS = 2000;
const EXPORT_BATCH = 5000;
const WHOLE_VALUE = "$value";  // the column showing the whole value
const REFUSED_LOGIN = /authentication_failed|not_authorized|no_such_role|no_such_realm|cannot_authenticate|no_auth_method/;

// Everything the page knows; exposed as window.explorer for tests and the devtools console.
const state = {
  connection: null, session: null, authid: null, role: null, loggingOut: false,
  prefix: params.get("prefix") || "etcd",  // the component's URI prefix (its config "prefix")
  status: null, tables: [], table: null, subscriptions: [],
  pageSize: 25, filter: null, reverse: false,
  cursor: null, pages: [], nextStart: null,  // this page's scan bounds, the earlier pages' ones
  rows: [], total: null, loading: false, loadToken: 0, pendingScan: null, queued: [],
  columns: [], fields: [], sort: null, lookup: null,
  selected: null, editing: null, errors: [], scans: [], copied: null,
  exporting: null, lastExport: null, storeTimer: null,
};
window.explorer = state;

// ---- bytes, keys and values ------------------------------------------------------------------

// WAMP's JSON serializer carries bytes as "\0" + base64 (the convention Crossbar speaks).
const wampJson = new autobahn.serializer.JSONSerializer(
  (key, value) => (value instanceof Uint8Array ? "\0" + bytesToBase64(value) : value),
  (key, value) => (typeof value === "string" && value.charCodeAt(0) === 0
    ? base64ToBytes(value.slice(1)) : value),
);

// The order of this page's rows: etcd's key order, descending when the key column says so.
function keyOrder(a, b) {
  return state.reverse ? compareKeys(b, a) : compareKeys(a, b);
}

function element(tag, props = {}, ...children) {
  const el = Object.assign(document.createElement(tag), props);
  el.append(...children);
  return el;
}

// ---- errors ------------------------------------------------------------------------------------

// One banner, always the latest error: a new one replaces the text, the URI and the count.
function showError(err) {
  const { uri, message } = describe(err);
  state.errors.push({ uri, message });
  const banner = $("#error");
  $("#error-uri").textContent = uri;
  $("#error-message").textContent = message;
  banner.dataset.uri = uri;
  banner.dataset.count = String(state.errors.length);
  banner.hidden = false;
}

function clearError() {
  $("#error").hidden = true;
  delete $("#error").dataset.uri;
}

function inlineError(box, err) {
  const { uri, message } = describe(err);
  box.replaceChildren(element("code", { textContent: uri }), document.createTextNode(` ${message}`));
  box.dataset.uri = uri;
  box.hidden = false;
}

function uri(name) {
  return `${state.prefix}.${name}`;
}

// A call to one of the component's procedures; failures show in the banner and re-raise.
async function call(name, args = [], kwargs = {}, quiet = false) {
  if (!state.session) throw new LocalError("not_connected", "not connected");
  try {
    return await state.session.call(uri(name), args, kwargs);
  } catch (err) {
    if (!quiet) showError(err);
    throw err;
  }
}
window.call = call;

function isMissing(err) {
  return err && err.error === "wamp.error.no_such_procedure";
}

// A progressive scan: each chunk of rows goes to onChunk as it arrives. `slot` names the
// state field holding the call, so a newer scan of the same purpose can cancel it.
function scan(name, kwargs, onChunk, slot = "pendingScan") {
  return new Promise((resolve, reject) => {
    const pending = state.session.call(uri(name), [], kwargs, { receive_progress: true });
    state[slot] = pending;
    pending.then(resolve, reject, onChunk);  // when.js promise: the third callback gets progress
  });
}

function cancelScan(slot = "pendingScan") {
  const pending = state[slot];
  state[slot] = null;
  if (pending && pending.cancel) {
    try { pending.cancel({ mode: "kill" }); } catch (err) { /* already finished */ }
  }
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {  // no clipboard API (plain http on another host): the old way
    const area = element("textarea", { value: text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  state.copied = text;
  if (button) {
    const label = button.textContent;
    button.classList.add("copied");
    button.textContent = "copied";
    setTimeout(() => { button.classList.remove("copied"); button.textContent = label; }, 1200);
  }
}

// ---- connection --------------------------------------------------------------------------------

function setConn(connState, text) {
  $("#conn").dataset.state = connState;
  $("#conn-text").textContent = text;
}

function login(authid, ticket) {
  logout();
  state.loggingOut = false;
  state.authid = authid;
  const connection = new autobahn.Connection({
    url: WS_URL, realm: params.get("realm") || "realm1",
    authmethods: ["ticket"], authid, onchallenge: () => ticket,
    serializers: [wampJson], max_retries: -1, initial_retry_delay: 1, max_retry_delay: 8,
  });
  connection.onopen = (session, details) => joined(connection, session, details);
  connection.onclose = (reason, details) => closed(connection, reason, details);
  state.connection = connection;
  setConn("connecting", "connecting…");
  $("#login-button").hidden = true;
  $("#logout-button").hidden = false;
  connection.open();
}

function logout() {
  const connection = state.connection;
  state.connection = null;
  state.loggingOut = true;
  clearTimeout(state.reopenTimer);
  if (connection) {
    try { connection.close(); } catch (err) { /* already closed */ }
  }
  state.session = null;
  state.role = null;
  showWriteControls(false);
  $("#login-button").hidden = false;
  $("#logout-button").hidden = true;
  $("#store-button").disabled = true;
  $("#export").disabled = true;
  setConn("disconnected", "disconnected");
}

async function joined(connection, session, details) {
  if (connection !== state.connection) return;
  state.session = session;
  state.role = details.authrole;
  state.subscriptions = [];
  setConn("connected", `connected as ${details.authid} (${details.authrole})`);
  showWriteControls(details.authrole === "writer");
  clearError();
  // Right after a node starts, the component may not have registered yet: wait for it.
  for (;;) {
    try {
      state.status = await session.call(uri("status"));
      break;
    } catch (err) {
      if (session !== state.session) return;
      showError(err);
      if (!isMissing(err)) return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  clearError();
  state.tables = state.status.tables;
  const select = $("#table-select");
  const previous = state.table && state.table.name;
  select.replaceChildren(...state.tables.map((t) => element("option", { value: t.name, textContent: t.name })));
  select.disabled = false;
  $("#store-button").disabled = false;
  $("#export").disabled = false;
  if (!$("#store").hidden) renderStore(state.status);
  const keep = state.tables.find((t) => t.name === previous) || state.tables[0];
  if (keep) {
    select.value = keep.name;
    // On a reconnect keep the page the user was on; on a new login start at the first page.
    await selectTable(keep.name, keep.name === previous);
  }
}

function closed(connection, reason, details) {
  if (connection !== state.connection) return true;
  state.session = null;
  state.subscriptions = [];
  if (state.loggingOut) {
    setConn("disconnected", "disconnected");
    return true;
  }
  if (details.will_retry) {
    setConn("reconnecting", `reconnecting in ${Math.max(1, Math.round(details.retry_delay))} s…`);
    return false;
  }
  if (details.reason && REFUSED_LOGIN.test(details.reason)) {
    showError({ error: details.reason, args: [details.message || "login refused"] });
    logout();
    setConn("disconnected", "login refused");
    return true;
  }
  // The router ended the session (e.g. the node is restarting); autobahn-js does not retry
  // after a goodbye, so reopen ourselves.
  setConn("reconnecting", "reconnecting…");
  state.reopenTimer = setTimeout(() => {
    if (connection === state.connection) {
      try { connection.open(); } catch (err) { /* a retry is already under way */ }
    }
  }, 2000);
  return true;
}

function showWriteControls(visible) {
  for (const el of document.querySelectorAll(".write-only")) el.hidden = !visible;
}

// ---- the store panel ---------------------------------------------------------------------------

function toggleStore(open = $("#store").hidden) {
  $("#store").hidden = !open;
  $("#store-button").setAttribute("aria-pressed", String(open));
  clearInterval(state.storeTimer);
  state.storeTimer = null;
  if (!open) return;
  refreshStore();
  state.storeTimer = setInterval(refreshStore, STORE_REFRESH_MS);  // live while it is open
}

async function refreshStore() {
  if (!state.session) return;
  try {
    state.status = await call("status", [], {}, true);
  } catch (err) {
    $("#store-updated").textContent = `not refreshed: ${describe(err).uri}`;
    return;
  }
  renderStore(state.status);
}

function renderStore(status) {
  const etcd = status.etcd || {};
  $("#store-version").textContent = etcd.version || "—";
  showRevision(etcd.revision);
  const inUse = etcd.db_size_in_use ? ` (${formatBytes(etcd.db_size_in_use)} in use)` : "";
  $("#store-size").textContent = etcd.db_size === undefined ? "—" : formatBytes(etcd.db_size) + inUse;
  const meter = $("#store-quota-meter");
  if (etcd.quota_bytes && etcd.db_size !== undefined) {
    const used = etcd.db_size / etcd.quota_bytes;
    $("#store-quota").textContent = `${(used * 100).toFixed(used < 0.01 ? 2 : 1)} % of ${formatBytes(etcd.quota_bytes)}`;
    meter.value = used;
    meter.hidden = false;
  } else {
    $("#store-quota").textContent = "unknown";
    meter.hidden = true;
  }
  const members = (etcd.members || []).map((m) => {
    const roles = [];
    if (m.id === etcd.leader) roles.push(element("span", { className: "badge leader", textContent: "leader" }));
    if (m.id === etcd.member) roles.push(element("span", { className: "badge", textContent: "answering" }));
    if (m.is_learner) roles.push(element("span", { className: "badge", textContent: "learner" }));
    const tr = element("tr", {},
      element("td", { textContent: m.name || "(unstarted)" }),
      element("td", { className: "mono", textContent: BigInt(m.id).toString(16) }),
      element("td", { className: "mono", textContent: (m.client_urls || []).join(" ") }),
      element("td", {}, ...roles));
    tr.dataset.id = m.id;
    return tr;
  });
  if (!members.length) {
    members.push(element("tr", {}, element("td", { colSpan: 4, className: "muted",
      textContent: "this component does not report members" })));
  }
  $("#store-members tbody").replaceChildren(...members);
  $("#store-tables tbody").replaceChildren(...status.tables.map((t) => {
    const tr = element("tr", {},
      element("td", { textContent: t.name }),
      element("td", { className: "mono", textContent: String(t.slot) }),
      element("td", { textContent: `${t.key} / ${t.value}` }),
      element("td", { className: t.publisher ? "mono" : "muted", textContent: t.publisher
        || (t.publisher === null ? "nobody (no subscribers)" : "—") }));
    tr.dataset.table = t.name;
    return tr;
  }));
  $("#store-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function showRevision(revision) {
  if (revision === undefined) return;
  const shown = Number($("#store-revision").textContent) || 0;
  if (revision > shown) $("#store-revision").textContent = String(revision);
}

// ---- tables: describe, columns ---------------------------------------------------------------

// The table's typed description, or a plain one when the component predates `describe`.
async function describeTable(table) {
  if (table.described !== undefined) return table.described;
  if ("indexes" in table || "schema" in table) {
    table.described = table;  // status already lists the description
    return table;
  }
  try {
    table.described = await call(`${table.name}.describe`, [], {}, true);
  } catch (err) {
    table.described = null;
    if (!isMissing(err) && err.error !== "wamp.error.not_authorized") showError(err);
  }
  return table.described;
}

function columnsKey(table) {
  return `etcd-wamp.columns.${state.prefix}.${table.name}`;
}

function storedColumns(table) {
  try {
    const stored = JSON.parse(localStorage.getItem(columnsKey(table)));
    return Array.isArray(stored) ? stored : null;
  } catch (err) {
    return null;
  }
}

function isRecord(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Uint8Array);
}

// The top-level fields seen on this page (and in the schema), in order of appearance.
function learnFields(rows) {
  const seen = new Set(state.fields);
  const schema = state.table.described && state.table.described.schema;
  for (const name of Object.keys((schema && schema.properties) || {})) seen.add(name);
  for (const row of rows) if (isRecord(row.value)) for (const name of Object.keys(row.value)) seen.add(name);
  state.fields = [...seen];
  if (!state.columns.length) {
    // Not chosen yet: the first few fields, or the whole value when there are none.
    state.columns = state.fields.length ? state.fields.slice(0, 4) : [WHOLE_VALUE];
  }
  renderColumnMenu();
}

function renderColumnMenu() {
  const names = [WHOLE_VALUE, ...state.fields, ...state.columns.filter((c) => c !== WHOLE_VALUE && !state.fields.includes(c))];
  $("#column-list").replaceChildren(...names.map((name) => {
    const box = element("input", { type: "checkbox", checked: state.columns.includes(name), value: name });
    box.addEventListener("change", () => {
      const chosen = names.filter((n) => n === name ? box.checked : state.columns.includes(n));
      state.columns = chosen.length ? chosen : [WHOLE_VALUE];
      localStorage.setItem(columnsKey(state.table), JSON.stringify(state.columns));
      if (state.sort && !state.columns.includes(state.sort.field)) state.sort = null;
      renderRows();
    });
    return element("label", {}, box, ` ${name === WHOLE_VALUE ? "whole value" : name}`);
  }));
}

function renderHead() {
  const key = element("th", { className: "key sortable", textContent: "key",
    title: "sort every page by key (etcd's order)" });
  key.dataset.column = "key";
  key.setAttribute("aria-sort", state.sort ? "none" : (state.reverse ? "descending" : "ascending"));
  key.addEventListener("click", () => sortByKey());
  const cells = state.columns.map((name) => {
    const th = element("th", { className: "sortable", textContent: name === WHOLE_VALUE ? "value" : name,
      title: "sort this page by this field" });
    th.dataset.column = name;
    th.setAttribute("aria-sort", state.sort && state.sort.field === name
      ? (state.sort.descending ? "descending" : "ascending") : "none");
    th.addEventListener("click", () => sortByField(name));
    return th;
  });
  $("#rows thead").replaceChildren(element("tr", {}, key, ...cells));
  $("#rows").style.setProperty("--columns", String(state.columns.length));
  const note = $("#sort-note");
  if (state.sort) {
    const label = state.sort.field === WHOLE_VALUE ? "value" : state.sort.field;
    note.textContent = `Sorted by ${label} within this page only: etcd keeps rows in key order, ` +
      `so other pages are not part of this sort. Click "key" to go back to key order.`;
  } else {
    note.textContent = state.reverse ? "Key order, descending (from etcd, across all pages)." : "";
  }
  note.hidden = !note.textContent;
}

// Key order comes from etcd: reversing it re-reads from the other end, across every page.
function sortByKey() {
  if (state.lookup) return;
  if (state.sort) state.sort = null;
  else state.reverse = !state.reverse;
  state.cursor = null;
  state.pages = [];
  loadPage();
}

// Any other column sorts the rows of this page only (there is no index to read them in order).
function sortByField(field) {
  state.sort = state.sort && state.sort.field === field
    ? { field, descending: !state.sort.descending } : { field, descending: false };
  renderRows();
}

function cellValue(row, column) {
  if (column === WHOLE_VALUE) return row.value;
  return isRecord(row.value) ? row.value[column] : undefined;
}

function compareCells(a, b) {
  if (a === undefined || b === undefined) return (a === undefined) - (b === undefined);
  if (typeof a === "number" && typeof b === "number") return a - b;
  const text = (v) => (typeof v === "string" ? v : showJson(v));
  return text(a).localeCompare(text(b), undefined, { numeric: true });
}

function shownRows() {
  if (!state.sort) return state.rows;
  const { field, descending } = state.sort;
  const sign = descending ? -1 : 1;
  return [...state.rows].sort((a, b) => {
    const ca = cellValue(a, field), cb = cellValue(b, field);
    if (ca === undefined || cb === undefined) return compareCells(ca, cb);  // missing ones last
    return sign * compareCells(ca, cb) || keyOrder(a.key, b.key);
  });
}

// ---- table, paging and live updates ------------------------------------------------------------

async function selectTable(name, keepPage = false) {
  const table = state.tables.find((t) => t.name === name);
  const changed = !state.table || state.table.name !== name;
  state.table = table;
  if (changed || !keepPage) {
    state.cursor = null;
    state.pages = [];
    state.reverse = false;
    state.sort = null;
    state.lookup = null;
    state.total = null;
    if (changed) {
      state.filter = null;
      $("#prefix").value = "";
      state.fields = [];
      state.columns = storedColumns(table) || [];
    }
    closeDetail();
  }
  const etcd = state.status.etcd;
  $("#table-info").textContent =
    `${table.key} keys · ${table.value} values · etcd ${etcd.version}`;
  $("#prefix").placeholder = ["string", "binary"].includes(table.key)
    ? `key prefix${table.key === "binary" ? " (hex)" : ""}` : "key prefix (string/binary keys only)";
  await subscribe(table.name);
  const described = await describeTable(table);
  if (state.table !== table) return;
  renderLookup(described);
  await loadPage(true);
}

async function subscribe(name) {
  const session = state.session;
  for (const subscription of state.subscriptions.splice(0)) {
    try {
      session.unsubscribe(subscription).then(null, () => {});
    } catch (err) { /* the session is gone, and the subscription with it */ }
  }
  const mine = (handler) => (args, kwargs) => {
    if (session === state.session && state.table && state.table.name === name) handler(kwargs || {});
  };
  try {
    state.subscriptions.push(await session.subscribe(uri(`${name}.on_change`), mine((change) => {
      showRevision(change.revision);
      if (state.loading) state.queued.push(change);  // applied once the page's scan is done
      else applyChange(change);
    })));
    state.subscriptions.push(await session.subscribe(uri(`${name}.on_resync`), mine(() => {
      loadPage(true);
    })));
  } catch (err) {
    showError(err);
  }
}

// The scan of the current page: one more row than shown tells whether a next page exists.
// Paging is by cursor (the first key of the page forward, the last one shown backward), so no
// page re-reads the rows before it.
function pageScanArgs() {
  const kwargs = { limit: state.pageSize + 1 };
  if (state.reverse) kwargs.reverse = true;
  if (state.cursor) Object.assign(kwargs, state.cursor);
  if (state.filter !== null) kwargs.prefix = state.filter;
  return kwargs;
}

async function loadPage(recount = false) {
  if (!state.session || !state.table) return;
  if (state.lookup) return runLookup();
  const token = ++state.loadToken;
  cancelScan();
  const table = state.table;
  const kwargs = pageScanArgs();
  state.scans.push({ table: table.name, ...kwargs });
  state.loading = true;
  state.queued = [];
  state.rows = [];
  state.nextStart = null;
  renderRows("loading…");
  $("#rows").dataset.state = "loading";
  const started = performance.now();
  try {
    await scan(`${table.name}.scan`, kwargs, (chunk) => {
      if (token !== state.loadToken) return;
      for (const [key, value] of chunk) {
        if (state.rows.length < state.pageSize) state.rows.push({ key, value });
        else if (state.nextStart === null) state.nextStart = key;
      }
    });
    if (token !== state.loadToken) return;
    state.loading = false;
    for (const change of state.queued.splice(0)) applyChange(change, false);
    learnFields(state.rows);
    renderRows();
    state.pageMs = performance.now() - started;
    $("#rows").dataset.state = "ready";
    renderPager();
    if (recount || state.total === null) await refreshCount(token);
  } catch (err) {
    if (token !== state.loadToken) return;
    state.loading = false;
    state.total = null;
    showError(err);
    renderRows(`${describe(err).uri}`);
    $("#rows").dataset.state = "error";
  }
  renderPager();
}

async function refreshCount(token = state.loadToken) {
  if (!state.session || !state.table || state.lookup) return;
  try {
    const total = await state.session.call(uri(`${state.table.name}.count`), [],
      state.filter === null ? {} : { prefix: state.filter });
    if (token === state.loadToken) state.total = total;
  } catch (err) {
    state.total = null;
  }
  renderPager();
}

function emptyState(placeholder) {
  const td = element("td", { colSpan: 1 + state.columns.length });
  if (placeholder !== "no rows") {
    td.textContent = placeholder;
  } else if (state.lookup) {
    td.textContent = `no row has ${state.lookup.index} = ${showJson(state.lookup.value)}`;
  } else if (state.filter !== null) {
    td.textContent = "no rows with this prefix";
  } else if (state.cursor) {
    td.textContent = "no more rows";
  } else {
    td.textContent = `The table ${state.table ? state.table.name : ""} is empty.`;
    if (state.role === "writer") {
      const create = element("button", { type: "button", textContent: "Create the first row" });
      create.addEventListener("click", () => openEditor("create"));
      td.append(create);
    } else {
      td.append(" Rows written by anyone show up here as they arrive.");
    }
  }
  return element("tr", { className: "empty" }, td);
}

function renderRows(placeholder = "no rows") {
  renderHead();
  const body = $("#rows tbody");
  const trs = [];
  for (const row of shownRows()) {
    trs.push(rowElement(row));
    if (row.expanded) trs.push(expandedElement(row));
  }
  body.replaceChildren(...trs);
  if (!state.rows.length) body.append(emptyState(state.table || placeholder !== "no rows" ? placeholder : "log in to browse the tables"));
}

function rowElement(row) {
  const tr = document.createElement("tr");
  tr.dataset.key = keyText(row.key);
  const tools = element("span", { className: "row-tools" });
  const copy = element("button", { type: "button", className: "copy-key", textContent: "copy", title: "copy the key" });
  copy.addEventListener("click", (event) => { event.stopPropagation(); copyText(keyText(row.key), copy); });
  const expand = element("button", { type: "button", className: "expand", textContent: row.expanded ? "▾" : "▸",
    title: "show the whole value here" });
  expand.addEventListener("click", (event) => { event.stopPropagation(); toggleExpanded(row); });
  tools.append(copy, expand);
  const key = element("td", { className: "key", title: keyText(row.key) }, keyText(row.key), tools);
  tr.append(key);
  row.tr = tr;
  setRowValue(row, row.value);
  if (state.selected && compareKeys(state.selected.key, row.key) === 0) tr.classList.add("selected");
  tr.tabIndex = 0;  // rows open from the keyboard too
  tr.addEventListener("click", () => openViewer(row.key));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target === tr) openViewer(row.key);
  });
  return tr;
}

function expandedElement(row) {
  const tr = element("tr", { className: "expanded-value" },
    element("td", { colSpan: 1 + state.columns.length, textContent: showJson(row.value, 2) }));
  tr.dataset.valueOf = keyText(row.key);
  row.expandedTr = tr;
  return tr;
}

function toggleExpanded(row) {
  row.expanded = !row.expanded;
  if (row.expanded) row.tr.after(expandedElement(row));
  else if (row.expandedTr) row.expandedTr.remove();
  row.tr.querySelector("button.expand").textContent = row.expanded ? "▾" : "▸";
}

// The row's value cells: each chosen field (or the whole value), cut short, whole on hover.
function setRowValue(row, value) {
  row.value = value;
  const cells = state.columns.map((column) => {
    const v = cellValue(row, column);
    const td = element("td");
    td.dataset.column = column;
    if (v === undefined) {
      td.className = "missing";
      td.textContent = "—";
      return td;
    }
    const text = typeof v === "string" && column !== WHOLE_VALUE ? v : showJson(v);
    td.textContent = text.length > 240 ? `${text.slice(0, 240)}…` : text;
    td.title = text.length > 4000 ? `${text.slice(0, 4000)}…` : text;
    return td;
  });
  while (row.tr.cells.length > 1) row.tr.cells[1].remove();
  row.tr.append(...cells);
  if (row.expanded && row.expandedTr) row.expandedTr.cells[0].textContent = showJson(value, 2);
}

function flash(tr, kind) {
  tr.classList.remove("flash-put", "flash-new", "flash-delete");
  void tr.offsetWidth;  // restart the animation if the row flashes again
  tr.classList.add(kind);
  if (kind !== "flash-delete") setTimeout(() => tr.classList.remove(kind), FLASH_MS);
}

// Does a key belong between this page's bounds (and the next page's first key)?
function onThisPage(key) {
  if (state.lookup) return false;
  if (state.filter !== null && !startsWith(key, state.filter)) return false;
  const cursor = state.cursor || {};
  if (cursor.from_key !== undefined && compareKeys(key, cursor.from_key) < 0) return false;
  if (cursor.to_key !== undefined && compareKeys(key, cursor.to_key) >= 0) return false;
  return state.nextStart === null || keyOrder(key, state.nextStart) < 0;
}

// An on_change event: update, insert or remove the row in place and flash it.
function applyChange(change, animate = true) {
  const { type, key, value, revision } = change;
  const index = state.rows.findIndex((r) => compareKeys(r.key, key) === 0);
  if (type === "delete") {
    if (index >= 0) {
      const [row] = state.rows.splice(index, 1);
      if (row.expandedTr) row.expandedTr.remove();
      if (animate) {
        flash(row.tr, "flash-delete");
        setTimeout(() => { row.tr.remove(); if (!state.rows.length) renderRows(); }, 900);
      } else {
        row.tr.remove();
      }
    }
  } else if (index >= 0) {
    if (isRecord(value) && Object.keys(value).some((f) => !state.fields.includes(f))) learnFields([{ value }]);
    setRowValue(state.rows[index], value);
    if (state.sort) renderRows();
    if (animate) flash(state.rows[index].tr, "flash-put");
  } else if (onThisPage(key)) {
    let at = state.rows.findIndex((r) => keyOrder(r.key, key) > 0);
    if (at < 0) at = state.rows.length;
    const row = { key, value };
    state.rows.splice(at, 0, row);
    if (isRecord(value) && Object.keys(value).some((f) => !state.fields.includes(f))) learnFields([row]);
    if (state.rows.length > state.pageSize) {  // the page is full: the last row moves on
      const last = state.rows.pop();
      state.nextStart = last.key;
    }
    renderRows();
    if (animate && row.tr) flash(row.tr, "flash-new");
  }
  if (state.selected && compareKeys(state.selected.key, key) === 0) selectedChanged(type, value, revision);
  if (animate) {
    clearTimeout(state.countTimer);
    state.countTimer = setTimeout(() => refreshCount(), 300);
  }
}

function renderPager() {
  const lookup = state.lookup !== null;
  $("#prev").disabled = lookup || !state.pages.length;
  $("#next").disabled = lookup || state.nextStart === null || state.loading;
  if (lookup) {
    $("#page-info").textContent = `${state.rows.length} row${state.rows.length === 1 ? "" : "s"} ` +
      `with ${state.lookup.index} = ${showJson(state.lookup.value)} (index lookup)`;
    return;
  }
  const page = `page ${state.pages.length + 1}`;
  const total = state.total === null ? "" : ` · ${state.total} row${state.total === 1 ? "" : "s"}` +
    (state.filter === null ? " in table" : " with this prefix");
  $("#page-info").textContent = page + total;
}

function nextPage() {
  if (state.nextStart === null || state.lookup || state.loading) return;
  state.pages.push(state.cursor);
  // Forward the next page starts at the first row not shown; backward it ends before the last
  // row shown (to_key is exclusive), which puts that first row not shown at its top.
  state.cursor = state.reverse
    ? { to_key: state.rows[state.rows.length - 1].key } : { from_key: state.nextStart };
  loadPage();
}

function previousPage() {
  if (!state.pages.length || state.lookup) return;
  state.cursor = state.pages.pop();
  loadPage();
}

// ---- lookup by index ---------------------------------------------------------------------------

function renderLookup(described) {
  const indexes = (described && described.indexes) || [];
  $("#lookup").hidden = !indexes.length;
  $("#index-select").replaceChildren(...indexes.map((index) => element("option", {
    value: index.name, textContent: `${index.name}${index.unique ? " (unique)" : ""}`,
  })));
  $("#index-clear").hidden = !state.lookup;
}

// What the user typed as an index value: JSON when it parses (42, true, "x"), else a string.
function lookupValue(text) {
  try {
    return reviveBytes(JSON.parse(text));
  } catch (err) {
    return text;
  }
}

async function runLookup() {
  const { index, value } = state.lookup;
  const described = state.table.described || {};
  const info = (described.indexes || []).find((i) => i.name === index);
  const token = ++state.loadToken;
  cancelScan();
  state.loading = true;
  state.rows = [];
  state.nextStart = null;
  $("#index-clear").hidden = false;
  renderRows("looking up…");
  $("#rows").dataset.state = "loading";
  try {
    let rows;
    if (info && info.unique) {
      const found = await call(`${state.table.name}.${index}.get`, [value]);
      rows = found === null ? [] : [{ key: found[0], value: found[1] }];
    } else {
      // A non-unique index: the entries from this value on; the ones equal to it match.
      const found = await call(`${state.table.name}.${index}.scan`, [],
        { from_value: value, limit: 1000 });
      const wanted = showJson(value);
      rows = found.filter((entry) => showJson(entry[0]) === wanted)
        .map((entry) => ({ key: entry[1], value: entry[2] }));
    }
    if (token !== state.loadToken) return;
    state.rows = rows;
    state.loading = false;
    learnFields(rows);
    renderRows();
    $("#rows").dataset.state = "ready";
  } catch (err) {
    if (token !== state.loadToken) return;
    state.loading = false;
    renderRows(describe(err).uri);
    $("#rows").dataset.state = "error";
  }
  renderPager();
}

// ---- export as JSON Lines ------------------------------------------------------------------

// Every row of the table (or of the filter), read in batches by cursor, as a .jsonl download.
async function exportRows() {
  if (!state.session || !state.table || state.exporting) return;
  const table = state.table;
  const filter = state.filter;
  const job = { cancelled: false, rows: 0 };
  state.exporting = job;
  const started = performance.now();
  $("#export-progress").hidden = false;
  $("#export").disabled = true;
  const meter = $("#export-meter");
  const text = $("#export-text");
  let total = null;
  try {
    total = await call(`${table.name}.count`, [], filter === null ? {} : { prefix: filter });
  } catch (err) { /* the progress shows rows without a total */ }
  const show = () => {
    if (total) meter.value = job.rows / total;
    text.textContent = `${job.rows}${total === null ? "" : ` of ${total}`} rows`;
  };
  const lines = [];
  let from = null;
  try {
    for (;;) {
      const kwargs = { limit: EXPORT_BATCH + (from === null ? 0 : 1) };
      if (filter !== null) kwargs.prefix = filter;
      if (from !== null) kwargs.from_key = from;
      let got = 0;
      await scan(`${table.name}.scan`, kwargs, (chunk) => {
        for (const [key, value] of chunk) {
          got++;
          if (from !== null && compareKeys(key, from) === 0) continue;  // from_key is inclusive
          lines.push(showJson({ key, value }) + "\n");
          from = key;
          job.rows++;
        }
        show();
      }, "exportScan");
      if (job.cancelled || got < kwargs.limit) break;
    }
  } catch (err) {
    if (!job.cancelled) showError(err);
    job.cancelled = true;
  } finally {
    state.exporting = null;
    $("#export").disabled = false;
  }
  if (job.cancelled) {
    text.textContent = `export cancelled after ${job.rows} rows`;
    return;
  }
  show();
  meter.value = 1;
  const blob = new Blob(lines, { type: "application/x-ndjson" });
  const name = `${table.name}${filter === null ? "" : `-${keyText(filter)}`}.jsonl`;
  const link = element("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  state.lastExport = { name, rows: job.rows, bytes: blob.size, ms: performance.now() - started };
  text.textContent = `${job.rows} rows exported to ${name} (${formatBytes(blob.size)})`;
}

function cancelExport() {
  if (state.exporting) {
    state.exporting.cancelled = true;
    cancelScan("exportScan");
  } else {
    $("#export-progress").hidden = true;
  }
}

// ---- viewer ------------------------------------------------------------------------------------

function showPane(name) {
  $("#detail").hidden = false;
  for (const pane of ["viewer", "history", "editor"]) $(`#${pane}`).hidden = pane !== name;
}

function closeDetail() {
  state.selected = null;
  state.editing = null;
  $("#detail").hidden = true;
  document.querySelectorAll("#rows tr.selected").forEach((tr) => tr.classList.remove("selected"));
}

function hasHistory() {
  return Boolean(state.table && state.table.described);
}

async function openViewer(key) {
  const table = state.table;
  state.selected = { key, loading: true };
  state.editing = null;
  disarmDelete();
  document.querySelectorAll("#rows tbody tr[data-key]").forEach((tr) =>
    tr.classList.toggle("selected", tr.dataset.key === keyText(key)));
  showPane("viewer");
  $("#viewer-key").textContent = keyText(key);
  $("#viewer-meta").textContent = "loading…";
  $("#viewer-notice").hidden = true;
  $("#viewer-value").textContent = "";
  $("#viewer-bytes").hidden = true;
  $("#viewer").dataset.state = "loading";
  let found;
  try {
    found = await call(`${table.name}.get`, [key], { meta: true });
  } catch (err) {
    $("#viewer-meta").textContent = "could not load the row";
    $("#viewer").dataset.state = "error";
    return;
  }
  if (!state.selected || compareKeys(state.selected.key, key) !== 0 || state.table !== table) return;
  if (found === null) {
    state.selected = { key, missing: true };
    $("#viewer-meta").textContent = "no such row (deleted?)";
  } else {
    state.selected = { key, ...found };
    renderViewer();
  }
  renderViewerActions();
  $("#viewer").dataset.state = "ready";
}

function renderViewerActions() {
  const row = state.selected;
  const writer = state.role === "writer";
  $("#edit").hidden = !writer || row.missing;
  $("#delete").hidden = !writer || row.missing;
  $("#copy-value").hidden = row.missing && row.value === undefined;
  $("#show-history").hidden = !hasHistory();
}

function renderViewer() {
  const row = state.selected;
  $("#viewer-meta").textContent =
    `revision ${row.revision} · version ${row.version} · created at revision ${row.created}`;
  $("#viewer-value").textContent = showJson(row.value, 2);
  const bytes = $("#viewer-bytes");
  bytes.hidden = !(row.value instanceof Uint8Array);
  if (!bytes.hidden) bytes.textContent = `${row.value.length} bytes · base64 ${bytesToBase64(row.value)}`;
}

// The open row changed (someone else, or us): show it, and warn an open editor.
function selectedChanged(type, value, revision) {
  const row = state.selected;
  if (row.loading || (row.revision !== undefined && revision <= row.revision && !row.missing)) return;
  const notice = $("#viewer-notice");
  if (row.missing && type !== "delete") {
    if (!state.editing && $("#history").hidden) openViewer(row.key);  // the row is back
    return;
  }
  if (type === "delete") {
    notice.textContent = `deleted at revision ${revision}`;
    // The last value stays on screen (greyed by the notice), so it can still be copied or
    // restored from the history.
    Object.assign(row, { missing: true, revision: undefined, deletedAt: revision });
    $("#viewer-meta").textContent = `no such row any more (deleted at revision ${revision})`;
    renderViewerActions();
  } else {
    notice.textContent = `changed at revision ${revision}`;
    if (!state.editing) {
      // The viewer follows the row; an editor keeps its revision so saving reports the conflict.
      Object.assign(row, { value, revision, version: (row.version || 0) + 1 });
      renderViewer();
    }
  }
  notice.hidden = false;
  if (!$("#history").hidden) loadHistory();
  if (state.editing && state.editing.mode === "edit") {
    $("#editor-error").textContent =
      `This row was ${type === "delete" ? "deleted" : "changed"} at revision ${revision} since you ` +
      `opened it; saving will be refused as a conflict.`;
    $("#editor-error").dataset.uri = "";
    $("#editor-error").hidden = false;
  }
}

// ---- history -----------------------------------------------------------------------------------

async function loadHistory() {
  const row = state.selected;
  const table = state.table;
  showPane("history");
  $("#history-key").textContent = keyText(row.key);
  $("#history").dataset.state = "loading";
  $("#history-meta").textContent = "loading…";
  let found;
  try {
    found = await call(`${table.name}.history`, [row.key], { limit: 20 });
  } catch (err) {
    $("#history-meta").textContent = `no history: ${describe(err).uri}`;
    $("#history").dataset.state = "error";
    return;
  }
  if (state.selected !== row || state.table !== table) return;
  state.history = found;
  const versions = found.versions;
  const current = versions.length && versions[0].type === "put" ? versions[0].revision : 0;
  const more = found.compacted ? ` · older versions were compacted (at revision ${found.compact_revision})` : "";
  $("#history-meta").textContent = `${versions.length} version${versions.length === 1 ? "" : "s"}, newest first${more}`;
  $("#history-list").replaceChildren(...versions.map((version, i) => {
    const what = version.type === "delete"
      ? `revision ${version.revision} · deleted`
      : `revision ${version.revision} · version ${version.version}`;
    const li = element("li", { className: version.type }, element("span", { className: "what", textContent: what }));
    li.dataset.revision = String(version.revision);
    if (i === 0) li.append(element("span", { className: "badge", textContent: version.type === "delete" ? "now deleted" : "current" }));
    if (state.role === "writer" && version.type === "put" && version.revision !== current) {
      const restore = element("button", { type: "button", className: "restore", textContent: "Restore this version" });
      restore.addEventListener("click", () => restoreVersion(version, current, restore));
      li.append(restore);
    }
    li.addEventListener("click", (event) => {
      if (event.target.tagName === "BUTTON") return;
      const older = versions[i + 1];
      $("#diff-to").value = String(version.revision);
      if (older) $("#diff-from").value = String(older.revision);
      renderDiff();
    });
    return li;
  }));
  const options = () => versions.map((v) => element("option", { value: String(v.revision),
    textContent: `revision ${v.revision}${v.type === "delete" ? " (deleted)" : ""}` }));
  $("#diff-from").replaceChildren(...options());
  $("#diff-to").replaceChildren(...options());
  if (versions.length) {
    $("#diff-to").value = String(versions[0].revision);
    $("#diff-from").value = String(versions[Math.min(1, versions.length - 1)].revision);
  }
  renderDiff();
  $("#history").dataset.state = "ready";
}

function versionText(version) {
  return version.type === "delete" ? "(deleted)" : showJson(version.value, 2);
}

function renderDiff() {
  const versions = (state.history && state.history.versions) || [];
  const from = versions.find((v) => String(v.revision) === $("#diff-from").value);
  const to = versions.find((v) => String(v.revision) === $("#diff-to").value);
  const out = $("#diff");
  if (!from || !to) {
    out.textContent = "no versions to compare";
    return;
  }
  out.replaceChildren(...diffLines(versionText(from), versionText(to)).map(({ op, line }) =>
    element("span", { className: op === "+" ? "add" : op === "-" ? "del" : "same",
      textContent: `${op} ${line}\n` })));
}

// What the last restore did; stays while the history reloads around it.
function historyResult(text) {
  $("#history-result").textContent = text;
  $("#history-result").hidden = false;
}

// Writes an old value back, only if the row is still at the revision the history showed.
async function restoreVersion(version, current, button) {
  const row = state.selected;
  button.disabled = true;
  try {
    const revision = await call(`${state.table.name}.put`, [row.key, version.value], { if_revision: current });
    historyResult(`restored revision ${version.revision} as revision ${revision}`);
    Object.assign(row, { value: version.value, revision, missing: false });
    await loadHistory();
  } catch (err) {
    const conflict = err.error === `${state.prefix}.error.conflict`;
    historyResult(conflict
      ? "not restored: the row changed since this history was read (it is reloaded now)"
      : `not restored: ${describe(err).uri}`);
    if (conflict) loadHistory();
  } finally {
    button.disabled = false;
  }
}

// ---- editor ------------------------------------------------------------------------------------

function tableSchema() {
  const described = state.table && state.table.described;
  return (described && described.schema) || null;
}

// A form needs an object schema with properties; anything else is edited as JSON.
function formSchema(schema) {
  return schema && schema.properties && (schema.type === undefined || schema.type === "object") ? schema : null;
}

function resolveRef(schema, root) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/")) {
    let target = root;
    for (const part of schema.$ref.slice(2).split("/")) target = target && target[part];
    return target || {};
  }
  return schema || {};
}

function openEditor(mode) {
  const table = state.table;
  const editing = { mode, table: table.name, form: null };
  if (mode === "edit") {
    Object.assign(editing, { key: state.selected.key, revision: state.selected.revision });
  }
  state.editing = editing;
  disarmDelete();
  showPane("editor");
  $("#editor-error").hidden = true;
  $("#editor-title").textContent = mode === "edit"
    ? `edit (at revision ${editing.revision})` : `new row in ${table.name}`;
  const keyInput = $("#editor-key");
  keyInput.disabled = mode === "edit";
  keyInput.value = mode === "edit" ? keyText(editing.key) : (table.key === "uuid" ? newUuid() : "");
  keyInput.placeholder = table.key === "binary" ? "hex" : table.key === "timestamp" ? "nanoseconds since 1970" : table.key;
  const helper = $("#new-key");
  helper.hidden = mode === "edit" || !["uuid", "oid", "timestamp"].includes(table.key);
  helper.textContent = { uuid: "generate", oid: "next free", timestamp: "now" }[table.key] || "";
  const value = mode === "edit" ? state.selected.value : {};
  $("#editor-value").value = showJson(value, 2);
  const schema = formSchema(tableSchema());
  $("#editor-modes").hidden = !tableSchema();
  $("#mode-form").hidden = !schema;
  setEditorMode(schema && isRecord(value) ? "form" : "json", value);
  const firstField = $("#editor-form [name]");
  (mode === "create" ? keyInput : editing.view === "form" && firstField ? firstField : $("#editor-value")).focus();
}

async function newKey() {
  const table = state.table;
  const input = $("#editor-key");
  if (table.key === "uuid") input.value = newUuid();
  else if (table.key === "timestamp") input.value = String(nowNanoseconds());
  else if (table.key === "oid") {
    // One past the highest oid in use: the last key in etcd's (big-endian) order.
    const last = await call(`${table.name}.scan`, [], { limit: 1, reverse: true, keys_only: true });
    input.value = String(last.length ? Number(last[0]) + 1 : 1);
  }
  input.dispatchEvent(new Event("input"));
}

function setEditorMode(mode, value) {
  const editing = state.editing;
  if (mode === "form") {
    if (value === undefined) {
      try {
        value = parseJson($("#editor-value").value);
      } catch (err) {
        liveCheck();
        return;  // fix the JSON first
      }
      if (!isRecord(value)) return;
    }
    buildForm(formSchema(tableSchema()), value);
  } else if (editing.form) {
    const { value: current } = formValue();
    $("#editor-value").value = showJson(current, 2);
  }
  editing.view = mode;
  $("#editor-form").hidden = mode !== "form";
  $("#editor-value-label").hidden = mode === "form";
  $("#mode-form").setAttribute("aria-pressed", String(mode === "form"));
  $("#mode-json").setAttribute("aria-pressed", String(mode === "json"));
  liveCheck();
}

// One field per schema property; fields the schema does not name are kept as they are.
function buildForm(schema, value) {
  const required = new Set(schema.required || []);
  const fields = [];
  const container = $("#editor-form");
  for (const [name, raw] of Object.entries(schema.properties)) {
    const prop = resolveRef(raw, schema);
    const type = Array.isArray(prop.type) ? prop.type.find((t) => t !== "null") : prop.type;
    const present = name in value;
    let control, kind;
    if (prop.enum) {
      kind = "enum";
      control = element("select", {}, element("option", { value: "", textContent: "—" }),
        ...prop.enum.map((e) => element("option", { value: JSON.stringify(e), textContent: JSON.stringify(e) })));
      control.value = present ? JSON.stringify(value[name]) : "";
    } else if (type === "boolean") {
      kind = "boolean";
      control = element("input", { type: "checkbox", checked: value[name] === true });
    } else if (type === "integer" || type === "number") {
      kind = "number";
      control = element("input", { type: "text", inputMode: "decimal",
        value: present ? showJson(value[name]) : "" });
    } else if (type === "string") {
      kind = "string";
      control = element("input", { type: "text", value: present && typeof value[name] === "string" ? value[name] : "" });
    } else {
      kind = "json";
      control = element("textarea", { rows: 3, value: present ? showJson(value[name], 2) : "" });
    }
    control.name = name;
    control.spellcheck = false;
    control.addEventListener("input", liveCheck);
    control.addEventListener("change", liveCheck);
    const error = element("span", { className: "field-error" });
    const label = element("label", { className: "field" },
      element("span", { className: "name", textContent: `${name}${required.has(name) ? " *" : ""}${prop.description ? ` — ${prop.description}` : ""}` }),
      control, error);
    label.dataset.pointer = `/${name.replace(/~/g, "~0").replace(/\//g, "~1")}`;
    fields.push({ name, kind, control, error, label, required: required.has(name) });
  }
  const extra = Object.fromEntries(Object.entries(value).filter(([n]) => !(n in schema.properties)));
  const children = fields.map((f) => f.label);
  if (Object.keys(extra).length) {
    children.push(element("p", { className: "muted", textContent: `kept as they are: ${Object.keys(extra).join(", ")} (edit them as JSON)` }));
  }
  container.replaceChildren(...children);
  state.editing.form = { fields, extra };
}

// The form's value, and the fields whose text is not a value of their type.
function formValue() {
  const { fields, extra } = state.editing.form;
  const value = { ...extra };
  const problems = [];
  for (const field of fields) {
    const { control, kind, name } = field;
    if (kind === "boolean") { value[name] = control.checked; continue; }
    const text = control.value;
    if (text === "" && kind !== "string") continue;  // left empty: the property is absent
    if (kind === "string") {
      if (text !== "") value[name] = text;  // empty: absent (JSON view can store "")
    } else if (kind === "enum") {
      value[name] = JSON.parse(text);
    } else if (kind === "number") {
      const number = Number(text);
      if (text.trim() === "" || Number.isNaN(number)) problems.push({ pointer: field.label.dataset.pointer, message: "must be a number" });
      else value[name] = number;
    } else {
      try {
        value[name] = parseJson(text);
      } catch (err) {
        problems.push({ pointer: field.label.dataset.pointer, message: err.message });
      }
    }
  }
  return { value, problems };
}

// Checks the value as it is typed: JSON syntax always, the table's schema when it has one.
// Problems show next to their field (form) or as a list of JSON pointers (JSON), and Save waits.
function liveCheck() {
  const editing = state.editing;
  if (!editing) return null;
  const check = $("#editor-check");
  const schema = tableSchema();
  let value, problems = [];
  if (editing.view === "form") {
    ({ value, problems } = formValue());
  } else {
    try {
      value = parseJson($("#editor-value").value);
    } catch (err) {
      check.textContent = err.message.replace(/^not JSON: /, "JSON syntax error: ");
      check.className = "check bad";
      $("#editor-value").setAttribute("aria-invalid", "true");
      showProblems([]);
      $("#save").disabled = true;
      return null;
    }
  }
  if (schema && !problems.length) problems = validate(schema, value);
  $("#editor-value").setAttribute("aria-invalid", String(problems.length > 0));
  showProblems(problems);
  if (problems.length) {
    check.textContent = `${problems.length} problem${problems.length === 1 ? "" : "s"} with the table's schema`;
    check.className = "check bad";
  } else {
    check.textContent = schema ? "valid against the table's schema" : "valid JSON";
    check.className = "check ok";
  }
  $("#save").disabled = problems.length > 0;
  return problems.length ? null : value;
}

// Each problem next to the form field its pointer starts with; the rest in the list.
function showProblems(problems) {
  const form = state.editing && state.editing.view === "form" ? state.editing.form : null;
  const listed = [];
  if (form) for (const f of form.fields) { f.error.textContent = ""; f.control.removeAttribute("aria-invalid"); }
  for (const problem of problems) {
    const field = form && form.fields.find((f) => problem.pointer === f.label.dataset.pointer ||
      problem.pointer.startsWith(`${f.label.dataset.pointer}/`));
    if (field) {
      const inner = problem.pointer.slice(field.label.dataset.pointer.length);
      field.error.textContent += `${field.error.textContent ? "; " : ""}${inner ? `${inner}: ` : ""}${problem.message}`;
      field.control.setAttribute("aria-invalid", "true");
    } else {
      listed.push(problem);
    }
  }
  const list = $("#editor-problems");
  list.replaceChildren(...listed.map((p) => {
    const li = element("li", {}, element("code", { textContent: p.pointer || "/" }), ` ${p.message}`);
    li.dataset.pointer = p.pointer;
    return li;
  }));
  list.hidden = !listed.length;
}

// A refusal that names a JSON pointer (invalid_value) goes next to that field too.
function serverProblem(err) {
  const { message } = describe(err);
  const found = /(^|[\s'"`(])(\/[^\s'"`),:]*)/.exec(message);
  if (found) showProblems([{ pointer: found[2], message }]);
}

async function save() {
  const editing = state.editing;
  const table = state.tables.find((t) => t.name === editing.table);
  const errorBox = $("#editor-error");
  errorBox.hidden = true;
  let key, value;
  try {
    key = editing.mode === "edit" ? editing.key : parseKey($("#editor-key").value, table.key);
    if (editing.view === "form") {
      const built = formValue();
      if (built.problems.length) throw new LocalError("invalid_value", "fix the fields marked in red");
      value = built.value;
    } else {
      value = parseJson($("#editor-value").value);
    }
  } catch (err) {
    inlineError(errorBox, err);
    return;
  }
  // Edits only apply to the revision the editor opened; new rows only if the key is free.
  const ifRevision = editing.mode === "edit" ? editing.revision : 0;
  $("#save").disabled = true;
  try {
    await call(`${table.name}.put`, [key, value], { if_revision: ifRevision }, true);
  } catch (err) {
    inlineError(errorBox, err);
    if (err.error === `${state.prefix}.error.conflict`) {
      errorBox.append(document.createTextNode(editing.mode === "edit"
        ? " — someone changed this row since you opened it; your edit was not saved. Cancel to see the current value."
        : " — a row with this key already exists."));
    } else if (err.error === `${state.prefix}.error.invalid_value`) {
      serverProblem(err);
    }
    return;
  } finally {
    $("#save").disabled = false;
  }
  clearError();
  state.editing = null;
  await openViewer(key);
}

function disarmDelete() {
  const button = $("#delete");
  clearTimeout(state.disarmTimer);
  button.classList.remove("armed");
  button.textContent = "Delete";
}

// Two clicks delete: the first arms the button for a few seconds (no modal dialogs). The pane
// stays open afterwards and says at which revision the row went.
async function deleteSelected() {
  const button = $("#delete");
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Really delete?";
    state.disarmTimer = setTimeout(disarmDelete, 4000);
    return;
  }
  disarmDelete();
  const row = state.selected;
  try {
    await call(`${state.table.name}.delete`, [row.key], { if_revision: row.revision });
  } catch (err) {
    return;
  }
  if (state.selected !== row || row.missing) return;  // the event was quicker and said when
  Object.assign(row, { missing: true });
  $("#viewer-notice").textContent = "deleted";
  $("#viewer-notice").hidden = false;
  renderViewerActions();
}

// ---- keyboard ----------------------------------------------------------------------------------

function typing(target) {
  return target instanceof HTMLElement && (target.isContentEditable ||
    ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

// Arrows move through the rows, Enter opens one (on the row itself), "/" focuses the filter,
// Esc closes what is open (editor, history, pane, store panel).
function onKey(event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key === "Escape") {
    if ($("#columns").open) $("#columns").open = false;
    else if (state.editing) $("#cancel").click();
    else if (!$("#history").hidden && !$("#detail").hidden) openViewer(state.selected.key);
    else if (!$("#detail").hidden) {
      const key = state.selected && keyText(state.selected.key);
      closeDetail();
      const tr = key && document.querySelector(`#rows tbody tr[data-key="${CSS.escape(key)}"]`);
      if (tr) tr.focus();
    } else if (!$("#store").hidden) toggleStore(false);
    else if (typing(event.target)) event.target.blur();
    else return;
    event.preventDefault();
    return;
  }
  if (typing(event.target)) return;
  if (event.key === "/") {
    event.preventDefault();
    $("#prefix").focus();
    $("#prefix").select();
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    const rows = [...document.querySelectorAll("#rows tbody tr[data-key]")];
    if (!rows.length) return;
    event.preventDefault();
    const focused = document.activeElement && document.activeElement.closest
      && document.activeElement.closest("#rows tbody tr[data-key]");
    const from = focused || document.querySelector("#rows tbody tr.selected");
    let at = rows.indexOf(from);
    if (at < 0) at = event.key === "ArrowDown" ? -1 : rows.length;
    const to = rows[Math.max(0, Math.min(rows.length - 1, at + (event.key === "ArrowDown" ? 1 : -1)))];
    to.focus();
    to.scrollIntoView({ block: "nearest" });
  }
}

// ---- wiring ------------------------------------------------------------------------------------

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("#login-authid").value, $("#login-ticket").value);
});
$("#logout-button").addEventListener("click", logout);
$("#login-authid").addEventListener("change", () => {
  $("#login-ticket").placeholder = `${$("#login-authid").value}-secret`;
});
$("#error-close").addEventListener("click", clearError);
$("#store-button").addEventListener("click", () => toggleStore());
$("#store-close").addEventListener("click", () => toggleStore(false));
$("#table-select").addEventListener("change", (event) => selectTable(event.target.value));
$("#filter").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.table) return;
  const text = $("#prefix").value;
  try {
    state.filter = text === "" ? null : (state.table.key === "binary" ? hexToBytes(text) : text);
  } catch (err) {
    showError(err);
    return;
  }
  clearError();  // a new attempt: a stale banner would only confuse
  state.lookup = null;
  state.cursor = null;
  state.pages = [];
  state.total = null;
  loadPage(true);
});
$("#lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!state.table) return;
  state.lookup = { index: $("#index-select").value, value: lookupValue($("#index-value").value) };
  state.sort = null;
  closeDetail();
  runLookup();
});
$("#index-clear").addEventListener("click", () => {
  state.lookup = null;
  $("#index-clear").hidden = true;
  $("#index-value").value = "";
  loadPage(true);
});
$("#page-size").addEventListener("change", (event) => {
  state.pageSize = Number(event.target.value);
  loadPage();
});
$("#next").addEventListener("click", nextPage);
$("#prev").addEventListener("click", previousPage);
$("#export").addEventListener("click", exportRows);
$("#export-cancel").addEventListener("click", cancelExport);
$("#new-row").addEventListener("click", () => openEditor("create"));
$("#new-key").addEventListener("click", newKey);
$("#edit").addEventListener("click", () => openEditor("edit"));
$("#delete").addEventListener("click", deleteSelected);
$("#copy-key").addEventListener("click", (event) => copyText(keyText(state.selected.key), event.currentTarget));
$("#copy-value").addEventListener("click", (event) => copyText(showJson(state.selected.value, 2), event.currentTarget));
$("#show-history").addEventListener("click", () => {
  $("#history-result").hidden = true;
  loadHistory();
});
$("#history-back").addEventListener("click", () => openViewer(state.selected.key));
$("#diff-from").addEventListener("change", renderDiff);
$("#diff-to").addEventListener("change", renderDiff);
$("#mode-form").addEventListener("click", () => setEditorMode("form"));
$("#mode-json").addEventListener("click", () => setEditorMode("json"));
$("#editor-value").addEventListener("input", liveCheck);
$("#editor").addEventListener("submit", (event) => {
  event.preventDefault();
  save();
});
$("#cancel").addEventListener("click", () => {
  const editing = state.editing;
  state.editing = null;
  if (editing && editing.mode === "edit") openViewer(editing.key);
  else closeDetail();
});
$("#detail-close").addEventListener("click", closeDetail);
document.addEventListener("keydown", onKey);
renderRows("log in to browse the tables");
