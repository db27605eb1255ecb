// End-to-end tests of the VM power lifecycle over plain HTTP: suspend and
// resume (explicit and transparent), stop and cold start, kill, await, a QEMU
// that dies under a running VM, and 404s for unknown, deleted and other
// accounts' VMs. Three VMs in all (A: suspend/stop/start/crash, B: poweroff
// + await, C: kill + await), one cold boot; after() deletes them all.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  CREATE_TIMEOUT,
  VmTracker,
  api,
  apiWithin,
  bootId,
  comm,
  counterInfo,
  decodeContent,
  enc,
  exec,
  expectError,
  filesPath,
  hostPids,
  newAccount,
  ok,
  qemuPids,
  rand,
  show,
  sleep,
  startCounter,
  vmState,
  waitNoHostPids,
  waitState,
} from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

const UNKNOWN = "zzzzzzzzzzzzzzzzzzzz"; // well-formed id no VM has
const COLD_BOOT_MS = 150_000; // a cold boot under TCG takes 15-40 s; allow plenty
const MARKER = `kept-${rand()}`;

let A; // the VM suspended, resumed, stopped, started and crashed
let counterPid; // PID of the counter loop in A
let boot0; // A's boot id before any suspend

function needA() {
  assert.ok(A, "no VM: the create test failed");
  return A;
}

/** A promise plus a flag telling whether it has settled yet. */
function track(promise) {
  const t = { settled: false, promise };
  promise.then(
    () => (t.settled = true),
    () => (t.settled = true),
  );
  return t;
}

/** POST /v1/vms/{id}/suspend and checks the 200 answer; then waits for "suspended" and no QEMU. */
async function suspend(id) {
  const p = `/v1/vms/${id}/suspend`;
  const res = await apiWithin(120_000, "POST", p);
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.id, id, `id: ${res.text}`);
  assert.equal(typeof res.json?.vmInstanceId, "string", `vmInstanceId: ${res.text}`);
  assert.ok("snapshotLayerId" in res.json, `snapshotLayerId: ${res.text}`);
  await waitState(id, "suspended", { timeoutMs: 10_000 });
  await waitNoHostPids(id, 10_000);
  return res.json;
}

/** The command name of a host process, or "" when it is gone. */
test("create a VM with a background counter and a file on disk", { timeout: CREATE_TIMEOUT }, async () => {
  const vm = await vms.create({ name: `e2e-life-${rand(3)}` });
  const w = await exec(vm.id, `echo ${MARKER} > /root/life-marker && sync`);
  assert.equal(w.statusCode, 0, JSON.stringify(w));
  counterPid = await startCounter(vm.id);
  boot0 = await bootId(vm.id);
  assert.ok(hostPids(vm.id).length > 0, `pgrep -f ${vm.id} finds the VM's QEMU on the host`);
  assert.equal(await vmState(vm.id), "running");
  A = vm.id;
});

/** [method, path, body] of each lifecycle call on VM id. */
const lifecycleCalls = (id) => [
  ["POST", `/v1/vms/${id}/suspend`],
  ["POST", `/v1/vms/${id}/stop`],
  ["POST", `/v1/vms/${id}/kill`],
  ["POST", `/v1/vms/${id}/start`, {}],
  ["POST", `/v1/vms/${id}/await`],
  ["POST", `/v1/vms/${id}/snapshot`, {}],
  ["POST", `/v1/vms/${id}/fork`, { count: 1 }],
];

test("another account's VM: every lifecycle call is 404 VM_NOT_FOUND and changes nothing", { timeout: 120_000 }, async () => {
  const id = needA();
  const other = await newAccount();
  for (const [method, p, body] of [
    ["GET", `/v1/vms/${id}`],
    ...lifecycleCalls(id),
  ]) {
    const res = await apiWithin(15_000, method, p, { key: other.key, body });
    expectError(res, 404, "VM_NOT_FOUND", `${method} ${p} with another account's key`);
  }
  assert.equal(await vmState(id), "running", "the owner's VM still runs");
  const c = await counterInfo(id, counterPid);
  assert.ok(c.alive, `counter still alive: ${c.raw}`);
});

let instance0; // A's vmInstanceId before the first suspend

test("suspend: 200 {id, vmInstanceId, snapshotLayerId}, state suspended, QEMU gone", { timeout: 150_000 }, async () => {
  const id = needA();
  instance0 = (await ok("GET", `/v1/vms/${id}`)).vmInstanceId;
  const t0 = Date.now();
  const res = await suspend(id);
  console.log(`# suspend took ${Date.now() - t0} ms`);
  if (instance0 != null) assert.equal(res.vmInstanceId, instance0, "suspend names the instance it suspended");
  const list = await ok("GET", "/v1/vms");
  const row = list.vms.find((v) => v.id === id);
  assert.equal(row?.state, "suspended", `listed as suspended: ${JSON.stringify(row)}`);
});

test("start on a suspended VM resumes it: same boot, same counter PID, counter keeps going", { timeout: 150_000 }, async () => {
  const id = needA();
  const p = `/v1/vms/${id}/start`;
  const t0 = Date.now();
  const res = await apiWithin(120_000, "POST", p, { body: {} });
  console.log(`# resume took ${Date.now() - t0} ms`);
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.id, id, `id: ${res.text}`);
  await waitState(id, "running", { timeoutMs: 10_000 });
  assert.ok(hostPids(id).length > 0, "QEMU runs again");
  const instance1 = (await ok("GET", `/v1/vms/${id}`)).vmInstanceId;
  if (instance0 != null) assert.notEqual(instance1, instance0, "a resume is a new VM instance (spec: new id on each start/resume)");
  assert.equal(await bootId(id), boot0, "resumed, not rebooted: the boot id is unchanged");
  const c1 = await counterInfo(id, counterPid);
  assert.ok(c1.alive, `counter PID ${counterPid} still runs counter.sh after resume: ${c1.raw}`);
  await sleep(1500);
  const c2 = await counterInfo(id, counterPid);
  assert.ok(c2.alive, `counter alive: ${c2.raw}`);
  assert.ok(c2.value > c1.value, `counter keeps increasing after resume: ${c1.value} then ${c2.value}`);
});

test("exec on a suspended VM resumes it transparently", { timeout: 200_000 }, async () => {
  const id = needA();
  const before = await counterInfo(id, counterPid);
  await suspend(id);
  const p = `/v1/vms/${id}/exec-await`;
  const res = await apiWithin(120_000, "POST", p, { body: { command: "cat /root/life-marker" } });
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.stdout, `${MARKER}\n`, res.text);
  assert.equal(res.json?.statusCode, 0, res.text);
  assert.equal(await vmState(id), "running");
  const c = await counterInfo(id, counterPid);
  assert.ok(c.alive && c.value >= before.value, `counter continues from ${before.value}: ${c.raw}`);
  assert.equal(await bootId(id), boot0);
});

test("a file read on a suspended VM resumes it transparently", { timeout: 200_000 }, async () => {
  const id = needA();
  await suspend(id);
  const p = filesPath(id, "/root/life-marker");
  const res = await apiWithin(120_000, "GET", p);
  assert.equal(res.status, 200, show("GET", p, res));
  assert.equal(decodeContent(res.json).toString(), `${MARKER}\n`);
  assert.equal(await vmState(id), "running");
  const c = await counterInfo(id, counterPid);
  assert.ok(c.alive, `counter alive: ${c.raw}`);
});

test("a file write on a suspended VM resumes it transparently", { timeout: 200_000 }, async () => {
  const id = needA();
  await suspend(id);
  const p = filesPath(id, "/root/life-put");
  const res = await apiWithin(120_000, "PUT", p, {
    body: { content: Buffer.from("put-while-suspended\n").toString("base64"), encoding: "base64" },
  });
  assert.equal(res.status, 200, show("PUT", p, res));
  assert.equal(await vmState(id), "running");
  const r = await exec(id, "cat /root/life-put");
  assert.equal(r.stdout, "put-while-suspended\n");
  assert.ok((await counterInfo(id, counterPid)).alive, "counter alive");
});

test("five concurrent execs on a suspended VM resume it once and all answer", { timeout: 200_000 }, async () => {
  const id = needA();
  await suspend(id);
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      apiWithin(120_000, "POST", `/v1/vms/${id}/exec-await`, { body: { command: `echo r${i}; cat /root/life-marker` } }),
    ),
  );
  results.forEach((res, i) => {
    assert.equal(res.status, 200, show("POST", `/v1/vms/${id}/exec-await #${i}`, res));
    assert.equal(res.json?.stdout, `r${i}\n${MARKER}\n`, res.text);
  });
  assert.equal(await vmState(id), "running");
  const qemu = qemuPids(id);
  assert.equal(qemu.length, 1, `exactly one QEMU for the VM after a concurrent resume: ${qemu.join(" ")}`);
  assert.equal(await bootId(id), boot0);
  assert.ok((await counterInfo(id, counterPid)).alive, "counter alive");
});

test("stop: clean shutdown, 200 {vmId, vmInstanceId}, state stopped, QEMU gone", { timeout: 180_000 }, async () => {
  const id = needA();
  // Written just before the stop, without a sync: a clean shutdown flushes it.
  const w = await exec(id, `echo ${MARKER}-late > /root/life-late`);
  assert.equal(w.statusCode, 0, JSON.stringify(w));
  const p = `/v1/vms/${id}/stop`;
  const t0 = Date.now();
  const res = await apiWithin(150_000, "POST", p);
  console.log(`# stop took ${Date.now() - t0} ms`);
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.vmId, id, `vmId: ${res.text}`);
  assert.equal(typeof res.json?.vmInstanceId, "string", `vmInstanceId: ${res.text}`);
  await waitState(id, "stopped", { timeoutMs: 10_000 });
  await waitNoHostPids(id, 10_000);
});

test("stop on a VM that is not running is 400 VM_NOT_RUNNING; exec on it errors without hanging", async () => {
  const id = needA();
  const p = `/v1/vms/${id}/stop`;
  expectError(await apiWithin(30_000, "POST", p), 400, "VM_NOT_RUNNING", `POST ${p} (stopped VM)`);
  assert.equal(await vmState(id), "stopped");
  const e = `/v1/vms/${id}/exec-await`;
  const res = await apiWithin(30_000, "POST", e, { body: { command: "echo should-not-run" } });
  assert.ok(!res.timedOut && res.status >= 400, `exec on a stopped VM is an error: ${show("POST", e, res)}`);
  assert.equal(typeof res.json?.code, "string", `JSON error with a code: ${show("POST", e, res)}`);
  assert.equal(await vmState(id), "stopped", "a failed exec does not start the VM");
});

test("start on a stopped VM cold-boots it from its own disk", { timeout: COLD_BOOT_MS + 60_000 }, async () => {
  const id = needA();
  const p = `/v1/vms/${id}/start`;
  const t0 = Date.now();
  const res = await apiWithin(COLD_BOOT_MS, "POST", p, { body: {} });
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.id, id, `id: ${res.text}`);
  await waitState(id, "running", { timeoutMs: COLD_BOOT_MS - (Date.now() - t0) });
  console.log(`# cold start took ${Date.now() - t0} ms`);
  const m = await exec(id, "cat /root/life-marker /root/life-late");
  assert.equal(m.stdout, `${MARKER}\n${MARKER}-late\n`, `files written before the stop survive: ${JSON.stringify(m)}`);
  assert.notEqual(await bootId(id), boot0, "a stopped VM boots afresh: new boot id");
  const c = await counterInfo(id, counterPid);
  assert.ok(!c.alive, `the old counter process is gone after a cold boot: ${c.raw}`);
  const e = await exec(id, "echo after-boot");
  assert.equal(e.stdout, "after-boot\n");
});

test("a QEMU killed under a running VM is noticed: stopped or lost, and exec errors without hanging", { timeout: 120_000 }, async () => {
  const id = needA();
  const qemu = qemuPids(id);
  assert.ok(qemu.length > 0, `a QEMU process for ${id}: ${hostPids(id).map((p) => `${p}:${comm(p)}`).join(" ")}`);
  for (const pid of qemu) process.kill(+pid, "SIGKILL");
  const state = await waitState(id, ["stopped", "lost"], { timeoutMs: 15_000 });
  console.log(`# after kill -9 of QEMU: ${state}`);
  const p = `/v1/vms/${id}/exec-await`;
  const res = await apiWithin(60_000, "POST", p, { body: { command: "echo should-not-run" } });
  assert.ok(!res.timedOut, `exec on a dead VM answers: ${show("POST", p, res)}`);
  assert.ok(res.status >= 400, `exec on a dead VM is an error: ${show("POST", p, res)}`);
  assert.equal(typeof res.json?.code, "string", `JSON error with a code: ${show("POST", p, res)}`);
});

test("await blocks until the guest powers off, then 200 {id, exitStatus}", { timeout: CREATE_TIMEOUT + 120_000 }, async () => {
  const B = (await vms.create({ name: `e2e-await-${rand(3)}` })).id;
  const p = `/v1/vms/${B}/await`;
  const waiting = track(apiWithin(150_000, "POST", p));
  await sleep(2000);
  if (waiting.settled) assert.fail(`await must block while the VM runs: ${(await waiting.promise).text}`);
  // Power off from inside the guest, detached so the exec itself can answer;
  // whether it answers is not the point (the guest goes down).
  const off = await apiWithin(30_000, "POST", `/v1/vms/${B}/exec-await`, {
    body: {
      command:
        "S=; command -v setsid >/dev/null 2>&1 && S=setsid; " +
        "$S nohup sh -c 'sleep 1; poweroff || systemctl poweroff || poweroff -f' </dev/null >/dev/null 2>&1 & echo ok",
    },
  });
  console.log(`# poweroff exec: ${off.status} ${off.text.slice(0, 120)}`);
  const t0 = Date.now();
  const res = await waiting.promise;
  console.log(`# await answered ${Date.now() - t0} ms after the poweroff: ${res.text}`);
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.id, B, `id: ${res.text}`);
  assert.equal(typeof res.json?.exitStatus, "string", `exitStatus: ${res.text}`);
  assert.ok(res.json.exitStatus.length > 0, `exitStatus: ${res.text}`);
  await waitState(B, "stopped", { timeoutMs: 10_000 });
  await waitNoHostPids(B, 10_000);
  // On a VM that has already stopped, await answers at once.
  const again = await apiWithin(15_000, "POST", p);
  assert.equal(again.status, 200, `await on a stopped VM: ${show("POST", p, again)}`);
  assert.equal(again.json?.id, B);
  const del = await api("DELETE", `/v1/vms/${B}`);
  assert.equal(del.status, 200, show("DELETE", B, del));
  vms.forget(B);
});

let C; // killed, then deleted
test("kill: 200 {id} at once, a pending await resolves, state stopped, QEMU gone", { timeout: CREATE_TIMEOUT + 60_000 }, async () => {
  C = (await vms.create({ name: `e2e-kill-${rand(3)}` })).id;
  assert.ok(hostPids(C).length > 0, "QEMU runs");
  const ap = `/v1/vms/${C}/await`;
  const waiting = track(apiWithin(60_000, "POST", ap));
  await sleep(1500);
  if (waiting.settled) assert.fail(`await must block while the VM runs: ${(await waiting.promise).text}`);
  const p = `/v1/vms/${C}/kill`;
  const res = await apiWithin(30_000, "POST", p);
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json?.id, C, `id: ${res.text}`);
  assert.ok(res.ms < 10_000, `kill took ${res.ms} ms`);
  const w = await waiting.promise;
  assert.equal(w.status, 200, show("POST", ap, w));
  assert.equal(w.json?.id, C);
  assert.equal(typeof w.json?.exitStatus, "string", `exitStatus: ${w.text}`);
  assert.equal(await waitState(C, "stopped", { timeoutMs: 5_000 }), "stopped");
  await waitNoHostPids(C, 5_000);
});

test("deleting a VM ends a pending await on it", { timeout: CREATE_TIMEOUT + 60_000 }, async () => {
  const D = (await vms.create({ name: `e2e-await-del-${rand(3)}` })).id;
  const ap = `/v1/vms/${D}/await`;
  const waiting = track(apiWithin(30_000, "POST", ap));
  await sleep(1000);
  if (waiting.settled) assert.fail(`await must block while the VM runs: ${(await waiting.promise).text}`);
  const del = await api("DELETE", `/v1/vms/${D}`);
  assert.equal(del.status, 200, show("DELETE", D, del));
  vms.forget(D);
  const w = await waiting.promise;
  assert.ok(!w.timedOut, `the await answers once the VM is deleted: ${show("POST", ap, w)}`);
  assert.ok(w.status === 200 || w.status === 404, `await after delete: ${show("POST", ap, w)}`);
  await waitNoHostPids(D, 10_000);
});

test("a deleted VM: every call is 404 VM_NOT_FOUND", { timeout: 120_000 }, async () => {
  assert.ok(C, "no VM: the kill test failed");
  const del = await api("DELETE", `/v1/vms/${C}`);
  assert.equal(del.status, 200, show("DELETE", C, del));
  vms.forget(C);
  for (const id of [C, UNKNOWN]) {
    for (const [method, p, body] of [
      ["GET", `/v1/vms/${id}`],
      ["DELETE", `/v1/vms/${id}`],
      ...lifecycleCalls(id),
      ["POST", `/v1/vms/${id}/exec-await`, { command: "true" }],
      ["GET", filesPath(id, "/etc/hostname")],
    ]) {
      const res = await apiWithin(15_000, method, p, { body });
      expectError(res, 404, "VM_NOT_FOUND", `${method} ${p} (${id === C ? "deleted" : "unknown"} VM)`);
    }
  }
  assert.deepEqual(hostPids(C), [], "no process left for the deleted VM");
});

test("cleanup: delete A", async () => {
  const id = needA();
  const res = await api("DELETE", `/v1/vms/${enc(id)}`);
  assert.equal(res.status, 200, show("DELETE", id, res));
  vms.forget(id);
  await waitNoHostPids(id, 10_000);
});
