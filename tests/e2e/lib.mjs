// Shared helpers for the end-to-end tests: raw HTTP calls against a running
// sproutd (SPROUT_URL, SPROUT_API_KEY = an admin key), VM bookkeeping so each
// test file deletes what it created, and running the `sprout` CLI.
// Node 18+ built-ins only (global fetch, node:test); no npm packages.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const BASE = (process.env.SPROUT_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
export const ADMIN_KEY = process.env.SPROUT_API_KEY ?? "";
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const SPROUT_BIN = process.env.SPROUT_BIN ?? path.join(ROOT, "build/sprout");

// Creating a VM under TCG emulation can take a while; give it room.
export const CREATE_TIMEOUT = 5 * 60_000;

export const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
export const rand = (n = 6) => randomBytes(n).toString("hex");
export const enc = encodeURIComponent;
export const filesPath = (id, p) => `/v1/vms/${enc(id)}/files/${enc(p)}`;

/**
 * One HTTP request. body: an object (sent as JSON), a string or Buffer (sent
 * as is), or undefined. key: the bearer token (null sends no header).
 * Resolves to {status, text, json (or undefined), ms}; never rejects on a
 * non-2xx status.
 */
export async function api(method, urlPath, { body, key = ADMIN_KEY, headers = {} } = {}) {
  const h = { ...headers };
  if (key !== null) h.authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    h["content-type"] ??= "application/json";
  }
  const t0 = Date.now();
  const res = await fetch(BASE + urlPath, { method, headers: h, body: payload });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, ms: Date.now() - t0, headers: res.headers };
}

/** Describes a request and its answer for assertion messages. */
export function show(method, urlPath, res) {
  const t = res.text.length > 400 ? res.text.slice(0, 400) + "..." : res.text;
  return `${method} ${urlPath} -> ${res.status} ${t}`;
}

/** Like api() but asserts a 2xx answer with a JSON body and returns the JSON. */
export async function ok(method, urlPath, opts = {}) {
  const res = await api(method, urlPath, opts);
  assert.ok(res.status >= 200 && res.status < 300, `expected 2xx: ${show(method, urlPath, res)}`);
  assert.notEqual(res.json, undefined, `expected a JSON body: ${show(method, urlPath, res)}`);
  return res.json;
}

/** Asserts an error answer: the status, and a JSON body with error = code = CODE and a message. */
export function expectError(res, status, code, what = "") {
  const ctx = `${what} -> ${res.status} ${res.text.slice(0, 300)}`;
  assert.equal(res.status, status, `status: ${ctx}`);
  assert.equal(typeof res.json, "object", `JSON error body: ${ctx}`);
  if (code) {
    assert.equal(res.json.error, code, `error field: ${ctx}`);
    assert.equal(res.json.code, code, `code field: ${ctx}`);
  } else {
    assert.equal(typeof res.json.error, "string", `error field: ${ctx}`);
  }
  assert.equal(typeof res.json.message, "string", `message field: ${ctx}`);
}

/** Executes a shell command in a VM through exec-await and returns {stdout, stderr, statusCode}. */
export async function exec(id, command, { key = ADMIN_KEY, timeoutMs } = {}) {
  const body = { command };
  if (timeoutMs !== undefined) body.timeoutMs = timeoutMs;
  return ok("POST", `/v1/vms/${enc(id)}/exec-await`, { body, key });
}

/** Creates an API key for a named (or, with no name, a brand-new) account. */
export async function newAccount(name) {
  const body = name === undefined ? {} : { account: name };
  const res = await ok("POST", "/admin/v1/keys", { body });
  assert.equal(typeof res.key, "string", `key in ${JSON.stringify(res)}`);
  assert.equal(typeof res.accountId, "string", `accountId in ${JSON.stringify(res)}`);
  return res;
}

/**
 * Tracks the VMs a test file creates so that an after() hook can delete
 * them all, whatever failed in between.
 */
export class VmTracker {
  constructor() {
    this.vms = new Map(); // id -> key that owns it
  }

  /** POST /v1/vms and remembers the id; returns the response JSON. */
  async create(body = {}, key = ADMIN_KEY) {
    const res = await api("POST", "/v1/vms", { body, key });
    assert.equal(res.status, 200, show("POST", "/v1/vms", res));
    assert.match(res.json?.id ?? "", /^[a-z0-9]{20}$/, `VM id: ${res.text}`);
    this.vms.set(res.json.id, key);
    return res.json;
  }

  track(id, key = ADMIN_KEY) {
    this.vms.set(id, key);
  }

  forget(id) {
    this.vms.delete(id);
  }

  async cleanup() {
    const failures = [];
    await Promise.all(
      [...this.vms].map(async ([id, key]) => {
        try {
          const res = await api("DELETE", `/v1/vms/${enc(id)}`, { key });
          if (res.status !== 200 && res.status !== 404) failures.push(show("DELETE", id, res));
        } catch (e) {
          failures.push(`${id}: ${e}`);
        }
      }),
    );
    this.vms.clear();
    if (failures.length) console.error(`# cleanup failures: ${failures.join("; ")}`);
  }
}

/**
 * Runs build/sprout with args. env replaces the SPROUT_ and FREESTYLE_
 * variables (none are inherited). Resolves to {code, stdout (Buffer),
 * stderr (string), out (stdout as text)}.
 */
export function runCli(args, { env = {}, input, timeoutMs = 5 * 60_000 } = {}) {
  const base = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("SPROUT_") && !k.startsWith("FREESTYLE_")) base[k] = v;
  }
  return new Promise((resolve, reject) => {
    const child = spawn(SPROUT_BIN, args, { env: { ...base, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    const out = [];
    const err = [];
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.stdout.on("data", (d) => out.push(d));
    child.stderr.on("data", (d) => err.push(d));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out);
      resolve({ code, signal, stdout, out: stdout.toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on("error", () => {});
    if (input !== undefined) child.stdin.end(input);
    else child.stdin.end();
  });
}

/** Decodes a files-API file answer to a Buffer. */
export function decodeContent(json) {
  assert.equal(typeof json?.content, "string", `file content in ${JSON.stringify(json)?.slice(0, 200)}`);
  return Buffer.from(json.content, json.encoding === "base64" ? "base64" : "utf8");
}
