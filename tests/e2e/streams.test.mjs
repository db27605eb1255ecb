// End-to-end tests of terminals, file watching and the stats stream. One VM;
// after() deletes it.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ADMIN_KEY, BASE, VmTracker, api, exec, expectError, ok, sleep } from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());
let A;

const term = (command, terminal = "main", extra = {}) =>
  api("POST", `/v1/vms/${A}/exec-await`, { body: { command, terminal, ...extra } });

test("terminals: shell state persists between commands; list and logs", async () => {
  A = (await vms.create({})).id;
  let r = await term("cd /tmp; X=hello; sleep 300 &");
  assert.equal(r.status, 200, r.text);
  r = await term("pwd; echo $X; jobs | wc -l");
  assert.equal(r.json.stdout, "/tmp\nhello\n1\n");
  assert.equal(r.json.statusCode, 0);
  assert.equal((await term("false")).json.statusCode, 1);
  // Another terminal is a separate shell.
  assert.equal((await term("pwd; echo ${X:-unset}", "other")).json.stdout, "/root\nunset\n");

  const list = await ok("GET", `/v1/vms/${A}/terminals`);
  assert.deepEqual(list.terminals.map((t) => t.name).sort(), ["main", "other"]);
  const logs = await ok("GET", `/v1/vms/${A}/terminals/main/logs`);
  assert.ok(logs.logs.some((l) => l.line === "hello"), JSON.stringify(logs));
  const raw = await ok("GET", `/v1/vms/${A}/terminals/main/xterm-256color`);
  assert.match(raw.output, /hello/);
  expectError(await api("GET", `/v1/vms/${A}/terminals/nope/logs`), 404, "TERMINAL_NOT_FOUND");
});

test("terminals: a timeout interrupts the command and the terminal still works", async () => {
  const r = await term("sleep 100", "main", { timeoutMs: 1000 });
  expectError(r, 408, "EXEC_TIMED_OUT");
  assert.equal((await term("echo $X")).json.stdout, "hello\n");
});

/** Reads NDJSON lines from a streaming POST/GET until `until` returns true
 * for the collected objects or the time is up; then aborts the request. */
async function readStream(method, path, until, ms) {
  const ctl = new AbortController();
  const res = await fetch(BASE + path, { method, headers: { authorization: `Bearer ${ADMIN_KEY}` }, signal: ctl.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /ndjson/);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  const items = [];
  let buf = "";
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    while (!until(items)) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (line) items.push(JSON.parse(line));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") throw e;
  } finally {
    clearTimeout(timer);
    ctl.abort();
  }
  return items;
}

test("watch-files: created, modified, renamed and deleted events, in new directories too", async () => {
  const want = (ev) => ev.some((e) => e.kind === "deleted" && e.path === "/root/w/b.txt");
  const events = readStream("POST", `/v1/vms/${A}/watch-files`, want, 20000);
  await sleep(1000);
  await exec(A, "mkdir -p /root/w/sub && echo 1 > /root/w/sub/a.txt && echo 2 >> /root/w/sub/a.txt && " +
    "mv /root/w/sub/a.txt /root/w/b.txt && rm /root/w/b.txt");
  const ev = await events;
  const has = (kind, p) => ev.some((e) => e.kind === kind && e.path === p);
  assert.ok(has("created", "/root/w"), JSON.stringify(ev));
  assert.ok(has("created", "/root/w/sub/a.txt"), JSON.stringify(ev));
  assert.ok(has("modified", "/root/w/sub/a.txt"), JSON.stringify(ev));
  assert.ok(ev.some((e) => e.kind === "renamed" && e.path === "/root/w/b.txt" && e.oldPath === "/root/w/sub/a.txt"), JSON.stringify(ev));
  assert.ok(has("deleted", "/root/w/b.txt"), JSON.stringify(ev));
});

test("stats stream: samples of memory and CPU at the requested interval (clamped)", async () => {
  const t0 = Date.now();
  const samples = await readStream("GET", `/v1/vms/${A}/stats/stream?interval_ms=200`, (s) => s.length >= 4, 15000);
  assert.ok(samples.length >= 4);
  for (const s of samples) {
    assert.ok(s.memory.totalBytes > 500e6 && s.memory.usedBytes > 0 && s.memory.usedBytes < s.memory.totalBytes, JSON.stringify(s));
    assert.ok(s.cpu.usagePercent >= 0 && s.cpu.usagePercent <= 100 && s.cpu.count >= 1, JSON.stringify(s));
  }
  assert.ok(Date.now() - t0 >= 550, "three intervals of 200 ms passed");
  // interval_ms=1 is clamped to 100 ms: 3 samples cannot come in under 200 ms.
  const t1 = Date.now();
  await readStream("GET", `/v1/vms/${A}/stats/stream?interval_ms=1`, (s) => s.length >= 3, 15000);
  assert.ok(Date.now() - t1 >= 190);
  expectError(await api("GET", `/v1/vms/zzzzzzzzzzzzzzzzzzzz/stats/stream`), 404, "VM_NOT_FOUND");
});
