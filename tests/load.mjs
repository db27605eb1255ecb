// Load test against a running sproutd: LOAD_VMS VMs (default 8), then
// LOAD_CLIENTS clients (default 16) x LOAD_REQUESTS operations each
// (default 200) picked at random from a mix (exec, file put+get, suspend then
// exec, start, fork + exec in the fork + delete, snapshot (sometimes a VM
// made from it) + delete, delete + recreate of one of the set, info) on
// random VMs of the set. Checks every answer and every output, and that
// sproutd's open fds, threads and RSS do not grow past a small slack once
// the load is over and it has settled.
//
// Env:  SPROUT_URL, SPROUT_API_KEY (an admin key), SPROUTD_PID (for the fd,
//       thread and RSS figures; without it those checks are skipped)
//       LOAD_CLIENTS, LOAD_REQUESTS, LOAD_VMS   sizes (or argv, below)
//       LOAD_SETTLE_S (5)     seconds to wait before each measurement
//       LOAD_FD_SLACK (8), LOAD_THREAD_SLACK (4), LOAD_RSS_SLACK_MIB (64)
//       LOAD_TIMEOUT_S (180)  cap on any one request (the slowest, a fork
//                             under TCG, take about 70 s)
//       LOAD_STALL_S (20)     longest wait allowed for the probes: a GET
//                             /healthz and a GET /v1/vms once a second
//                             during the load (no VM is locked for them)
//       LOAD_SEED             seed of the operation mix (default: random)
// Argv: node tests/load.mjs [--clients N] [--requests N] [--vms N]
//       (or -c/-r/-n, or "--clients=N"); argv wins over env.
//
// A VM of the set is never deleted while another operation uses it (a
// per-VM read/write lock; a fork or snapshot lets go of its source once
// answered), so a 404 is never an expected answer: every answer must be
// 2xx, or 429/507 (capacity refusals, counted, allowed). Any other status,
// a dropped connection, a timeout or a wrong output is a failure; so is a
// probe that waits longer than LOAD_STALL_S. A create from a snapshot that
// fails with a 5xx is tried once more (snapshot.create-vm.retry), to tell a
// failed create from a snapshot that never restores. Prints per operation:
// count, p50, p99, 4xx and 5xx with their codes; each failure class with
// its count, code, message and what else ran on the VM meanwhile; then one
// JSON line; then "N passed, N failed" over its checks; exits 1 when a
// check failed.
// Node 18+ built-ins only.
import http from "node:http";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";

// ---- configuration ----

function argvInt(names) {
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    for (const n of names) {
      if (a[i] === n && i + 1 < a.length) return a[i + 1];
      if (a[i].startsWith(n + "=")) return a[i].slice(n.length + 1);
    }
  }
  return undefined;
}
function intOf(v, dflt, what) {
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`load: ${what} must be a non-negative integer, not "${v}"`);
    process.exit(2);
  }
  return n;
}
const CLIENTS = intOf(argvInt(["--clients", "-c"]) ?? process.env.LOAD_CLIENTS, 16, "clients");
const REQUESTS = intOf(argvInt(["--requests", "-r"]) ?? process.env.LOAD_REQUESTS, 200, "requests");
const NVMS = Math.max(1, intOf(argvInt(["--vms", "-n"]) ?? process.env.LOAD_VMS, 8, "vms"));
const SETTLE_S = intOf(process.env.LOAD_SETTLE_S, 5, "LOAD_SETTLE_S");
const FD_SLACK = intOf(process.env.LOAD_FD_SLACK, 8, "LOAD_FD_SLACK");
const THREAD_SLACK = intOf(process.env.LOAD_THREAD_SLACK, 4, "LOAD_THREAD_SLACK");
const RSS_SLACK_MIB = intOf(process.env.LOAD_RSS_SLACK_MIB, 64, "LOAD_RSS_SLACK_MIB");
const TIMEOUT_MS = intOf(process.env.LOAD_TIMEOUT_S, 180, "LOAD_TIMEOUT_S") * 1000;
const STALL_MS = intOf(process.env.LOAD_STALL_S, 20, "LOAD_STALL_S") * 1000;
const PID = process.env.SPROUTD_PID ? Number(process.env.SPROUTD_PID) : 0;
const BASE = new URL(process.env.SPROUT_URL ?? "http://127.0.0.1:8080");
const KEY = process.env.SPROUT_API_KEY ?? "";

// A small seeded PRNG (mulberry32), so a mix can be replayed with LOAD_SEED.
const SEED = process.env.LOAD_SEED ? Number(process.env.LOAD_SEED) >>> 0 : randomBytes(4).readUInt32LE(0);
let prngState = SEED;
function random() {
  prngState = (prngState + 0x6d2b79f5) >>> 0;
  let t = prngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (arr) => arr[Math.floor(random() * arr.length)];
const token = () => randomBytes(6).toString("hex");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (s) => console.log(`# ${s}`);

// ---- HTTP ----

// Keep-alive sockets are threads in sproutd (a thread per connection), so
// the agent is dropped before each measurement.
let agent = new http.Agent({ keepAlive: true, maxSockets: 256, timeout: 60_000 });

// Requests in flight (what the progress line names when one is slow).
const inFlight = new Set();

/** One request; resolves to {status (0: no answer), json, text, ms, error}. Never rejects. */
function request(method, path, body, timeoutMs = TIMEOUT_MS) {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers = { authorization: `Bearer ${KEY}` };
  if (payload) {
    headers["content-type"] = "application/json";
    headers["content-length"] = payload.length;
  }
  const t0 = performance.now();
  const flight = { what: `${method} ${path}`, t0 };
  inFlight.add(flight);
  return new Promise((resolve) => {
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      inFlight.delete(flight);
      clearTimeout(timer);
      resolve({ ...r, ms: performance.now() - t0 });
    };
    const req = http.request(
      { host: BASE.hostname, port: BASE.port || 80, method, path, headers, agent },
      (res) => {
        const chunks = [];
        res.on("data", (d) => chunks.push(d));
        res.on("error", (e) => finish({ status: 0, error: `response: ${e.code ?? ""} ${e.message}`, text: "" }));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json;
          try {
            json = JSON.parse(text);
          } catch {}
          finish({ status: res.statusCode, text, json });
        });
      },
    );
    const timer = setTimeout(() => {
      finish({ status: 0, error: `no answer within ${timeoutMs} ms`, text: "" });
      req.destroy();
    }, timeoutMs);
    req.on("error", (e) => finish({ status: 0, error: `connection: ${e.code ?? ""} ${e.message}`, text: "" }));
    req.end(payload);
  });
}

// ---- bookkeeping ----

const stats = new Map(); // label -> {ms: [], ok, s4xx, s5xx, allowed}
const problems = new Map(); // class key -> {count, label, status, code, message, example, mix}
const checkFailures = new Map(); // class key -> {count, label, message, example}
let capacity = 0; // 429/507 answers
let unexpected4xx = 0,
  unexpected5xx = 0,
  noAnswer = 0,
  wrongOutput = 0;

function stat(label) {
  let s = stats.get(label);
  if (!s) stats.set(label, (s = { ms: [], ok: 0, s4xx: 0, s5xx: 0, allowed: 0, codes: new Map() }));
  return s;
}

// VM and snapshot ids out of messages, so one failure class is one line.
const generic = (s) =>
  String(s ?? "")
    .replace(/sc-[a-z0-9]{20}/g, "sc-<id>")
    .replace(/\b[a-z0-9]{20}\b/g, "<id>")
    .replace(/load-[0-9a-f]{12}/g, "load-<tok>")
    .slice(0, 200);

/**
 * Records an answer under label. Returns true when it is a 2xx. A 429/507
 * is counted as a capacity refusal; anything else is a problem, recorded
 * with what the client was doing (ctx: the operation and what else ran on
 * that VM at the time).
 */
function record(label, res, ctx) {
  const s = stat(label);
  s.ms.push(res.ms);
  if (res.status >= 200 && res.status < 300) {
    s.ok++;
    return true;
  }
  const code = res.json?.code ?? res.json?.error ?? "";
  const message = res.error ?? res.json?.message ?? res.text.slice(0, 200);
  const k = res.status === 0 ? "no answer" : `${res.status} ${code}`;
  s.codes.set(k, (s.codes.get(k) ?? 0) + 1);
  if (res.status >= 400 && res.status < 500) s.s4xx++;
  if (res.status >= 500) s.s5xx++;
  if (res.status === 429 || res.status === 507) {
    s.allowed++;
    capacity++;
    return false;
  }
  if (res.status === 0) noAnswer++;
  else if (res.status < 500) unexpected4xx++;
  else unexpected5xx++;
  const key = `${label}|${res.status}|${code}|${generic(message)}`;
  let p = problems.get(key);
  if (!p) problems.set(key, (p = { count: 0, label, status: res.status, code, message: generic(message), example: message, mix: new Map() }));
  p.count++;
  for (const m of ctx?.others?.() ?? []) p.mix.set(m, (p.mix.get(m) ?? 0) + 1);
  return false;
}

function checkFail(label, what, detail) {
  wrongOutput++;
  const key = `${label}|${generic(what)}`;
  let c = checkFailures.get(key);
  if (!c) checkFailures.set(key, (c = { count: 0, label, what: generic(what), example: detail }));
  c.count++;
}

// ---- the VM set ----

/** Read/write lock: any number of operations, or one delete + recreate. */
class RwLock {
  constructor() {
    this.readers = 0;
    this.writer = false;
    this.writersWaiting = 0;
    this.waiters = [];
  }
  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  async read() {
    while (this.writer || this.writersWaiting) await new Promise((r) => this.waiters.push(r));
    this.readers++;
  }
  readDone() {
    this.readers--;
    this.wake();
  }
  async write() {
    this.writersWaiting++;
    while (this.writer || this.readers) await new Promise((r) => this.waiters.push(r));
    this.writersWaiting--;
    this.writer = true;
  }
  writeDone() {
    this.writer = false;
    this.wake();
  }
}

// slot: {id, marker, lock, running: Set of the operations on it now}
const slots = [];
const extraVms = new Set(); // forks and VMs from snapshots not deleted yet
const extraSnapshots = new Set();

/**
 * An operation on a slot. others() names the operations that ran on the
 * same VM at any time since it began (for the failure report).
 */
function enter(slot, op) {
  const e = { op, seen: new Set() };
  for (const o of slot.running) {
    o.seen.add(op);
    e.seen.add(o.op);
  }
  slot.running.add(e);
  e.others = () => [...e.seen];
  return e;
}
const leave = (slot, e) => slot.running.delete(e);

const enc = encodeURIComponent;
const vmPath = (id, rest = "") => `/v1/vms/${enc(id)}${rest}`;
const filePath = (id, p) => `/v1/vms/${enc(id)}/files/${enc(p)}`;

/** exec-await; checks status 0 and stdout; returns true when both hold. */
async function execCheck(label, id, command, want, ctx) {
  const res = await request("POST", vmPath(id, "/exec-await"), { command });
  if (!record(label, res, ctx)) return false;
  const j = res.json ?? {};
  if (j.statusCode !== 0 || j.stdout !== want) {
    checkFail(label, `exec "${command.slice(0, 60)}": want stdout ${JSON.stringify(want)} and status 0`,
      `VM ${id}: got ${JSON.stringify({ statusCode: j.statusCode, stdout: j.stdout, stderr: j.stderr }).slice(0, 300)}`);
    return false;
  }
  return true;
}

/**
 * Creates a VM with a marker file; returns the slot fields or null. Retries
 * capacity refusals for a while and other failures (already recorded) a few
 * times, so that one failed create does not shrink the set.
 */
async function createMarked(label) {
  for (let attempt = 0, failures = 0; attempt < 30 && failures < 3; attempt++) {
    const res = await request("POST", "/v1/vms", {});
    if (record(label, res)) {
      const id = res.json?.id;
      if (typeof id !== "string" || !/^[a-z0-9]{20}$/.test(id)) {
        checkFail(label, "create answers a VM id", res.text.slice(0, 200));
        return null;
      }
      const marker = `marker-${id}-${token()}`;
      const put = await request("PUT", filePath(id, "/root/load-marker"), { content: marker + "\n" });
      if (!record("create.marker", put)) return { id, marker: null };
      return { id, marker };
    }
    if (res.status !== 429 && res.status !== 507) failures++;
    await sleep(2000);
  }
  return null;
}

// ---- operations ----

/** A fork or a VM from a snapshot: it execs and has the source's marker file. */
function copyCheck(label, id, marker, ctx) {
  const t = `load-${token()}`;
  if (!marker) return execCheck(label, id, `echo ${t}`, `${t}\n`, ctx);
  return execCheck(label, id, `cat /root/load-marker; echo ${t}`, `${marker}\n${t}\n`, ctx);
}

const OPS = {
  async exec(slot, e) {
    const t = `load-${token()}`;
    const a = 1 + Math.floor(random() * 1000),
      b = 1 + Math.floor(random() * 1000);
    const [cmd, want] = pick([
      [`echo ${t}`, `${t}\n`],
      [`printf '%s' ${t} | wc -c`, `${t.length}\n`],
      [`expr ${a} + ${b}`, `${a + b}\n`],
      [`cat /root/load-marker`, slot.marker ? `${slot.marker}\n` : null],
      [`echo ${t} >&2; echo out`, `out\n`],
    ]);
    if (want === null) return execCheck("exec", slot.id, "true", "", e);
    await execCheck("exec", slot.id, cmd, want, e);
  },

  async file(slot, e, client) {
    const p = `/root/load-c${client}.dat`;
    let body, want;
    if (random() < 0.5) {
      want = randomBytes(Math.floor(random() * 65536));
      body = { content: want.toString("base64"), encoding: "base64" };
    } else {
      want = Buffer.from(`load ${token()} ${"x".repeat(Math.floor(random() * 4096))}\n`);
      body = { content: want.toString("utf8") };
    }
    const put = await request("PUT", filePath(slot.id, p), body);
    if (!record("file.put", put, e)) return;
    const get = await request("GET", filePath(slot.id, p));
    if (!record("file.get", get, e)) return;
    const j = get.json ?? {};
    const back = typeof j.content === "string" ? Buffer.from(j.content, j.encoding === "base64" ? "base64" : "utf8") : null;
    if (!back || !back.equals(want)) {
      checkFail("file.get", "file content round-trips",
        `VM ${slot.id} ${p}: put ${want.length} bytes, got ${back ? back.length + " different bytes" : get.text.slice(0, 120)}`);
    }
  },

  async suspend(slot, e) {
    const res = await request("POST", vmPath(slot.id, "/suspend"));
    if (!record("suspend", res, e)) return;
    const t = `load-${token()}`;
    await execCheck("exec.after-suspend", slot.id, `echo ${t}`, `${t}\n`, e);
  },

  async start(slot, e) {
    const res = await request("POST", vmPath(slot.id, "/start"), {});
    record("start", res, e);
  },

  async fork(slot, e, _client, release) {
    const marker = slot.marker;
    const res = await request("POST", vmPath(slot.id, "/fork"), { count: 1 });
    release();
    // Failures of the copy are shown with what ran on the parent during the fork.
    const during = e.others();
    const ctx = { others: () => during };
    const ids = (res.json?.forks ?? []).map((f) => f?.id).filter((x) => typeof x === "string");
    for (const id of ids) extraVms.add(id);
    if (record("fork", res, e)) {
      if (ids.length !== 1) checkFail("fork", "fork {count: 1} answers one fork", res.text.slice(0, 200));
      for (const id of ids) await copyCheck("fork.exec", id, marker, ctx);
    }
    for (const id of ids) {
      const del = await request("DELETE", vmPath(id));
      if (record("fork.delete", del, ctx)) extraVms.delete(id);
    }
  },

  async snapshot(slot, e, _client, release) {
    const marker = slot.marker;
    const res = await request("POST", vmPath(slot.id, "/snapshot"), { name: `load-${token()}` });
    release();
    const during = e.others();
    const ctx = { others: () => during };
    if (!record("snapshot", res, e)) return;
    const sid = res.json?.snapshotId;
    if (typeof sid !== "string" || !/^sc-[a-z0-9]{20}$/.test(sid)) {
      checkFail("snapshot", "snapshot answers a snapshot id", res.text.slice(0, 200));
      return;
    }
    extraSnapshots.add(sid);
    if (random() < 0.3) {
      // Failures of the VM made from it are shown with what ran on the
      // source during the snapshot.
      let c = await request("POST", "/v1/vms", { snapshotId: sid });
      record("snapshot.create-vm", c, ctx);
      if (c.status >= 500 && c.status !== 507) {
        // Once more, to tell a failed create from a broken snapshot.
        await sleep(1000);
        c = await request("POST", "/v1/vms", { snapshotId: sid });
        record("snapshot.create-vm.retry", c, ctx);
      }
      const id = c.json?.id;
      if (c.status === 200 && typeof id === "string") {
        extraVms.add(id);
        await copyCheck("snapshot.vm-exec", id, marker, ctx);
        const del = await request("DELETE", vmPath(id));
        if (record("snapshot.vm-delete", del, ctx)) extraVms.delete(id);
      }
    }
    const del = await request("DELETE", `/v1/vms/snapshots/${enc(sid)}`);
    if (record("snapshot.delete", del, ctx)) extraSnapshots.delete(sid);
  },

  // Runs under the slot's write lock: nothing else uses the VM meanwhile.
  async recreate(slot) {
    const del = await request("DELETE", vmPath(slot.id));
    if (!record("delete", del)) return;
    const old = slot.id;
    slot.id = null;
    const made = await createMarked("recreate");
    if (!made) {
      checkFail("recreate", "the VM set stays at its size (a create after a delete failed)", `slot of ${old}`);
      return;
    }
    Object.assign(slot, made);
  },

  async info(slot, e) {
    const res = await request("GET", vmPath(slot.id));
    if (!record("info", res, e)) return;
    if (res.json?.id !== slot.id || typeof res.json?.state !== "string")
      checkFail("info", "info names the VM and its state", res.text.slice(0, 200));
  },
};

// Weights of the mix.
const MIX = [
  ["exec", 30],
  ["file", 16],
  ["suspend", 10],
  ["start", 5],
  ["fork", 8],
  ["snapshot", 7],
  ["recreate", 4],
  ["info", 20],
];
const MIX_TOTAL = MIX.reduce((a, [, w]) => a + w, 0);
function pickOp() {
  let x = random() * MIX_TOTAL;
  for (const [op, w] of MIX) if ((x -= w) < 0) return op;
  return MIX[0][0];
}

let progress = 0;
async function client(n) {
  for (let i = 0; i < REQUESTS; i++) {
    const op = pickOp();
    const slot = pick(slots);
    if (op === "recreate") {
      await slot.lock.write();
      try {
        if (slot.id) await OPS.recreate(slot);
      } finally {
        slot.lock.writeDone();
      }
    } else {
      await slot.lock.read();
      const e = enter(slot, op);
      let held = true;
      // Fork and snapshot let go of the VM once they are answered: what
      // they go on with (the copies) does not need it.
      const release = () => {
        if (!held) return;
        held = false;
        leave(slot, e);
        slot.lock.readDone();
      };
      try {
        if (slot.id) await OPS[op](slot, e, n, release);
      } finally {
        release();
      }
    }
    progress++;
  }
}

// While the load runs: requests that wait for no VM, once a second. A
// long wait means the daemon as a whole stopped answering.
const stalls = []; // {probe, atS (into the load), ms}
let probing = false;
async function prober(t0) {
  while (probing) {
    const t = Date.now();
    await Promise.all(
      [["probe.healthz", "/healthz"], ["probe.list", "/v1/vms"]].map(async ([label, path]) => {
        const res = await request("GET", path);
        record(label, res);
        if (res.ms > STALL_MS) stalls.push({ probe: label, atS: Math.round((t - t0) / 1000), ms: Math.round(res.ms) });
      }),
    );
    await sleep(Math.max(0, 1000 - (Date.now() - t)));
  }
}

// ---- sproutd's resources ----

function resources() {
  if (!PID) return null;
  try {
    const fds = readdirSync(`/proc/${PID}/fd`).length;
    const st = readFileSync(`/proc/${PID}/status`, "utf8");
    const threads = Number(/^Threads:\s+(\d+)/m.exec(st)?.[1]);
    const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(st)?.[1]);
    return { fds, threads, rssMiB: Math.round((rssKiB / 1024) * 10) / 10 };
  } catch (e) {
    return { error: String(e) };
  }
}

/** Closes our keep-alive connections, waits SETTLE_S and measures. */
async function settleAndMeasure() {
  agent.destroy();
  agent = new http.Agent({ keepAlive: true, maxSockets: 256, timeout: 60_000 });
  await sleep(SETTLE_S * 1000);
  return resources();
}

/** Runs a command in every VM of the set (so all run, as when measured first) and checks its marker. */
async function touchAll(label) {
  let ok = true;
  await Promise.all(
    slots.map(async (s) => {
      if (!s.id) return; // lost to a failed recreate, which is counted already
      if (!(await execCheck(label, s.id, "cat /root/load-marker", s.marker ? `${s.marker}\n` : "")))
        ok = false;
    }),
  );
  return ok;
}

// ---- main ----

const checks = [];
function check(name, ok, detail = "") {
  checks.push({ name, ok: !!ok });
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ` (${detail})` : ""}`);
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]);
}

async function cleanup() {
  const ids = [...slots.map((s) => s.id).filter(Boolean), ...extraVms];
  const bad = [];
  await Promise.all(
    ids.map(async (id) => {
      const r = await request("DELETE", vmPath(id), undefined, 300_000);
      if (r.status !== 200 && r.status !== 404) bad.push(`${id}: ${r.status} ${r.error ?? r.text.slice(0, 120)}`);
    }),
  );
  for (const sid of extraSnapshots) {
    const r = await request("DELETE", `/v1/vms/snapshots/${enc(sid)}`, undefined, 60_000);
    if (r.status !== 200 && r.status !== 404) bad.push(`${sid}: ${r.status} ${r.error ?? r.text.slice(0, 120)}`);
  }
  return bad;
}

async function main() {
  log(`load: ${CLIENTS} clients x ${REQUESTS} operations on ${NVMS} VMs, seed ${SEED}, against ${BASE.origin}` +
    (PID ? `, sproutd pid ${PID}` : ", no SPROUTD_PID: resource checks skipped"));
  const t0 = Date.now();

  // The VM set.
  const made = await Promise.all(Array.from({ length: NVMS }, () => createMarked("create")));
  for (const m of made) if (m) slots.push({ ...m, lock: new RwLock(), running: new Set() });
  check(`create ${NVMS} VMs`, slots.length === NVMS && slots.every((s) => s.marker), `${slots.length} made in ${Date.now() - t0} ms`);
  if (slots.length === 0) return finish(null, null, 0);
  await touchAll("exec.warmup");

  const before = await settleAndMeasure();
  if (before) log(`before: ${JSON.stringify(before)}`);

  const tLoad = Date.now();
  const ticker = setInterval(() => {
    log(`${progress}/${CLIENTS * REQUESTS} operations, ${Math.round((Date.now() - tLoad) / 1000)} s, ` +
      `${unexpected5xx} unexpected 5xx, ${unexpected4xx} unexpected 4xx, ${noAnswer} without answer, ${wrongOutput} wrong outputs`);
    const now = performance.now();
    const slow = [...inFlight].filter((f) => now - f.t0 > 30_000).sort((a, b) => a.t0 - b.t0);
    if (slow.length)
      log(`  waiting over 30 s: ${slow.slice(0, 6).map((f) => `${f.what} (${Math.round((now - f.t0) / 1000)} s)`).join(", ")}` +
        (slow.length > 6 ? ` and ${slow.length - 6} more` : ""));
  }, 15_000);
  probing = true;
  const probes = prober(tLoad);
  await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
  probing = false;
  await probes;
  clearInterval(ticker);
  const loadMs = Date.now() - tLoad;

  // Afterwards: every VM of the set runs and has its marker; the server
  // lists exactly the set (no fork or VM from a snapshot left behind).
  check("every VM of the set answers with its marker after the load", await touchAll("exec.final"));
  const list = await request("GET", "/v1/vms");
  const listed = new Set((list.json?.vms ?? []).filter((v) => v.state !== "deleted").map((v) => v.id));
  const want = new Set(slots.map((s) => s.id).filter(Boolean));
  const missing = [...want].filter((id) => !listed.has(id));
  const extra = [...listed].filter((id) => !want.has(id) && !extraVms.has(id));
  check("GET /v1/vms lists exactly the VMs the load kept", list.status === 200 && !missing.length && !extra.length,
    `missing ${missing.length}, extra ${extra.length}${extra.length ? ": " + extra.slice(0, 4).join(" ") : ""}` +
      `, not deleted after a failure ${extraVms.size}`);

  const after = await settleAndMeasure();
  if (after) log(`after: ${JSON.stringify(after)}`);
  return finish(before, after, loadMs);
}

async function finish(before, after, loadMs) {
  // Per-operation figures.
  const rows = [];
  console.log("");
  console.log(`${"operation".padEnd(26)} ${"count".padStart(6)} ${"p50ms".padStart(8)} ${"p99ms".padStart(8)} ${"4xx".padStart(5)} ${"5xx".padStart(5)}  codes`);
  for (const [label, s] of [...stats].sort((a, b) => a[0].localeCompare(b[0]))) {
    const sorted = [...s.ms].sort((a, b) => a - b);
    const row = { op: label, count: sorted.length, p50: pct(sorted, 0.5), p99: pct(sorted, 0.99), s4xx: s.s4xx, s5xx: s.s5xx, capacity: s.allowed, codes: Object.fromEntries(s.codes) };
    rows.push(row);
    const codes = [...s.codes].map(([k, n]) => `${k} x${n}`).join(", ");
    console.log(`${label.padEnd(26)} ${String(row.count).padStart(6)} ${String(row.p50).padStart(8)} ${String(row.p99).padStart(8)} ${String(s.s4xx).padStart(5)} ${String(s.s5xx).padStart(5)}  ${codes}`);
  }
  if (problems.size) {
    console.log("\nanswers that are failures (count, operation, status, code, message; what else ran on that VM meanwhile;\n" +
      "for a fork's or a snapshot's copy: on the source during the fork or snapshot):");
    for (const p of [...problems.values()].sort((a, b) => b.count - a.count)) {
      const mix = [...p.mix].map(([o, n]) => `${o} x${n}`).join(", ") || "nothing else";
      console.log(`  ${String(p.count).padStart(5)}  ${p.label}  ${p.status} ${p.code}  ${p.message}\n         concurrent on the VM: ${mix}`);
    }
  }
  if (checkFailures.size) {
    console.log("\nwrong outputs (count, operation, check; one example):");
    for (const c of [...checkFailures.values()].sort((a, b) => b.count - a.count))
      console.log(`  ${String(c.count).padStart(5)}  ${c.label}  ${c.what}\n         e.g. ${c.example}`);
  }
  console.log("");

  check("no 5xx but capacity refusals (507)", unexpected5xx === 0, `${unexpected5xx} unexpected, ${capacity} capacity refusals (429/507) in all`);
  check("no 4xx but capacity refusals (429)", unexpected4xx === 0, `${unexpected4xx}`);
  check("every request answered (no dropped connection or timeout)", noAnswer === 0, `${noAnswer} without an answer`);
  if (stats.has("probe.list")) {
    const worst = Math.round(Math.max(...["probe.healthz", "probe.list"].map((l) => Math.max(0, ...(stats.get(l)?.ms ?? [])))));
    check(`sproutd answers /healthz and GET /v1/vms within ${STALL_MS / 1000} s throughout the load`, stalls.length === 0,
      `longest ${worst} ms` + (stalls.length ? `; ${stalls.length} over, e.g. ${stalls.slice(0, 6).map((x) => `${x.probe} ${x.ms} ms at ${x.atS} s`).join(", ")}` : ""));
  }
  check("every output and file content is right", wrongOutput === 0, `${wrongOutput} wrong`);

  let growth = null;
  if (before && after && !before.error && !after.error) {
    growth = { fds: after.fds - before.fds, threads: after.threads - before.threads, rssMiB: Math.round((after.rssMiB - before.rssMiB) * 10) / 10 };
    check(`sproutd's open fds grow by at most ${FD_SLACK}`, growth.fds <= FD_SLACK, `${before.fds} -> ${after.fds}`);
    check(`sproutd's threads grow by at most ${THREAD_SLACK}`, growth.threads <= THREAD_SLACK, `${before.threads} -> ${after.threads}`);
    check(`sproutd's RSS grows by at most ${RSS_SLACK_MIB} MiB`, growth.rssMiB <= RSS_SLACK_MIB, `${before.rssMiB} -> ${after.rssMiB} MiB`);
  } else if (PID) {
    check("sproutd's resources can be read", false, JSON.stringify({ before, after }));
  }
  if (PID) {
    let alive = true;
    try {
      process.kill(PID, 0);
    } catch {
      alive = false;
    }
    check("sproutd still runs", alive);
  }

  const bad = await cleanup();
  check("every VM and snapshot the load made is deleted at the end", bad.length === 0, bad.slice(0, 3).join("; "));

  const passed = checks.filter((c) => c.ok).length;
  const failed = checks.length - passed;
  const summary = {
    load: {
      clients: CLIENTS, requests: REQUESTS, vms: NVMS, seed: SEED, loadSeconds: Math.round(loadMs / 100) / 10,
      before, after, growth, slack: { fds: FD_SLACK, threads: THREAD_SLACK, rssMiB: RSS_SLACK_MIB },
      unexpected5xx, unexpected4xx, noAnswer, wrongOutput, capacity, stalls,
      failures: [...problems.values()].map((p) => ({ count: p.count, op: p.label, status: p.status, code: p.code, message: p.message, concurrent: Object.fromEntries(p.mix) })),
      wrongOutputs: [...checkFailures.values()].map((c) => ({ count: c.count, op: c.label, check: c.what, example: c.example })),
      ops: rows,
      failedChecks: checks.filter((c) => !c.ok).map((c) => c.name),
    },
  };
  console.log(JSON.stringify(summary));
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

let exiting = false;
async function onSignal(sig) {
  if (exiting) process.exit(130);
  exiting = true;
  console.log(`# ${sig}: deleting what the load made`);
  await cleanup();
  console.log(`0 passed, 1 failed`);
  process.exit(130);
}
process.on("SIGINT", () => onSignal("SIGINT"));
process.on("SIGTERM", () => onSignal("SIGTERM"));

main().then(
  (rc) => process.exit(rc),
  async (e) => {
    console.error(`load: ${e?.stack ?? e}`);
    await cleanup().catch(() => {});
    console.log(`0 passed, 1 failed`);
    process.exit(1);
  },
);
