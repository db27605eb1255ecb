// End-to-end tests of the `sprout` CLI (build/sprout) against the running
// sproutd: keys create, the vm commands (exit codes propagate), the file,
// stream, terminal, service and snapshot commands and the VM's lifecycle,
// with human and --json output, each checked against what the API then
// says. One VM (and two forks of it), owned by a key the CLI mints.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { ADMIN_KEY, BASE, CREATE_TIMEOUT, SPROUT_BIN, VmTracker, api, runCli, sleep } from "./lib.mjs";

const vms = new VmTracker();
let dir;
let key; // a non-admin key for a fresh account, minted by `sprout keys create`
let vmId;

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "sprout-cli-e2e-"));
});
after(async () => {
  await vms.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const asAdmin = { SPROUT_URL: BASE, SPROUT_API_KEY: ADMIN_KEY };
const cli = (args, opts = {}) => runCli(args, { env: { SPROUT_URL: BASE, SPROUT_API_KEY: key }, ...opts });

function needVm() {
  assert.ok(vmId, "no VM: vm create failed");
  return vmId;
}

/** GET /v1/vms/ID as the CLI's key; the JSON. */
async function vmInfo(id) {
  const res = await api("GET", `/v1/vms/${id}`, { key });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

/**
 * Starts the CLI in the background (for the commands that run until
 * stopped). Returns {out() (stdout so far), stderr(), until(re, ms) (waits
 * for stdout to match), stop() (SIGTERM; resolves to the exit code),
 * exited (a Promise of {code, signal})}.
 */
function startCli(args) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("SPROUT_") && !k.startsWith("FREESTYLE_")) env[k] = v;
  }
  const child = spawn(SPROUT_BIN, args, { env: { ...env, SPROUT_URL: BASE, SPROUT_API_KEY: key }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  let ended = false;
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise((resolve) => child.on("close", (code, signal) => {
    ended = true;
    resolve({ code, signal });
  }));
  return {
    out: () => out,
    stderr: () => err,
    ended: () => ended,
    exited,
    async until(re, ms) {
      const t0 = Date.now();
      while (!re.test(out) && !ended && Date.now() - t0 < ms) await sleep(100);
      return re.test(out);
    },
    stop() {
      if (!ended) child.kill("SIGTERM");
      return exited;
    },
  };
}

function okRun(r, what) {
  assert.equal(r.code, 0, `${what}: exit ${r.code} ${r.signal ?? ""}\nstdout: ${r.out.slice(0, 300)}\nstderr: ${r.stderr}`);
  return r;
}

test("keys create prints the new key alone on its last line", async () => {
  const account = `cli-e2e-${randomBytes(3).toString("hex")}`;
  const r = okRun(await runCli(["keys", "create", "--account", account], { env: asAdmin }), "keys create");
  const lines = r.out.trimEnd().split("\n");
  key = lines.at(-1);
  assert.match(key, /^\S+$/, `last line: ${JSON.stringify(key)}`);
  assert.notEqual(key, ADMIN_KEY);
  const j = okRun(await runCli(["keys", "create", "--account", account, "--json"], { env: asAdmin }), "keys --json");
  const body = JSON.parse(j.out);
  assert.equal(body.account, account);
  assert.equal(typeof body.key, "string");
});

test("keys create with a non-admin key fails with FORBIDDEN", async () => {
  assert.ok(key, "no key");
  const r = await cli(["keys", "create"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /FORBIDDEN/);
});

test("vm create prints the id", { timeout: CREATE_TIMEOUT }, async () => {
  assert.ok(key, "no key");
  const r = okRun(await cli(["vm", "create", "--name", "cli-vm"]), "vm create");
  vmId = r.out.trim();
  assert.match(vmId, /^[a-z0-9]{20}$/);
  vms.track(vmId, key);
});

test("vm list shows the VM, human and --json", async () => {
  const id = needVm();
  const human = okRun(await cli(["vm", "list"]), "vm list");
  const row = human.out.split("\n").find((l) => l.startsWith(id));
  assert.ok(row, `row for ${id} in:\n${human.out}`);
  assert.match(row, /cli-vm/);
  assert.match(row, /running/);
  const json = JSON.parse(okRun(await cli(["vm", "list", "--json"]), "vm list --json").out);
  assert.deepEqual(json.vms.map((v) => v.id), [id]);
  assert.equal(json.totalCount, 1);
  const filtered = JSON.parse(okRun(await cli(["vm", "list", "--state", "stopped", "--json"]), "list stopped").out);
  assert.equal(filtered.vms.length, 0);
  const paged = JSON.parse(okRun(await cli(["vm", "list", "--limit", "1", "--offset", "1", "--json"]), "list").out);
  assert.equal(paged.vms.length, 0);
});

test("vm get shows the VM, human and --json", async () => {
  const id = needVm();
  const human = okRun(await cli(["vm", "get", id]), "vm get");
  assert.match(human.out, new RegExp(`^id\\s+${id}$`, "m"));
  assert.match(human.out, /^state\s+running$/m);
  const json = JSON.parse(okRun(await cli(["vm", "get", id, "--json"]), "vm get --json").out);
  assert.equal(json.id, id);
});

test("vm exec: output streams and exit codes propagate", async () => {
  const id = needVm();
  const hi = okRun(await cli(["vm", "exec", id, "--", "echo", "hi"]), "exec echo hi");
  assert.equal(hi.out, "hi\n");
  assert.equal(hi.stderr, "");

  const fail = await cli(["vm", "exec", id, "echo out; echo oops >&2; exit 7"]);
  assert.equal(fail.code, 7, fail.stderr);
  assert.equal(fail.out, "out\n");
  assert.equal(fail.stderr, "oops\n");

  // Several words are an argv: each is quoted for the guest shell.
  const quoted = okRun(await cli(["vm", "exec", id, "--", "printf", "%s\\n", "a b", "c'd", "$HOME"]), "exec argv");
  assert.equal(quoted.out, "a b\nc'd\n$HOME\n");

  const json = await cli(["vm", "exec", id, "--json", "--", "sh", "-c", "echo j; exit 3"]);
  assert.equal(json.code, 3);
  const body = JSON.parse(json.out);
  assert.equal(body.stdout, "j\n");
  assert.equal(body.statusCode, 3);
});

test("vm exec --timeout fails quickly with exit 124", async () => {
  const id = needVm();
  const t0 = Date.now();
  const r = await cli(["vm", "exec", id, "--timeout", "1000", "--", "sleep", "60"]);
  assert.equal(r.code, 124, r.stderr);
  assert.match(r.stderr, /EXEC_TIMED_OUT/);
  assert.ok(Date.now() - t0 < 20000);
});

test("file put/get round trip: binary file, stdin, -o, --json", { timeout: 120_000 }, async () => {
  const id = needVm();
  const data = randomBytes(200 * 1024);
  const src = path.join(dir, "src.bin");
  writeFileSync(src, data);

  const put = okRun(await cli(["file", "put", id, "/root/cli.bin", src]), "file put");
  assert.match(put.out, /wrote 204800 bytes to \/root\/cli\.bin/);

  const stdout = okRun(await cli(["file", "get", id, "/root/cli.bin"]), "file get");
  assert.ok(stdout.stdout.equals(data), "stdout bytes differ");

  const out = path.join(dir, "out.bin");
  okRun(await cli(["file", "get", id, "/root/cli.bin", "-o", out]), "file get -o");
  assert.ok(readFileSync(out).equals(data), "-o file bytes differ");

  const json = JSON.parse(okRun(await cli(["file", "get", id, "/root/cli.bin", "--json"]), "file get --json").out);
  assert.ok(Buffer.from(json.content, json.encoding === "base64" ? "base64" : "utf8").equals(data));

  okRun(await cli(["file", "put", id, "/root/stdin.txt", "-"], { input: "from stdin\n" }), "file put -");
  const text = okRun(await cli(["file", "get", id, "/root/stdin.txt"]), "file get text");
  assert.equal(text.out, "from stdin\n");

  const putJson = okRun(await cli(["file", "put", id, "/root/j.txt", "--json"], { input: "x" }), "put --json");
  assert.equal(typeof JSON.parse(putJson.out), "object");

  const ls = okRun(await cli(["file", "get", id, "/root"]), "file get dir");
  const names = ls.out.split("\n");
  assert.ok(names.includes("cli.bin"), ls.out);
  assert.ok(names.includes("stdin.txt"), ls.out);

  const missing = await cli(["file", "get", id, "/root/nope"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /FILE_NOT_FOUND/);
});

test("errors: unknown VM, bad key, usage", async () => {
  const r = await cli(["vm", "get", "zzzzzzzzzzzzzzzzzzzz"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /VM_NOT_FOUND/);
  const bad = await runCli(["vm", "list"], { env: { SPROUT_URL: BASE, SPROUT_API_KEY: "nope" } });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /UNAUTHORIZED/);
  const usage = await cli(["vm", "exec"]);
  assert.equal(usage.code, 2);
});

test("vm stats: a sample, --json, and --follow streams samples", { timeout: 120_000 }, async () => {
  const id = needVm();
  const human = okRun(await cli(["vm", "stats", id]), "vm stats");
  assert.match(human.out, /^\S+Z {2}mem \d+\.\d\/\d+\.\d MiB \(\d+\.\d%\) {2}cpu \d+\.\d% of \d+ {2}load [\d.]+ [\d.]+ [\d.]+\n$/, human.out);
  const one = JSON.parse(okRun(await cli(["vm", "stats", id, "--json"]), "vm stats --json").out);
  assert.equal(one.vmId, id);
  assert.ok(one.memory.totalBytes > 100e6 && one.memory.usedBytes > 0, JSON.stringify(one));
  const follow = startCli(["vm", "stats", id, "--follow", "--interval", "200", "--json"]);
  const got = await follow.until(/(.*\n){3}/, 30_000);
  const exit = await follow.stop();
  assert.ok(got, `three samples: ${follow.out()} ${follow.stderr()}`);
  assert.equal(exit.signal, "SIGTERM", "--follow runs until it is stopped");
  const samples = follow.out().trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.ok(samples.length >= 3 && samples.every((x) => x.vmId === id && x.cpu.count >= 1), follow.out());
  const gone = await cli(["vm", "stats", "zzzzzzzzzzzzzzzzzzzz"]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /VM_NOT_FOUND/);
});

test("vm watch: a line per file change until stopped", { timeout: 120_000 }, async () => {
  const id = needVm();
  const watch = startCli(["vm", "watch", id]);
  try {
    // The watch is set up in the guest once the request arrives: touch files until one is seen.
    let seen = false;
    for (let i = 0; i < 20 && !seen && !watch.ended(); i++) {
      okRun(await cli(["vm", "exec", id, `mkdir -p /root/cliw && echo ${i} > /root/cliw/f${i}`]), "exec touch");
      seen = await watch.until(/^created \/root\/cliw\/f\d+$/m, 1000);
    }
    assert.ok(seen, `an event for /root/cliw: ${watch.out()} ${watch.stderr()}`);
    okRun(await cli(["vm", "exec", id, "echo x > /root/cliw/a && mv /root/cliw/a /root/cliw/b && rm /root/cliw/b"]), "exec mv");
    assert.ok(await watch.until(/^deleted \/root\/cliw\/b$/m, 20_000), watch.out());
    assert.match(watch.out(), /^renamed \/root\/cliw\/a -> \/root\/cliw\/b$/m);
    assert.ok(!watch.ended(), "watch keeps running");
  } finally {
    await watch.stop();
  }
});

test("terminal list and logs, plain and --xterm", async () => {
  const id = needVm();
  const res = await api("POST", `/v1/vms/${id}/exec-await`, { key, body: { command: "echo cli-term-$((6*7))", terminal: "cliterm" } });
  assert.equal(res.status, 200, res.text);
  const list = okRun(await cli(["terminal", "list", id]), "terminal list");
  assert.match(list.out, /^NAME\s+STATUS\s+CREATED$/m);
  assert.match(list.out, /^cliterm\s+running\s/m);
  const logs = okRun(await cli(["terminal", "logs", id, "cliterm"]), "terminal logs");
  assert.ok(logs.out.split("\n").includes("cli-term-42"), logs.out);
  const xterm = okRun(await cli(["terminal", "logs", id, "cliterm", "--xterm"]), "terminal logs --xterm");
  assert.match(xterm.out, /cli-term-42/);
  const json = JSON.parse(okRun(await cli(["terminal", "logs", id, "cliterm", "--json"]), "logs --json").out);
  assert.ok(json.logs.some((l) => l.line === "cli-term-42"), JSON.stringify(json));
  const missing = await cli(["terminal", "logs", id, "nope"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /TERMINAL_NOT_FOUND/);
});

test("service create, list, status, get, logs, stop, start, restart, delete", { timeout: 180_000 }, async () => {
  const id = needVm();
  const spec = path.join(dir, "svc.json");
  writeFileSync(spec, JSON.stringify({ name: "clisvc", mode: "service", exec: ["while true; do echo cli-tick; sleep 0.5; done"] }));
  const status = async () => (await api("GET", `/v1/vms/${id}/systemd/services/clisvc/status`, { key })).json?.activeState;

  const created = okRun(await cli(["service", "create", id, "--spec", spec]), "service create");
  assert.equal(created.out, "created clisvc.service\n");
  assert.equal(await status(), "active");
  const list = okRun(await cli(["service", "list", id]), "service list");
  assert.ok(list.out.split("\n").includes("clisvc"), list.out);
  const st = okRun(await cli(["service", "status", id, "clisvc"]), "service status");
  assert.equal(st.out, "clisvc: active (running), loaded\n");
  const get = okRun(await cli(["service", "get", id, "clisvc"]), "service get");
  assert.match(get.out, /^activeState\s+active$/m);
  assert.match(get.out, /^loadState\s+loaded$/m);
  await sleep(1500);
  const logs = okRun(await cli(["service", "logs", id, "clisvc", "--lines", "5"]), "service logs");
  const lines = logs.out.trimEnd().split("\n");
  assert.ok(lines.length >= 1 && lines.length <= 5, logs.out);
  assert.ok(lines.some((l) => / cli-tick$/.test(l)), logs.out);

  assert.equal(okRun(await cli(["service", "stop", id, "clisvc"]), "service stop").out, "stopped clisvc\n");
  assert.equal(await status(), "inactive");
  assert.equal(okRun(await cli(["service", "start", id, "clisvc"]), "service start").out, "started clisvc\n");
  assert.equal(await status(), "active");
  const both = await cli(["service", "restart", id, "clisvc", "nosuchsvc"]);
  assert.equal(both.code, 1, "a service that failed fails the command");
  assert.equal(both.out, "restarted clisvc\n");
  assert.match(both.stderr, /service restart: nosuchsvc: /);
  assert.equal(await status(), "active");

  const again = await cli(["service", "create", id, "--spec", spec]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /SERVICE_ALREADY_EXISTS/);
  assert.equal(okRun(await cli(["service", "delete", id, "clisvc"]), "service delete").out, "deleted clisvc\n");
  const gone = await cli(["service", "status", id, "clisvc"]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /SERVICE_NOT_FOUND/);
  assert.ok(!okRun(await cli(["service", "list", id]), "list").out.split("\n").includes("clisvc"));
});

test("vm build: a VM from the default snapshot has none", async () => {
  const r = await cli(["vm", "build", needVm()]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /BUILD_NOT_FOUND_FOR_VM/);
});

test("vm snapshot, then snapshot list, get, update and delete", { timeout: 180_000 }, async () => {
  const id = needVm();
  const sid = okRun(await cli(["vm", "snapshot", id, "--name", "cli-snap"]), "vm snapshot").out.trim();
  assert.match(sid, /^\S+$/);
  const list = okRun(await cli(["snapshot", "list"]), "snapshot list");
  assert.match(list.out, new RegExp(`^${sid}\\s+cli-snap\\s+ready\\s+${id}\\s`, "m"));
  assert.match(list.out, /^\d+ total, \d+ ready, /m);
  const get = okRun(await cli(["snapshot", "get", sid]), "snapshot get");
  assert.match(get.out, new RegExp(`^snapshotId\\s+${sid}$`, "m"));
  assert.match(get.out, /^name\s+cli-snap$/m);
  assert.equal(okRun(await cli(["snapshot", "update", sid, "--name", "cli-snap-2"]), "update").out, `updated ${sid}\n`);
  assert.equal((await api("GET", `/v1/vms/snapshots/${sid}`, { key })).json?.name, "cli-snap-2");
  assert.equal(okRun(await cli(["snapshot", "delete", sid]), "snapshot delete").out, `deleted ${sid}\n`);
  const after = JSON.parse(okRun(await cli(["snapshot", "list", "--json"]), "list --json").out);
  assert.ok(!after.snapshots.some((x) => x.snapshotId === sid), JSON.stringify(after));
  const deleted = JSON.parse(okRun(await cli(["snapshot", "get", sid, "--json"]), "get deleted").out);
  assert.equal(deleted.deleted, true);
  const twice = await cli(["snapshot", "delete", sid]);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /SNAPSHOT/);
});

test("vm fork --count 2: two running copies with the parent's files", { timeout: CREATE_TIMEOUT }, async () => {
  const id = needVm();
  okRun(await cli(["vm", "exec", id, "echo from-parent > /root/fork-mark && sync"]), "exec mark");
  const r = okRun(await cli(["vm", "fork", id, "--count", "2"]), "vm fork");
  assert.equal(r.stderr, "", "no progress line when stderr is not a terminal");
  const forks = r.out.trimEnd().split("\n");
  forks.forEach((f) => vms.track(f, key));
  assert.equal(forks.length, 2, r.out);
  for (const f of forks) {
    assert.match(f, /^[a-z0-9]{20}$/);
    assert.notEqual(f, id);
    assert.equal((await vmInfo(f)).state, "running");
    assert.equal(okRun(await cli(["vm", "exec", f, "cat /root/fork-mark"]), "exec in fork").out, "from-parent\n");
    assert.equal(okRun(await cli(["vm", "delete", f]), "delete fork").out, `deleted ${f}\n`);
    vms.forget(f);
  }
});

test("vm suspend and start: suspended, then running with its processes", { timeout: 300_000 }, async () => {
  const id = needVm();
  okRun(await cli(["vm", "exec", id, "nohup sleep 10000 </dev/null >/dev/null 2>&1 & echo $! > /root/sleeper"]), "start sleeper");
  assert.equal(okRun(await cli(["vm", "suspend", id]), "vm suspend").out, `suspended ${id}\n`);
  assert.equal((await vmInfo(id)).state, "suspended");
  const json = JSON.parse(okRun(await cli(["vm", "start", id, "--json"]), "vm start --json").out);
  assert.equal(json.id, id);
  assert.equal((await vmInfo(id)).state, "running");
  const alive = okRun(await cli(["vm", "exec", id, "kill -0 $(cat /root/sleeper) && echo alive"]), "sleeper");
  assert.equal(alive.out, "alive\n");
});

test("vm optimize: the VM is suspended, and starts again", { timeout: 300_000 }, async () => {
  const id = needVm();
  assert.equal(okRun(await cli(["vm", "optimize", id]), "vm optimize").out, `optimized ${id}\n`);
  assert.equal((await vmInfo(id)).state, "suspended");
  assert.equal(okRun(await cli(["vm", "start", id]), "vm start").out, `started ${id}\n`);
  assert.equal((await vmInfo(id)).state, "running");
});

test("vm resize, stop and start: memory and vCPUs apply at the cold start", { timeout: 600_000 }, async () => {
  const id = needVm();
  assert.equal(okRun(await cli(["vm", "resize", id, "--memory-mb", "2048", "--vcpus", "2"]), "resize").out, `resized ${id}\n`);
  const pending = await vmInfo(id);
  assert.equal(pending.pendingMemSizeMb, 2048, JSON.stringify(pending));
  assert.equal(pending.pendingVcpuCount, 2, JSON.stringify(pending));
  const shrink = await cli(["vm", "resize", id, "--disk-gb", "1"]);
  assert.equal(shrink.code, 1);
  assert.match(shrink.stderr, /INVALID_PARAMETERS/);

  assert.equal(okRun(await cli(["vm", "stop", id]), "vm stop").out, `stopped ${id}\n`);
  assert.equal((await vmInfo(id)).state, "stopped");
  const again = await cli(["vm", "stop", id]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /VM_NOT_RUNNING/);
  okRun(await cli(["vm", "start", id]), "vm start (cold)");
  const info = await vmInfo(id);
  assert.equal(info.state, "running");
  assert.equal(info.memSizeMb, 2048, JSON.stringify(info));
  assert.equal(okRun(await cli(["vm", "exec", id, "nproc"]), "nproc").out, "2\n");
  assert.equal(okRun(await cli(["vm", "exec", id, "cat /root/fork-mark"]), "disk kept").out, "from-parent\n");
});

test("vm await blocks until vm kill ends the VM", { timeout: 120_000 }, async () => {
  const id = needVm();
  const waiting = startCli(["vm", "await", id]);
  await sleep(2000);
  assert.ok(!waiting.ended(), `await returned while the VM runs: ${waiting.out()} ${waiting.stderr()}`);
  assert.equal(okRun(await cli(["vm", "kill", id]), "vm kill").out, `killed ${id}\n`);
  const t0 = Date.now();
  let done = await Promise.race([waiting.exited, sleep(30_000).then(() => null)]);
  if (!done) done = await waiting.stop();
  assert.equal(done.code, 0, `await: ${JSON.stringify(done)} ${waiting.stderr()}`);
  assert.ok(Date.now() - t0 < 30_000);
  assert.equal(waiting.out(), `stopped ${id}\n`);
  assert.equal((await vmInfo(id)).state, "stopped");
  // On a stopped VM it answers at once.
  const json = JSON.parse(okRun(await cli(["vm", "await", id, "--json"]), "await --json").out);
  assert.equal(json.id, id);
  assert.equal(json.exitStatus, "stopped");
});

test("vm delete, then get fails", async () => {
  const id = needVm();
  const r = okRun(await cli(["vm", "delete", id]), "vm delete");
  assert.equal(r.out, `deleted ${id}\n`);
  vms.forget(id);
  const gone = await cli(["vm", "get", id]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /VM_NOT_FOUND/);
});
