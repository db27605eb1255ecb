// End-to-end tests of VM maintenance: optimize (suspend + flatten the disk
// chain), resize (live disk growth, pending memory and vCPUs, no shrinking),
// idle suspend, and the disk use reported for VMs and snapshots. Two VMs;
// after() deletes them.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { VmTracker, api, exec, expectError, ok, sleep, startCounter, counterInfo, vmState } from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

let A;

test("optimize: suspends the VM, keeps its data and processes, and it resumes", async () => {
  A = (await vms.create({})).id;
  const pid = await startCounter(A);
  assert.equal((await exec(A, "echo one > /root/one && sync")).statusCode, 0);
  const s1 = await ok("POST", `/v1/vms/${A}/snapshot`, { body: {} });
  assert.equal((await exec(A, "echo two > /root/two && sync")).statusCode, 0);
  const s2 = await ok("POST", `/v1/vms/${A}/snapshot`, { body: {} });

  const res = await ok("POST", `/v1/vms/${A}/optimize`, { body: {} });
  assert.equal(res.id, A);
  assert.equal(typeof res.message, "string");
  assert.equal(await vmState(A), "suspended");

  // Both layers' contents are in the flattened disk, and the process lives on.
  const r = await exec(A, "cat /root/one /root/two");
  assert.equal(r.stdout, "one\ntwo\n");
  const info = await counterInfo(A, pid);
  assert.ok(info.alive, `counter process ${pid} alive after optimize: ${JSON.stringify(info)}`);

  // The snapshots taken before still restore.
  for (const s of [s1, s2]) await ok("DELETE", `/v1/vms/snapshots/${s.snapshotId}`);
});

test("resize: the disk and the guest filesystem grow while the VM runs; data is kept", async () => {
  const before = await exec(A, "df --output=size -B1M / | tail -1");
  const sizeBefore = Number(before.stdout.trim());
  await ok("POST", `/v1/vms/${A}/resize`, { body: { rootfsSizeGb: 6 } });
  const after = Number((await exec(A, "df --output=size -B1M / | tail -1")).stdout.trim());
  assert.ok(after > sizeBefore + 1500, `filesystem grew: ${sizeBefore} MiB -> ${after} MiB`);
  assert.equal((await exec(A, "cat /root/one")).stdout, "one\n");
});

test("resize: memory and vCPUs are pending until the next cold start; shrinking is refused", async () => {
  await ok("POST", `/v1/vms/${A}/resize`, { body: { memSizeGb: 2, vcpuCount: 2 } });
  const info = await ok("GET", `/v1/vms/${A}`);
  assert.equal(info.pendingMemSizeMb, 2048, JSON.stringify(info));
  assert.equal(info.pendingVcpuCount, 2, JSON.stringify(info));
  assert.equal(info.memSizeMb, 1024);

  for (const body of [{ rootfsSizeGb: 1 }, { memSizeGb: 0.5 }, { vcpuCount: -1 }, { rootfsSizeGb: "big" }]) {
    expectError(await api("POST", `/v1/vms/${A}/resize`, { body }), 400, "INVALID_PARAMETERS", JSON.stringify(body));
  }
  expectError(await api("POST", `/v1/vms/zzzzzzzzzzzzzzzzzzzz/resize`, { body: { rootfsSizeGb: 8 } }), 404, "VM_NOT_FOUND");
});

test("disk use: VM and snapshot info report bytes on disk", async () => {
  const info = await ok("GET", `/v1/vms/${A}`);
  assert.equal(typeof info.diskUsageBytes, "number");
  assert.ok(info.diskUsageBytes > 0, JSON.stringify(info));
  const s = await ok("POST", `/v1/vms/${A}/snapshot`, { body: {} });
  const snap = await ok("GET", `/v1/vms/snapshots/${s.snapshotId}`);
  assert.ok(snap.diskUsageBytes > 0, JSON.stringify(snap));
  await ok("DELETE", `/v1/vms/snapshots/${s.snapshotId}`);
});

test("idle: a VM with idleTimeoutSeconds and no traffic is suspended, and wakes on the next exec", async () => {
  const { id } = await vms.create({ idleTimeoutSeconds: 3 });
  let state;
  for (let i = 0; i < 40; i++) {
    await sleep(500);
    // Read the state through the list: a GET of the VM counts as activity.
    const list = await ok("GET", "/v1/vms");
    state = list.vms.find((v) => v.id === id)?.state;
    if (state === "suspended") break;
  }
  assert.equal(state, "suspended", "suspended within 20 s of going idle");
  assert.equal((await exec(id, "echo awake")).stdout, "awake\n");
  assert.equal(await vmState(id), "running");
});

test("persistence: an ephemeral VM is deleted on its deleteEvent; bad persistence is refused", async () => {
  const { id } = await vms.create({ persistence: { type: "ephemeral", deleteEvent: "OnStop" } });
  await ok("POST", `/v1/vms/${id}/stop`, { body: {} });
  let res;
  for (let i = 0; i < 20; i++) {
    res = await api("GET", `/v1/vms/${id}`);
    if (res.status === 404) break;
    await sleep(500);
  }
  expectError(res, 404, "VM_NOT_FOUND", "ephemeral VM after stop");
  vms.forget(id);
  for (const persistence of [{ type: "forever" }, { type: "sticky", priority: 11 }, { type: "ephemeral", deleteEvent: "Never" }]) {
    expectError(await api("POST", "/v1/vms", { body: { persistence } }), 400, "CREATE_VM_BAD_REQUEST", JSON.stringify(persistence));
  }
});
