// Keys and values between their WAMP form and what the explorer shows and reads: bytes as hex
// and base64, values as JSON ({"$hex": ...} for bytes), keys in etcd's byte order. Pure
// functions, no page state.

const utf8 = new TextEncoder();

export class LocalError extends Error {
  constructor(kind, message) {
    super(message);
    this.error = `explorer.error.${kind}`;
  }
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function hexToBytes(text) {
  const clean = text.replace(/\s+/g, "");
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new LocalError("invalid_key", `not hex: ${text}`);
  return Uint8Array.from(clean.match(/../g) || [], (pair) => parseInt(pair, 16));
}

export function bytesToBase64(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function base64ToBytes(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

// Values are shown and edited as JSON; bytes become {"$hex": ...} (and {"$base64": ...} is read).
export function showJson(value, indent) {
  return JSON.stringify(value === undefined ? null : value,
    (key, v) => (v instanceof Uint8Array ? { $hex: bytesToHex(v) } : v), indent);
}

// JSON.parse's complaint with the line and column it points at.
export function syntaxMessage(text, err) {
  const at = /position (\d+)/.exec(err.message);
  if (!at) return err.message;
  const before = text.slice(0, Number(at[1])).split("\n");
  return `${err.message.replace(/ in JSON at position \d+.*$/, "")} (line ${before.length}, ` +
    `column ${before[before.length - 1].length + 1})`;
}

export function reviveBytes(v) {
  if (Array.isArray(v)) return v.map(reviveBytes);
  if (v === null || typeof v !== "object") return v;
  const names = Object.keys(v);
  if (names.length === 1 && names[0] === "$hex" && typeof v.$hex === "string") return hexToBytes(v.$hex);
  if (names.length === 1 && names[0] === "$base64" && typeof v.$base64 === "string") return base64ToBytes(v.$base64);
  return Object.fromEntries(names.map((n) => [n, reviveBytes(v[n])]));
}

export function parseJson(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new LocalError("invalid_value", `not JSON: ${syntaxMessage(text, err)}`);
  }
  return reviveBytes(parsed);
}

export function keyText(key) {
  return key instanceof Uint8Array ? bytesToHex(key) : String(key);
}

// A key typed by the user, in the table's wire form; the component checks the rest.
export function parseKey(text, kind) {
  if (kind === "binary") return hexToBytes(text);
  if (kind === "oid" || kind === "timestamp") {
    const number = Number(text.trim());
    if (text.trim() === "" || !Number.isInteger(number) || number < 0) {
      throw new LocalError("invalid_key", `${kind} keys are integers, not ${JSON.stringify(text)}`);
    }
    return number;
  }
  return kind === "uuid" ? text.trim() : text;
}

export function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

// etcd orders rows by their key bytes: UTF-8 for strings (and canonical uuids), big-endian ints.
export function compareKeys(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  const bytes = (k) => (k instanceof Uint8Array ? k : utf8.encode(String(k)));
  return compareBytes(bytes(a), bytes(b));
}

export function startsWith(key, prefix) {
  if (key instanceof Uint8Array && prefix instanceof Uint8Array) {
    return compareBytes(key.subarray(0, prefix.length), prefix) === 0;
  }
  return typeof key === "string" && typeof prefix === "string" && key.startsWith(prefix);
}

export function newUuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = bytesToHex(b);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Nanoseconds since the epoch that a JS number holds exactly (and prints as itself): whole
// milliseconds, rounded down to a multiple of 4 so that ms * 1e6 fits a double's mantissa.
export function nowNanoseconds() {
  return Math.floor(Date.now() / 4) * 4 * 1e6;
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// A WAMP error's URI and message (the component puts it in kwargs, the router in args[0]).
export function describe(err) {
  if (err && typeof err.error === "string") {
    const message = (err.kwargs && err.kwargs.message) || (err.args && err.args[0]) || err.message || "";
    return { uri: err.error, message: String(message) };
  }
  return { uri: "explorer.error", message: String((err && err.message) || err) };
}
