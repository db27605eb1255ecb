// Shared helpers for the end-to-end tests: raw HTTP calls against a running
// sproutd (SPROUT_URL, SPROUT_API_KEY = an admin key), VM bookkeeping so each
// test file deletes what it created, and running the `sprout` CLI.
// Node 18+ built-ins only (global fetch, node:test); no npm packages.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
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
 * timeoutMs: abort after this long. Resolves to {status, text, json (or
 * undefined), ms}, or {status: 0, timedOut: true, ...} when it ran out;
 * never rejects on a non-2xx status.
 */
export async function api(method, urlPath, { body, key = ADMIN_KEY, headers = {}, timeoutMs } = {}) {
  const h = { ...headers };
  if (key !== null) h.authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    h["content-type"] ??= "application/json";
  }
  const t0 = Date.now();
  let res, text;
  try {
    res = await fetch(BASE + urlPath, {
      method,
      headers: h,
      body: payload,
      signal: timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined,
    });
    text = await res.text();
  } catch (e) {
    if (timeoutMs && (e?.name === "TimeoutError" || e?.name === "AbortError")) {
      return { status: 0, timedOut: true, text: `(no answer within ${timeoutMs} ms)`, json: undefined, ms: Date.now() - t0 };
    }
    throw e;
  }
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

// ---- lifecycle helpers (suspend/stop/snapshot/fork tests) ----

import { spawnSync } from "node:child_process";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** api() that gives up after timeoutMs (see api). */
export const apiWithin = (timeoutMs, method, urlPath, opts = {}) => api(method, urlPath, { ...opts, timeoutMs });

/** GET /v1/vms/{id} and returns its state (asserts 200). */
export async function vmState(id, key = ADMIN_KEY) {
  return (await ok("GET", `/v1/vms/${enc(id)}`, { key })).state;
}

/** Polls the VM's state until it is one of states; returns it, or fails after timeoutMs. */
export async function waitState(id, states, { timeoutMs = 30_000, key = ADMIN_KEY } = {}) {
  const want = Array.isArray(states) ? states : [states];
  const t0 = Date.now();
  let last;
  for (;;) {
    const res = await api("GET", `/v1/vms/${enc(id)}`, { key });
    last = show("GET", `/v1/vms/${id}`, res);
    if (res.status === 200 && want.includes(res.json?.state)) return res.json.state;
    if (Date.now() - t0 > timeoutMs) assert.fail(`VM ${id} not in state ${want.join("|")} after ${timeoutMs} ms; last: ${last}`);
    await sleep(250);
  }
}

/** PIDs of host processes (not this one) whose command line names the VM id: its QEMU. */
export function hostPids(id) {
  const r = spawnSync("pgrep", ["-f", "--", id], { encoding: "utf8" });
  return (r.stdout ?? "")
    .split("\n")
    .map((s) => s.trim())
    .filter((s) => s && +s !== process.pid);
}

/** A process's name (/proc/PID/comm), "" once it is gone. */
export function comm(pid) {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "";
  }
}

/** PIDs of the QEMU processes running the VM. */
export const qemuPids = (id) => hostPids(id).filter((pid) => comm(pid).startsWith("qemu"));

/** Waits until no host process names the VM id; fails after timeoutMs. */
export async function waitNoHostPids(id, timeoutMs = 15_000) {
  const t0 = Date.now();
  for (;;) {
    const pids = hostPids(id);
    if (pids.length === 0) return;
    if (Date.now() - t0 > timeoutMs) assert.fail(`processes for VM ${id} still run after ${timeoutMs} ms: ${pids.join(" ")}`);
    await sleep(200);
  }
}

// A counter loop kept in a shell's memory: it writes $i to the file every
// 0.2 s, and SIGUSR1 adds 100000 to $i (so one copy's memory can be made to
// diverge from another's).
const COUNTER_SCRIPT = `i=0
trap 'i=$((i+100000))' USR1
while true; do i=$((i+1)); echo $i > "$1"; sleep 0.2; done
`;

/**
 * Starts the counter loop in the background in a VM (script at
 * /root/counter.sh, counting into file) and returns its PID as a string.
 */
export async function startCounter(id, file = "/tmp/counter", { key = ADMIN_KEY } = {}) {
  const r = await exec(
    id,
    `cat > /root/counter.sh <<'SPROUT_EOF'\n${COUNTER_SCRIPT}SPROUT_EOF\n` +
      `S=; command -v setsid >/dev/null 2>&1 && S=setsid; ` +
      `$S nohup sh /root/counter.sh ${file} </dev/null >/dev/null 2>&1 & echo $!`,
    { key },
  );
  assert.equal(r.statusCode, 0, `start counter: ${JSON.stringify(r)}`);
  const pid = r.stdout.trim();
  assert.match(pid, /^[0-9]+$/, `counter pid: ${JSON.stringify(r)}`);
  await sleep(700);
  const c = await counterInfo(id, pid, file, { key });
  assert.ok(c.alive, `counter process ${pid} is not running: ${JSON.stringify(c)}`);
  assert.ok(c.value >= 1, `counter file ${file} not written: ${JSON.stringify(c)}`);
  return pid;
}

/**
 * Reads the counter's state in a VM: {alive (the PID runs counter.sh), value
 * (the number in the file, NaN when unreadable)}.
 */
export async function counterInfo(id, pid, file = "/tmp/counter", { key = ADMIN_KEY } = {}) {
  const r = await exec(
    id,
    // The loop truncates the file before it writes: a read in between
    // finds it empty, so read again.
    `if tr '\\0' ' ' < /proc/${pid}/cmdline 2>/dev/null | grep -q counter.sh; then echo alive; else echo dead; fi; ` +
      `for k in 1 2 3 4 5; do v=$(cat ${file} 2>/dev/null); [ -n "$v" ] && break; sleep 0.05; done; echo "\${v:-none}"`,
    { key },
  );
  const [state, value] = r.stdout.trim().split("\n");
  return { alive: state === "alive", value: Number(value), raw: r.stdout };
}

/** The guest kernel's boot id: unchanged by suspend/resume, snapshot restore and fork; new on every boot. */
export async function bootId(id, { key = ADMIN_KEY } = {}) {
  const r = await exec(id, "cat /proc/sys/kernel/random/boot_id", { key });
  assert.equal(r.statusCode, 0, `boot_id: ${JSON.stringify(r)}`);
  return r.stdout.trim();
}

/** Reads a file in a VM through exec: its content, or null when it does not exist. */
export async function catFile(id, p, { key = ADMIN_KEY } = {}) {
  const r = await exec(id, `if [ -e '${p}' ]; then cat '${p}'; else echo MISSING >&2; exit 3; fi`, { key });
  if (r.statusCode === 3 && r.stderr === "MISSING\n") return null;
  assert.equal(r.statusCode, 0, `cat ${p}: ${JSON.stringify(r)}`);
  return r.stdout;
}
