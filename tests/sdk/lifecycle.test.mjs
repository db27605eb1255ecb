// Runs the official Freestyle TypeScript SDK (freestyle-sandboxes 0.1.46,
// unmodified) against sproutd for the lifecycle calls: vm.snapshot and
// vms.create({snapshotId}), vm.fork, vm.suspend, vm.stop / vm.start (one
// cold boot), vm.kill, vm.waitForExit, vms.snapshots.delete, and how their
// errors map to the SDK's classes. Env: SPROUT_URL / SPROUT_API_KEY (or the
// FREESTYLE_* equivalents). VMs: source, restored, one fork; after() deletes
// whatever is left.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Errors, Freestyle } from "freestyle-sandboxes";

const baseUrl = process.env.SPROUT_URL ?? process.env.FREESTYLE_API_URL ?? "http://127.0.0.1:8080";
const apiKey = process.env.SPROUT_API_KEY ?? process.env.FREESTYLE_API_KEY;
const freestyle = new Freestyle({ baseUrl, apiKey });

const CREATE_TIMEOUT = 5 * 60_000;
const UNKNOWN = "zzzzzzzzzzzzzzzzzzzz";
const MARKER = `sdk-life-${Math.random().toString(36).slice(2, 10)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const live = new Map(); // vmId -> Vm, deleted by after()
after(async () => {
  for (const [id, vm] of live) await vm.delete().catch((e) => console.error(`# cleanup ${id}: ${e}`));
  if (snapshotId) await freestyle.vms.snapshots.delete({ snapshotId }).catch(() => {});
});

let src; // the source Vm
let counterPid;
let snapshotId;
let restored; // Vm made from the snapshot
let fork; // Vm forked from src

function need(v, what) {
  assert.ok(v, `${what} missing: an earlier test failed`);
  return v;
}

function rejectsWith(cls) {
  return (e) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e?.name}: ${e?.message}`);
    return true;
  };
}

/** {alive, value} of the counter loop in a VM, through the SDK's exec. */
async function counter(vm) {
  const r = await vm.exec(
    // The loop truncates the file before it writes: a read in between
    // finds it empty, so read again.
    `if tr '\\0' ' ' < /proc/${counterPid}/cmdline 2>/dev/null | grep -q counter.sh; then echo alive; else echo dead; fi; ` +
      `for k in 1 2 3 4 5; do v=$(cat /tmp/counter 2>/dev/null); [ -n "$v" ] && break; sleep 0.05; done; echo "\${v:-none}"`,
  );
  const [state, value] = r.stdout.trim().split("\n");
  return { alive: state === "alive", value: Number(value), raw: r.stdout };
}

async function state(vm) {
  return (await vm.getInfo()).state;
}

async function waitState(vm, want, timeoutMs = 15_000) {
  const t0 = Date.now();
  for (;;) {
    const s = await state(vm);
    if (s === want) return s;
    if (Date.now() - t0 > timeoutMs) assert.fail(`VM ${vm.vmId} is ${s}, not ${want}, after ${timeoutMs} ms`);
    await sleep(250);
  }
}

test("vms.create, then a file and a background process in it", { timeout: CREATE_TIMEOUT }, async () => {
  const res = await freestyle.vms.create({ name: "sdk-lifecycle" });
  live.set(res.vmId, res.vm);
  src = res.vm;
  await src.fs.writeTextFile("/root/sdk-marker.txt", MARKER);
  const r = await src.exec(
    "printf 'i=0\\nwhile true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done\\n' > /root/counter.sh; " +
      "S=; command -v setsid >/dev/null 2>&1 && S=setsid; $S nohup sh /root/counter.sh </dev/null >/dev/null 2>&1 & echo $!",
  );
  counterPid = r.stdout.trim();
  assert.match(counterPid, /^[0-9]+$/, JSON.stringify(r));
  await sleep(800);
  const c = await counter(src);
  assert.ok(c.alive && c.value >= 1, `counter running: ${c.raw}`);
});

test("vm.snapshot returns {snapshotId, sourceVmId}; the VM keeps running", { timeout: 180_000 }, async () => {
  const vm = need(src, "source VM");
  const res = await vm.snapshot({ name: "sdk-lifecycle-snap" });
  assert.match(res.snapshotId, /^sc-[a-z0-9]{20}$/, JSON.stringify(res));
  assert.equal(res.sourceVmId, vm.vmId);
  snapshotId = res.snapshotId;
  assert.equal(await state(vm), "running");
  assert.equal((await vm.exec("echo still-here")).stdout, "still-here\n");
});

test("vms.create({snapshotId}) has the snapshot's files and running process", { timeout: CREATE_TIMEOUT }, async () => {
  const id = need(snapshotId, "snapshot");
  const res = await freestyle.vms.create({ snapshotId: id });
  live.set(res.vmId, res.vm);
  restored = res.vm;
  assert.match(res.vmId, /^[a-z0-9]{20}$/);
  assert.notEqual(res.vmId, src.vmId);
  assert.equal(await restored.fs.readTextFile("/root/sdk-marker.txt"), MARKER);
  const c1 = await counter(restored);
  assert.ok(c1.alive, `the counter runs with the same PID ${counterPid}: ${c1.raw}`);
  await sleep(1000);
  const c2 = await counter(restored);
  assert.ok(c2.value > c1.value, `and keeps counting: ${c1.value} then ${c2.value}`);
});

test("vm.fork({count: 1}) returns {forks: [{vmId, vm}]} with a working copy", { timeout: CREATE_TIMEOUT }, async () => {
  const vm = need(src, "source VM");
  const res = await vm.fork({ count: 1 });
  for (const f of res.forks ?? []) live.set(f.vmId, f.vm);
  assert.ok(Array.isArray(res.forks) && res.forks.length === 1, JSON.stringify(res, (k, v) => (k === "vm" ? undefined : v)));
  const [f] = res.forks;
  assert.match(f.vmId, /^[a-z0-9]{20}$/);
  assert.notEqual(f.vmId, vm.vmId);
  assert.equal(f.vm.vmId, f.vmId);
  fork = f.vm;
  assert.equal(await state(fork), "running");
  assert.equal(await fork.fs.readTextFile("/root/sdk-marker.txt"), MARKER);
  const c = await counter(fork);
  assert.ok(c.alive, `the fork runs the counter with the same PID: ${c.raw}`);
  await fork.fs.writeTextFile("/root/fork-only.txt", "fork");
  assert.equal(await vm.fs.exists("/root/fork-only.txt"), false, "the fork's file is not in the parent");
  assert.equal(await state(vm), "running", "the parent keeps running");
});

test("vm.suspend, then vm.exec resumes it with its process", { timeout: 240_000 }, async () => {
  const vm = need(src, "source VM");
  const res = await vm.suspend();
  assert.equal(res.id, vm.vmId, JSON.stringify(res));
  assert.equal(await waitState(vm, "suspended"), "suspended");
  const r = await vm.exec("cat /root/sdk-marker.txt");
  assert.equal(r.stdout, MARKER);
  assert.equal(await state(vm), "running");
  const c = await counter(vm);
  assert.ok(c.alive, `the counter survived suspend: ${c.raw}`);
  // And vm.start on a suspended VM.
  await vm.suspend();
  await waitState(vm, "suspended");
  await vm.start();
  assert.equal(await waitState(vm, "running"), "running");
  assert.ok((await counter(vm)).alive, "the counter survived suspend + start");
});

test("lifecycle errors map to the SDK's classes", { timeout: 120_000 }, async () => {
  const ghost = freestyle.vms.ref({ vmId: UNKNOWN });
  for (const [what, call] of [
    ["suspend", () => ghost.suspend()],
    ["stop", () => ghost.stop()],
    ["start", () => ghost.start()],
    ["kill", () => ghost.kill()],
    ["waitForExit", () => ghost.waitForExit()],
    ["snapshot", () => ghost.snapshot()],
    ["fork", () => ghost.fork()],
  ]) {
    await assert.rejects(call(), rejectsWith(Errors.VmNotFoundError), what);
  }
  await assert.rejects(need(src, "source VM").fork({ count: 17 }), rejectsWith(Errors.InvalidParametersError));
  await assert.rejects(
    freestyle.vms.create({ snapshotId: "sc-zzzzzzzzzzzzzzzzzzzz" }),
    rejectsWith(Errors.SnapshotNotFoundError),
  );
  await assert.rejects(
    freestyle.vms.snapshots.delete({ snapshotId: "sc-zzzzzzzzzzzzzzzzzzzz" }),
    rejectsWith(Errors.SnapshotNotFoundError),
  );
});

test("vms.snapshots.delete, then again: SnapshotAlreadyDeletedError; create from it: SnapshotNotFoundError", { timeout: 120_000 }, async () => {
  const id = need(snapshotId, "snapshot");
  const res = await freestyle.vms.snapshots.delete({ snapshotId: id });
  assert.equal(res.snapshot_id, id, JSON.stringify(res));
  snapshotId = undefined;
  await assert.rejects(freestyle.vms.snapshots.delete({ snapshotId: id }), rejectsWith(Errors.SnapshotAlreadyDeletedError));
  await assert.rejects(freestyle.vms.create({ snapshotId: id }), rejectsWith(Errors.SnapshotNotFoundError));
  // The VM made from it is unaffected.
  assert.equal(await need(restored, "restored VM").fs.readTextFile("/root/sdk-marker.txt"), MARKER);
});

test("vm.kill ends a VM at once and vm.waitForExit resolves", { timeout: 120_000 }, async () => {
  const vm = need(fork, "fork");
  let settled = false;
  const waiting = vm.waitForExit().finally(() => (settled = true));
  waiting.catch(() => {});
  await sleep(1500);
  assert.equal(settled, false, "waitForExit must wait while the VM runs");
  const res = await vm.kill();
  assert.equal(res.id, vm.vmId, JSON.stringify(res));
  const w = await waiting;
  assert.equal(w.id, vm.vmId, JSON.stringify(w));
  assert.equal(typeof w.exitStatus, "string", JSON.stringify(w));
  assert.equal(await waitState(vm, "stopped", 5000), "stopped");
  await vm.delete();
  live.delete(vm.vmId);
  await assert.rejects(vm.getInfo(), rejectsWith(Errors.VmNotFoundError));
});

test("vm.stop, then vm.start cold-boots it with its disk", { timeout: 300_000 }, async () => {
  const vm = need(restored, "restored VM");
  await vm.exec("echo before-stop > /root/before-stop.txt");
  const res = await vm.stop();
  assert.equal(res.vmId, vm.vmId, JSON.stringify(res));
  assert.equal(await waitState(vm, "stopped"), "stopped");
  await assert.rejects(vm.stop(), rejectsWith(Errors.VmNotRunningError));
  const t0 = Date.now();
  const started = await vm.start();
  assert.equal(started.id, vm.vmId, JSON.stringify(started));
  await waitState(vm, "running", 180_000);
  console.log(`# cold start took ${Date.now() - t0} ms`);
  assert.equal(await vm.fs.readTextFile("/root/before-stop.txt"), "before-stop\n");
  assert.equal(await vm.fs.readTextFile("/root/sdk-marker.txt"), MARKER);
  assert.equal((await counter(vm)).alive, false, "a cold boot does not bring back the old process");
});

test("delete the remaining VMs", { timeout: 60_000 }, async () => {
  for (const [id, vm] of live) {
    const res = await vm.delete();
    assert.equal(res.id, id);
    live.delete(id);
  }
});
