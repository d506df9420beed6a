// etcd-wamp explorer: browse, watch and edit the component's tables over WAMP (autobahn-js).
// Plain script, no build step. The WebSocket URL comes from `location`, so the page works on
// whatever host and port the node's web transport serves it from.
"use strict";

const $ = (selector) => document.querySelector(selector);
const params = new URLSearchParams(location.search);
const WS_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const FLASH_MS = 1700;
const REFUSED_LOGIN = /authentication_failed|not_authorized|no_such_role|no_such_realm|cannot_authenticate|no_auth_method/;

// Everything the page knows; exposed as window.explorer for tests and the devtools console.
const state = {
  connection: null, session: null, authid: null, role: null, loggingOut: false,
  prefix: params.get("prefix") || "etcd",  // the component's URI prefix (its config "prefix")
  status: null, tables: [], table: null, subscriptions: [],
  pageSize: 25, filter: null, pageStart: null, history: [], nextStart: null,
  rows: [], total: null, loading: false, loadToken: 0, pendingScan: null, queued: [],
  selected: null, editing: null, errors: [],
};
window.explorer = state;

// ---- bytes, keys and values ------------------------------------------------------------------

const utf8 = new TextEncoder();

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function hexToBytes(text) {
  const clean = text.replace(/\s+/g, "");
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new LocalError("invalid_key", `not hex: ${text}`);
  return Uint8Array.from(clean.match(/../g) || [], (pair) => parseInt(pair, 16));
}

function bytesToBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

function base64ToBytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// WAMP's JSON serializer carries bytes as "\0" + base64 (the convention Crossbar speaks).
const wampJson = new autobahn.serializer.JSONSerializer(
  (key, value) => (value instanceof Uint8Array ? "\0" + bytesToBase64(value) : value),
  (key, value) => (typeof value === "string" && value.charCodeAt(0) === 0
    ? base64ToBytes(value.slice(1)) : value),
);

// Values are shown and edited as JSON; bytes become {"$hex": ...} (and {"$base64": ...} is read).
function showJson(value, indent) {
  return JSON.stringify(value === undefined ? null : value,
    (key, v) => (v instanceof Uint8Array ? { $hex: bytesToHex(v) } : v), indent);
}

function parseJson(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new LocalError("invalid_value", `not JSON: ${err.message}`);
  }
  const revive = (v) => {
    if (Array.isArray(v)) return v.map(revive);
    if (v === null || typeof v !== "object") return v;
    const names = Object.keys(v);
    if (names.length === 1 && names[0] === "$hex" && typeof v.$hex === "string") return hexToBytes(v.$hex);
    if (names.length === 1 && names[0] === "$base64" && typeof v.$base64 === "string") return base64ToBytes(v.$base64);
    return Object.fromEntries(names.map((n) => [n, revive(v[n])]));
  };
  return revive(parsed);
}

function keyText(key) {
  return key instanceof Uint8Array ? bytesToHex(key) : String(key);
}

// A key typed by the user, in the table's wire form; the component checks the rest.
function parseKey(text, kind) {
  if (kind === "binary") return hexToBytes(text);
  if (kind === "oid" || kind === "timestamp") {
    const number = Number(text.trim());
    if (text.trim() === "" || !Number.isSafeInteger(number)) {
      throw new LocalError("invalid_key", `${kind} keys are integers, not ${JSON.stringify(text)}`);
    }
    return number;
  }
  return kind === "uuid" ? text.trim() : text;
}

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

// etcd orders rows by their key bytes: UTF-8 for strings (and canonical uuids), big-endian ints.
function compareKeys(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  const bytes = (k) => (k instanceof Uint8Array ? k : utf8.encode(String(k)));
  return compareBytes(bytes(a), bytes(b));
}

function startsWith(key, prefix) {
  if (key instanceof Uint8Array && prefix instanceof Uint8Array) {
    return compareBytes(key.subarray(0, prefix.length), prefix) === 0;
  }
  return typeof key === "string" && typeof prefix === "string" && key.startsWith(prefix);
}

function newUuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = bytesToHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---- errors ------------------------------------------------------------------------------------

class LocalError extends Error {
  constructor(kind, message) {
    super(message);
    this.error = `explorer.error.${kind}`;
  }
}

// A WAMP error's URI and message (the component puts it in kwargs, the router in args[0]).
function describe(err) {
  if (err && typeof err.error === "string") {
    const message = (err.kwargs && err.kwargs.message) || (err.args && err.args[0]) || err.message || "";
    return { uri: err.error, message: String(message) };
  }
  return { uri: "explorer.error", message: String((err && err.message) || err) };
}

function showError(err) {
  const { uri, message } = describe(err);
  state.errors.push({ uri, message });
  $("#error-uri").textContent = uri;
  $("#error-message").textContent = message;
  $("#error").dataset.uri = uri;
  $("#error").hidden = false;
  return { uri, message };
}

function clearError() {
  $("#error").hidden = true;
}

function inlineError(element, err) {
  const { uri, message } = describe(err);
  element.replaceChildren(Object.assign(document.createElement("code"), { textContent: uri }),
    document.createTextNode(` ${message}`));
  element.dataset.uri = uri;
  element.hidden = false;
}

// ---- WAMP calls --------------------------------------------------------------------------------

function uri(name) {
  return `${state.prefix}.${name}`;
}

// session.call with the component's URI prefix; a refusal is shown, then rethrown.
async function call(name, args = [], kwargs = {}) {
  try {
    if (!state.session) throw new LocalError("not_connected", "not connected");
    return await state.session.call(uri(name), args, kwargs);
  } catch (err) {
    showError(err);
    throw err;
  }
}

// A progressive scan: each chunk of rows goes to onChunk as it arrives.
function scan(table, kwargs, onChunk) {
  return new Promise((resolve, reject) => {
    const pending = state.session.call(uri(`${table}.scan`), [], kwargs, { receive_progress: true });
    state.pendingScan = pending;
    pending.then(resolve, reject, onChunk);  // when.js promise: the third callback gets progress
  });
}

function cancelPendingScan() {
  const pending = state.pendingScan;
  state.pendingScan = null;
  if (pending && pending.cancel) {
    try { pending.cancel({ mode: "kill" }); } catch (err) { /* already finished */ }
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
      if (err.error !== "wamp.error.no_such_procedure") return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  clearError();
  state.tables = state.status.tables;
  const select = $("#table-select");
  const previous = state.table && state.table.name;
  select.replaceChildren(...state.tables.map((t) =>
    Object.assign(document.createElement("option"), { value: t.name, textContent: t.name })));
  select.disabled = false;
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
  for (const element of document.querySelectorAll(".write-only")) element.hidden = !visible;
}

// ---- table, paging and live updates ------------------------------------------------------------

async function selectTable(name, keepPage = false) {
  const table = state.tables.find((t) => t.name === name);
  const changed = !state.table || state.table.name !== name;
  state.table = table;
  if (changed || !keepPage) {
    state.pageStart = null;
    state.history = [];
    if (changed) {
      state.filter = null;
      $("#prefix").value = "";
    }
    closeDetail();
  }
  const etcd = state.status.etcd;
  $("#table-info").textContent =
    `${table.key} keys · ${table.value} values · etcd ${etcd.version}`;
  $("#prefix").placeholder = ["string", "binary"].includes(table.key)
    ? `key prefix${table.key === "binary" ? " (hex)" : ""}` : "key prefix (string/binary keys only)";
  await subscribe(table.name);
  await loadPage();
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
      if (state.loading) state.queued.push(change);  // applied once the page's scan is done
      else applyChange(change);
    })));
    state.subscriptions.push(await session.subscribe(uri(`${name}.on_resync`), mine(() => {
      loadPage();
    })));
  } catch (err) {
    showError(err);
  }
}

async function loadPage() {
  if (!state.session || !state.table) return;
  const token = ++state.loadToken;
  cancelPendingScan();
  const table = state.table;
  const kwargs = { limit: state.pageSize + 1 };  // one more row tells whether a next page exists
  if (state.pageStart !== null) kwargs.from_key = state.pageStart;
  if (state.filter !== null) kwargs.prefix = state.filter;
  state.loading = true;
  state.queued = [];
  state.rows = [];
  state.nextStart = null;
  renderRows("loading…");
  $("#rows").dataset.state = "loading";
  try {
    await scan(table.name, kwargs, (chunk) => {
      if (token !== state.loadToken) return;
      for (const [key, value] of chunk) {
        if (state.rows.length < state.pageSize) state.rows.push({ key, value });
        else if (state.nextStart === null) state.nextStart = key;
      }
      renderRows();
    });
    if (token !== state.loadToken) return;
    state.loading = false;
    for (const change of state.queued.splice(0)) applyChange(change, false);
    renderRows();
    $("#rows").dataset.state = "ready";
    await refreshCount(token);
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
  try {
    const total = await state.session.call(uri(`${state.table.name}.count`), [],
      state.filter === null ? {} : { prefix: state.filter });
    if (token === state.loadToken) state.total = total;
  } catch (err) {
    state.total = null;
  }
  renderPager();
}

function renderRows(placeholder = "no rows") {
  const body = $("#rows tbody");
  body.replaceChildren(...state.rows.map(rowElement));
  if (!state.rows.length) {
    const text = placeholder === "no rows" && state.filter !== null ? "no rows with this prefix" : placeholder;
    const empty = document.createElement("tr");
    empty.className = "empty";
    empty.append(Object.assign(document.createElement("td"), { colSpan: 2, textContent: text }));
    body.append(empty);
  }
}

function rowElement(row) {
  const tr = document.createElement("tr");
  tr.dataset.key = keyText(row.key);
  const key = Object.assign(document.createElement("td"), { textContent: keyText(row.key) });
  key.title = keyText(row.key);
  const value = document.createElement("td");
  tr.append(key, value);
  row.tr = tr;
  setRowValue(row, row.value);
  if (state.selected && compareKeys(state.selected.key, row.key) === 0) tr.classList.add("selected");
  tr.tabIndex = 0;  // rows open from the keyboard too
  tr.addEventListener("click", () => openViewer(row.key));
  tr.addEventListener("keydown", (event) => { if (event.key === "Enter") openViewer(row.key); });
  return tr;
}

function setRowValue(row, value) {
  row.value = value;
  const text = showJson(value);
  row.tr.cells[1].textContent = text.length > 240 ? `${text.slice(0, 240)}…` : text;
  row.tr.cells[1].title = text.length > 240 ? "" : text;
}

function flash(tr, kind) {
  tr.classList.remove("flash-put", "flash-new", "flash-delete");
  void tr.offsetWidth;  // restart the animation if the row flashes again
  tr.classList.add(kind);
  if (kind !== "flash-delete") setTimeout(() => tr.classList.remove(kind), FLASH_MS);
}

// Does a key belong between this page's first key and the next page's?
function onThisPage(key) {
  if (state.filter !== null && !startsWith(key, state.filter)) return false;
  if (state.pageStart !== null && compareKeys(key, state.pageStart) < 0) return false;
  return state.nextStart === null || compareKeys(key, state.nextStart) < 0;
}

// An on_change event: update, insert or remove the row in place and flash it.
function applyChange(change, animate = true) {
  const { type, key, value, revision } = change;
  const index = state.rows.findIndex((r) => compareKeys(r.key, key) === 0);
  if (type === "delete") {
    if (index >= 0) {
      const [row] = state.rows.splice(index, 1);
      if (animate) {
        flash(row.tr, "flash-delete");
        setTimeout(() => { row.tr.remove(); if (!state.rows.length) renderRows(); }, 900);
      } else {
        row.tr.remove();
      }
    }
  } else if (index >= 0) {
    setRowValue(state.rows[index], value);
    if (animate) flash(state.rows[index].tr, "flash-put");
  } else if (onThisPage(key)) {
    let at = state.rows.findIndex((r) => compareKeys(r.key, key) > 0);
    if (at < 0) at = state.rows.length;
    const row = { key, value };
    state.rows.splice(at, 0, row);
    const body = $("#rows tbody");
    body.querySelectorAll("tr.empty").forEach((tr) => tr.remove());
    const tr = rowElement(row);
    const before = state.rows[at + 1];
    body.insertBefore(tr, before ? before.tr : null);
    if (animate) flash(tr, "flash-new");
    if (state.rows.length > state.pageSize) {  // the page is full: the last row moves on
      const last = state.rows.pop();
      last.tr.remove();
      state.nextStart = last.key;
    }
  }
  if (state.selected && compareKeys(state.selected.key, key) === 0) selectedChanged(type, value, revision);
  if (animate) {
    clearTimeout(state.countTimer);
    state.countTimer = setTimeout(() => refreshCount(), 300);
  }
}

function renderPager() {
  $("#prev").disabled = !state.history.length && state.pageStart === null;
  $("#next").disabled = state.nextStart === null;
  const page = `page ${state.history.length + (state.pageStart === null ? 1 : 2)}`;
  const total = state.total === null ? "" : ` · ${state.total} row${state.total === 1 ? "" : "s"}` +
    (state.filter === null ? " in table" : " with this prefix");
  $("#page-info").textContent = page + total;
}

// ---- viewer and editor -------------------------------------------------------------------------

function closeDetail() {
  state.selected = null;
  state.editing = null;
  $("#detail").hidden = true;
  document.querySelectorAll("#rows tr.selected").forEach((tr) => tr.classList.remove("selected"));
}

async function openViewer(key) {
  const table = state.table;
  state.selected = { key, loading: true };
  state.editing = null;
  disarmDelete();
  document.querySelectorAll("#rows tr").forEach((tr) =>
    tr.classList.toggle("selected", tr.dataset.key === keyText(key)));
  $("#detail").hidden = false;
  $("#viewer").hidden = false;
  $("#editor").hidden = true;
  $("#viewer-key").textContent = keyText(key);
  $("#viewer-meta").textContent = "loading…";
  $("#viewer-notice").hidden = true;
  $("#viewer-value").textContent = "";
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
    $("#viewer .actions").hidden = true;
  } else {
    state.selected = { key, ...found };
    renderViewer();
    $("#viewer .actions").hidden = state.role !== "writer";
  }
  $("#viewer").dataset.state = "ready";
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
  if (row.loading || (row.revision !== undefined && revision <= row.revision)) return;
  if (row.missing && type !== "delete" && !state.editing) {
    openViewer(row.key);  // the row is back: show it afresh
    return;
  }
  const notice = $("#viewer-notice");
  if (type === "delete") {
    notice.textContent = `deleted at revision ${revision}`;
    $("#viewer .actions").hidden = true;
    state.selected = { key: row.key, missing: true };
  } else {
    notice.textContent = `changed at revision ${revision}`;
    if (!state.editing) {
      // The viewer follows the row; an editor keeps its revision so saving reports the conflict.
      Object.assign(row, { value, revision, version: (row.version || 0) + 1 });
      renderViewer();
    }
  }
  notice.hidden = false;
  if (state.editing && state.editing.mode === "edit") {
    $("#editor-error").textContent =
      `This row was ${type === "delete" ? "deleted" : "changed"} at revision ${revision} since you ` +
      `opened it; saving will be refused as a conflict.`;
    $("#editor-error").dataset.uri = "";
    $("#editor-error").hidden = false;
  }
}

function openEditor(mode) {
  const table = state.table;
  const editing = { mode, table: table.name };
  if (mode === "edit") {
    Object.assign(editing, { key: state.selected.key, revision: state.selected.revision });
  }
  state.editing = editing;
  disarmDelete();
  $("#detail").hidden = false;
  $("#viewer").hidden = true;
  $("#editor").hidden = false;
  $("#editor-error").hidden = true;
  $("#editor-title").textContent = mode === "edit"
    ? `edit (at revision ${editing.revision})` : `new row in ${table.name}`;
  const keyInput = $("#editor-key");
  keyInput.disabled = mode === "edit";
  keyInput.value = mode === "edit" ? keyText(editing.key) : (table.key === "uuid" ? newUuid() : "");
  keyInput.placeholder = table.key === "binary" ? "hex" : table.key;
  $("#editor-value").value = mode === "edit" ? showJson(state.selected.value, 2) : "{}";
  (mode === "edit" ? $("#editor-value") : keyInput).focus();
}

async function save() {
  const editing = state.editing;
  const table = state.tables.find((t) => t.name === editing.table);
  const errorBox = $("#editor-error");
  errorBox.hidden = true;
  let key, value;
  try {
    key = editing.mode === "edit" ? editing.key : parseKey($("#editor-key").value, table.key);
    value = parseJson($("#editor-value").value);
  } catch (err) {
    inlineError(errorBox, err);
    return;
  }
  // Edits only apply to the revision the editor opened; new rows only if the key is free.
  const ifRevision = editing.mode === "edit" ? editing.revision : 0;
  $("#save").disabled = true;
  try {
    await call(`${table.name}.put`, [key, value], { if_revision: ifRevision });
  } catch (err) {
    inlineError(errorBox, err);
    if (err.error === `${state.prefix}.error.conflict`) {
      errorBox.append(document.createTextNode(editing.mode === "edit"
        ? " — someone changed this row since you opened it; your edit was not saved. Cancel to see the current value."
        : " — a row with this key already exists."));
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

// Two clicks delete: the first arms the button for a few seconds (no modal dialogs).
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
  closeDetail();
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
  state.pageStart = null;
  state.history = [];
  loadPage();
});
$("#page-size").addEventListener("change", (event) => {
  state.pageSize = Number(event.target.value);
  loadPage();
});
$("#next").addEventListener("click", () => {
  if (state.nextStart === null) return;
  state.history.push(state.pageStart);
  state.pageStart = state.nextStart;
  loadPage();
});
$("#prev").addEventListener("click", () => {
  state.pageStart = state.history.length ? state.history.pop() : null;
  loadPage();
});
$("#new-row").addEventListener("click", () => openEditor("create"));
$("#edit").addEventListener("click", () => openEditor("edit"));
$("#delete").addEventListener("click", deleteSelected);
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
renderRows("log in to browse the tables");
