// End-to-end tests of snapshots and forks over plain HTTP: POST
// /v1/vms/{id}/snapshot, the /v1/vms/snapshots list/get/patch/delete calls,
// creating a VM from a snapshot (disk AND memory: a running process keeps
// its PID and its in-memory state), and POST /v1/vms/{id}/fork with the
// isolation between parent and forks. VMs: S (source), R (from the
// snapshot), F1 + F2 (fork count 2), one default-count fork; after() deletes
// whatever a failure left behind.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  CREATE_TIMEOUT,
  VmTracker,
  api,
  apiWithin,
  bootId,
  catFile,
  counterInfo,
  exec,
  expectError,
  newAccount,
  ok,
  rand,
  show,
  sleep,
  startCounter,
  vmState,
  waitNoHostPids,
} from "./lib.mjs";

const vms = new VmTracker();
const snapshots = new Set(); // snapshot ids to delete at the end
after(async () => {
  for (const id of snapshots) await api("DELETE", `/v1/vms/snapshots/${id}`).catch(() => {});
  await vms.cleanup();
});

const SNAP_RE = /^sc-[a-z0-9]{20}$/;
const VM_RE = /^[a-z0-9]{20}$/;
const UNKNOWN_SNAP = "sc-zzzzzzzzzzzzzzzzzzzz";
const TAG = rand(4);
const NAME1 = `e2e-snap-${TAG}`;
const NAME2 = `e2e-snap-renamed-${TAG}`;
const MARKER = `snap-marker-${rand()}`;
const USR1_JUMP = 100_000; // what SIGUSR1 adds to the counter (see lib.mjs)

let S; // source VM
let counterPid; // the counter loop's PID in S (and in every copy of S)
let bootS; // S's boot id
let valueAtSnapshot; // the counter just before the snapshot
let snapId;
let R; // VM created from snapId
let other; // another account

function need(v, what) {
  assert.ok(v, `${what} missing: an earlier test failed`);
  return v;
}

/** Asserts the SnapshotInfo shape and returns it. */
function checkInfo(info, { id, sourceVmId, name }) {
  const ctx = JSON.stringify(info);
  assert.equal(info.snapshotId, id, ctx);
  assert.equal(info.state, "ready", ctx);
  assert.equal(info.sourceVmId, sourceVmId, ctx);
  assert.equal(typeof info.createdAt, "string", ctx);
  const t = Date.parse(info.createdAt);
  assert.ok(Number.isFinite(t), `createdAt parses: ${ctx}`);
  assert.ok(Math.abs(Date.now() - t) < 3600_000, `createdAt is about now: ${ctx}`);
  if (name !== undefined) assert.equal(info.name, name, ctx);
  for (const f of ["failed", "cancelled", "lost", "deleted"]) assert.equal(info[f], false, `${f}: ${ctx}`);
  assert.equal(typeof info.snapshotPersistence, "object", `snapshotPersistence: ${ctx}`);
  assert.ok(["sticky", "persistent"].includes(info.snapshotPersistence?.type), `snapshotPersistence.type: ${ctx}`);
  return info;
}

async function listSnapshots(query = "", key) {
  const list = await ok("GET", `/v1/vms/snapshots${query}`, key ? { key } : {});
  assert.ok(Array.isArray(list.snapshots), JSON.stringify(list).slice(0, 300));
  for (const f of ["totalCount", "buildingCount", "readyCount", "failedCount", "cancelledCount", "lostCount", "deletedCount"]) {
    assert.ok(Number.isInteger(list[f]) && list[f] >= 0, `${f} in ${JSON.stringify(list).slice(0, 300)}`);
  }
  return list;
}

test("create the source VM with a counter whose memory state is marked", { timeout: CREATE_TIMEOUT }, async () => {
  const vm = await vms.create({ name: `e2e-snapsrc-${TAG}` });
  const w = await exec(vm.id, `echo ${MARKER} > /root/snap-marker && sync`);
  assert.equal(w.statusCode, 0, JSON.stringify(w));
  counterPid = await startCounter(vm.id);
  // Bump the shell variable by USR1_JUMP: only a copy of this process's
  // memory counts from there; a restarted loop would start again at 1.
  const k = await exec(vm.id, `kill -USR1 ${counterPid}`);
  assert.equal(k.statusCode, 0, JSON.stringify(k));
  await sleep(1000);
  const c = await counterInfo(vm.id, counterPid);
  assert.ok(c.alive && c.value > USR1_JUMP, `the counter jumped past ${USR1_JUMP}: ${c.raw}`);
  bootS = await bootId(vm.id);
  S = vm.id;
});

test("snapshot: 200 {snapshotId: sc-..., sourceVmId}; the source keeps running", { timeout: 180_000 }, async () => {
  const id = need(S, "source VM");
  valueAtSnapshot = (await counterInfo(id, counterPid)).value;
  const p = `/v1/vms/${id}/snapshot`;
  const res = await apiWithin(150_000, "POST", p, { body: { name: NAME1 } });
  assert.equal(res.status, 200, show("POST", p, res));
  console.log(`# snapshot took ${res.ms} ms`);
  assert.match(res.json?.snapshotId ?? "", SNAP_RE, `snapshotId: ${res.text}`);
  assert.equal(res.json.sourceVmId, id, `sourceVmId: ${res.text}`);
  snapId = res.json.snapshotId;
  snapshots.add(snapId);
  assert.equal(await vmState(id), "running");
  const c1 = await counterInfo(id, counterPid);
  await sleep(1000);
  const c2 = await counterInfo(id, counterPid);
  assert.ok(c2.alive && c2.value > c1.value, `the source's counter keeps going: ${c1.value} then ${c2.value}`);
  assert.equal(await bootId(id), bootS, "the source was not rebooted");
  // Written after the snapshot: a VM made from it must not have this.
  const w = await exec(id, "echo later > /root/after-snap && sync");
  assert.equal(w.statusCode, 0);
});

test("GET /v1/vms/snapshots lists it as ready with the SnapshotInfo fields and counts", async () => {
  const id = need(snapId, "snapshot");
  const list = await listSnapshots();
  const row = list.snapshots.find((s) => s.snapshotId === id);
  assert.ok(row, `${id} listed in ${JSON.stringify(list).slice(0, 500)}`);
  checkInfo(row, { id, sourceVmId: S, name: NAME1 });
  assert.ok(list.totalCount >= 1, JSON.stringify(list).slice(0, 300));
  assert.ok(list.readyCount >= list.snapshots.filter((s) => s.state === "ready").length, "readyCount counts the ready rows");
});

test("GET /v1/vms/snapshots/{id} returns its SnapshotInfo", async () => {
  const id = need(snapId, "snapshot");
  checkInfo(await ok("GET", `/v1/vms/snapshots/${id}`), { id, sourceVmId: S, name: NAME1 });
});

test("PATCH /v1/vms/snapshots/{id} renames it", async () => {
  const id = need(snapId, "snapshot");
  const res = await ok("PATCH", `/v1/vms/snapshots/${id}`, { body: { name: NAME2 } });
  assert.equal(res.snapshot_id, id, JSON.stringify(res));
  assert.equal(res.name, NAME2, JSON.stringify(res));
  checkInfo(await ok("GET", `/v1/vms/snapshots/${id}`), { id, sourceVmId: S, name: NAME2 });
  const list = await listSnapshots();
  assert.equal(list.snapshots.find((s) => s.snapshotId === id)?.name, NAME2);
});

test("an unknown snapshot id is 404 SNAPSHOT_NOT_FOUND everywhere", async () => {
  const p = `/v1/vms/snapshots/${UNKNOWN_SNAP}`;
  expectError(await api("GET", p), 404, "SNAPSHOT_NOT_FOUND", `GET ${p}`);
  expectError(await api("PATCH", p, { body: { name: "x" } }), 404, "SNAPSHOT_NOT_FOUND", `PATCH ${p}`);
  expectError(await api("DELETE", p), 404, "SNAPSHOT_NOT_FOUND", `DELETE ${p}`);
  const before = (await ok("GET", "/v1/vms")).vms.length;
  const res = await apiWithin(60_000, "POST", "/v1/vms", { body: { snapshotId: UNKNOWN_SNAP } });
  if (res.json?.id) vms.track(res.json.id);
  expectError(res, 404, "SNAPSHOT_NOT_FOUND", `POST /v1/vms {snapshotId: ${UNKNOWN_SNAP}}`);
  assert.equal((await ok("GET", "/v1/vms")).vms.length, before, "no VM was created");
});

test("another account's snapshot is 404 SNAPSHOT_NOT_FOUND and not listed", { timeout: 60_000 }, async () => {
  const id = need(snapId, "snapshot");
  other = await newAccount();
  const key = other.key;
  const p = `/v1/vms/snapshots/${id}`;
  expectError(await api("GET", p, { key }), 404, "SNAPSHOT_NOT_FOUND", `GET ${p} (other account)`);
  expectError(await api("PATCH", p, { key, body: { name: "stolen" } }), 404, "SNAPSHOT_NOT_FOUND", `PATCH ${p} (other account)`);
  expectError(await api("DELETE", p, { key }), 404, "SNAPSHOT_NOT_FOUND", `DELETE ${p} (other account)`);
  const res = await apiWithin(60_000, "POST", "/v1/vms", { key, body: { snapshotId: id } });
  if (res.json?.id) vms.track(res.json.id, key);
  expectError(res, 404, "SNAPSHOT_NOT_FOUND", `POST /v1/vms {snapshotId} (other account)`);
  const list = await listSnapshots("", key);
  assert.ok(!list.snapshots.some((s) => s.snapshotId === id), "not in the other account's list");
  // Nothing the other account did touched it.
  checkInfo(await ok("GET", p), { id, sourceVmId: S, name: NAME2 });
});

test("POST /v1/vms {snapshotId} restores disk and memory: same process, same PID, state continues", { timeout: CREATE_TIMEOUT }, async () => {
  const id = need(snapId, "snapshot");
  const t0 = Date.now();
  const vm = await vms.create({ snapshotId: id, name: `e2e-restored-${TAG}` });
  console.log(`# create from snapshot took ${Date.now() - t0} ms`);
  R = vm.id;
  assert.notEqual(R, S);
  assert.equal(vm.snapshotId, id, "the create answer names the snapshot");
  assert.equal((await ok("GET", `/v1/vms/${R}`)).snapshotId, id, "VM info names the snapshot it came from");
  assert.equal(await vmState(R), "running");
  assert.equal(await catFile(R, "/root/snap-marker"), `${MARKER}\n`, "a file written before the snapshot");
  assert.equal(await catFile(R, "/root/after-snap"), null, "a file written in the source after the snapshot is not there");
  assert.equal(await bootId(R), bootS, "memory restored, not booted: same boot id as the source");
  const c1 = await counterInfo(R, counterPid);
  assert.ok(c1.alive, `the counter process runs with the same PID ${counterPid}: ${c1.raw}`);
  assert.ok(c1.value >= valueAtSnapshot, `the counter continues from ${valueAtSnapshot} (in-memory state kept): ${c1.raw}`);
  await sleep(1500);
  const c2 = await counterInfo(R, counterPid);
  assert.ok(c2.alive && c2.value > c1.value, `the restored counter keeps counting: ${c1.value} then ${c2.value}`);
  // The restored VM is its own machine: its writes do not reach the source.
  await exec(R, "echo from-r > /root/r-only && sync");
  assert.equal(await catFile(S, "/root/r-only"), null, "R's file is not in the source");
  const list = await ok("GET", "/v1/vms");
  assert.ok(list.vms.some((v) => v.id === R), "R is listed");
});

test("DELETE a snapshot: 200 {snapshot_id}; VMs made from it keep working", { timeout: 60_000 }, async () => {
  const id = need(snapId, "snapshot");
  const res = await ok("DELETE", `/v1/vms/snapshots/${id}`);
  assert.equal(res.snapshot_id, id, JSON.stringify(res));
  // R's disk and memory came from the snapshot; it must not depend on it any more.
  const r = need(R, "restored VM");
  assert.equal(await catFile(r, "/root/snap-marker"), `${MARKER}\n`);
  const w = await exec(r, "head -c 1000000 /dev/urandom > /root/big && sync && wc -c < /root/big");
  assert.equal(w.stdout.trim(), "1000000", JSON.stringify(w));
  const c = await counterInfo(r, counterPid);
  assert.ok(c.alive, `counter alive in R: ${c.raw}`);
  assert.equal(await vmState(S), "running", "the source is untouched");
});

test("a deleted snapshot: DELETE again is 409 SNAPSHOT_ALREADY_DELETED, create from it is 404", { timeout: 60_000 }, async () => {
  const id = need(snapId, "snapshot");
  const p = `/v1/vms/snapshots/${id}`;
  expectError(await api("DELETE", p), 409, "SNAPSHOT_ALREADY_DELETED", `second DELETE ${p}`);
  const res = await apiWithin(60_000, "POST", "/v1/vms", { body: { snapshotId: id } });
  if (res.json?.id) vms.track(res.json.id);
  expectError(res, 404, "SNAPSHOT_NOT_FOUND", `POST /v1/vms {snapshotId: deleted}`);
  const list = await listSnapshots();
  assert.ok(!list.snapshots.some((s) => s.snapshotId === id), "a deleted snapshot is not in the default list");
  snapshots.delete(id);
});

test("a deleted snapshot still answers GET with deleted: true (spec: deleted rows are returned)", async () => {
  const id = need(snapId, "snapshot");
  const p = `/v1/vms/snapshots/${id}`;
  const res = await api("GET", p);
  assert.equal(res.status, 200, show("GET", p, res));
  assert.equal(res.json?.snapshotId, id);
  assert.equal(res.json?.deleted, true, res.text);
  const list = await listSnapshots("?includeDeleted=true");
  const row = list.snapshots.find((s) => s.snapshotId === id);
  assert.equal(row?.deleted, true, `listed with includeDeleted=true: ${JSON.stringify(row)}`);
  assert.ok(list.deletedCount >= 1, `deletedCount: ${list.deletedCount}`);
});

test("delete the restored VM", async () => {
  const r = need(R, "restored VM");
  const res = await api("DELETE", `/v1/vms/${r}`);
  assert.equal(res.status, 200, show("DELETE", r, res));
  vms.forget(r);
  await waitNoHostPids(r, 10_000);
});

let forks = []; // [F1, F2]

test("fork {count: 2}: 200 {vmId, forks: [{id, domains}]}, two running copies, the parent keeps running", { timeout: CREATE_TIMEOUT }, async () => {
  const id = need(S, "source VM");
  const w = await exec(id, "echo pre-fork > /root/pre-fork && sync");
  assert.equal(w.statusCode, 0);
  const before = (await counterInfo(id, counterPid)).value;
  const p = `/v1/vms/${id}/fork`;
  const res = await apiWithin(CREATE_TIMEOUT - 10_000, "POST", p, { body: { count: 2 } });
  for (const f of res.json?.forks ?? []) if (f?.id) vms.track(f.id);
  assert.equal(res.status, 200, show("POST", p, res));
  console.log(`# fork x2 took ${res.ms} ms`);
  assert.equal(res.json.vmId, id, res.text);
  assert.ok(Array.isArray(res.json.forks) && res.json.forks.length === 2, `two forks: ${res.text}`);
  for (const f of res.json.forks) {
    assert.match(f.id ?? "", VM_RE, res.text);
    assert.ok(Array.isArray(f.domains), `domains: ${res.text}`);
  }
  forks = res.json.forks.map((f) => f.id);
  assert.equal(new Set([...forks, id]).size, 3, `distinct ids: ${res.text}`);
  const list = await ok("GET", "/v1/vms");
  for (const f of forks) {
    assert.equal(list.vms.find((v) => v.id === f)?.state, "running", `fork ${f} listed as running`);
    assert.equal(await vmState(f), "running");
    assert.equal(await catFile(f, "/root/pre-fork"), "pre-fork\n", `${f} has the parent's files`);
    assert.equal(await catFile(f, "/root/snap-marker"), `${MARKER}\n`);
    assert.equal(await bootId(f), bootS, `${f} is a memory copy, not a new boot`);
    const c = await counterInfo(f, counterPid);
    assert.ok(c.alive, `${f} runs the counter with PID ${counterPid}: ${c.raw}`);
    assert.ok(c.value >= before, `${f}'s counter continues from ${before}: ${c.raw}`);
  }
  assert.equal(await vmState(id), "running", "the parent keeps running");
  const cp = await counterInfo(id, counterPid);
  assert.ok(cp.alive && cp.value >= before, `the parent's counter: ${cp.raw}`);
});

test("fork isolation: files and process memory diverge in every direction", { timeout: 120_000 }, async () => {
  const parent = need(S, "source VM");
  assert.equal(forks.length, 2, "the fork test failed");
  const [fa, fb] = forks;
  await exec(parent, "echo parent > /root/only-parent && sync");
  await exec(fa, "echo a > /root/only-a && sync");
  assert.equal(await catFile(fa, "/root/only-parent"), null, "the parent's new file is not in fork A");
  assert.equal(await catFile(fb, "/root/only-parent"), null, "the parent's new file is not in fork B");
  assert.equal(await catFile(fb, "/root/only-a"), null, "fork A's file is not in fork B");
  assert.equal(await catFile(parent, "/root/only-a"), null, "fork A's file is not in the parent");
  assert.equal(await catFile(fa, "/root/only-a"), "a\n");

  // Memory: bump the counter in fork A only.
  const v0 = {};
  for (const [n, id] of [["parent", parent], ["A", fa], ["B", fb]]) v0[n] = (await counterInfo(id, counterPid)).value;
  const k = await exec(fa, `kill -USR1 ${counterPid}`);
  assert.equal(k.statusCode, 0, JSON.stringify(k));
  await sleep(1500);
  const v1 = {};
  for (const [n, id] of [["parent", parent], ["A", fa], ["B", fb]]) {
    const c = await counterInfo(id, counterPid);
    assert.ok(c.alive, `counter alive in ${n}: ${c.raw}`);
    v1[n] = c.value;
  }
  const ctx = `before ${JSON.stringify(v0)}, after ${JSON.stringify(v1)}`;
  assert.ok(v1.A >= v0.A + USR1_JUMP, `fork A's counter jumped: ${ctx}`);
  assert.ok(v1.parent > v0.parent && v1.parent < v0.parent + USR1_JUMP / 2, `the parent counts on its own: ${ctx}`);
  assert.ok(v1.B > v0.B && v1.B < v0.B + USR1_JUMP / 2, `fork B counts on its own: ${ctx}`);
  // Stopping the process in one fork leaves the others running.
  await exec(fb, `kill -9 ${counterPid}`);
  await sleep(600);
  assert.equal((await counterInfo(fb, counterPid)).alive, false, "killed in fork B");
  assert.equal((await counterInfo(fa, counterPid)).alive, true, "still alive in fork A");
  assert.equal((await counterInfo(parent, counterPid)).alive, true, "still alive in the parent");
});

test("fork with an empty body makes one fork", { timeout: CREATE_TIMEOUT }, async () => {
  const [, fb] = forks;
  need(fb, "fork B");
  const p = `/v1/vms/${fb}/fork`;
  const res = await apiWithin(CREATE_TIMEOUT - 10_000, "POST", p, { body: {} });
  for (const f of res.json?.forks ?? []) if (f?.id) vms.track(f.id);
  assert.equal(res.status, 200, show("POST", p, res));
  assert.equal(res.json.forks?.length, 1, `one fork by default: ${res.text}`);
  const f = res.json.forks[0].id;
  assert.equal(await catFile(f, "/root/pre-fork"), "pre-fork\n");
  const del = await api("DELETE", `/v1/vms/${f}`);
  assert.equal(del.status, 200, show("DELETE", f, del));
  vms.forget(f);
  await waitNoHostPids(f, 10_000);
  assert.equal(await vmState(fb), "running", "deleting a fork leaves its parent running");
});

test("fork with an invalid count is 400 INVALID_PARAMETERS and makes no VM", { timeout: 60_000 }, async () => {
  const id = need(S, "source VM");
  const before = (await ok("GET", "/v1/vms")).vms.length;
  const p = `/v1/vms/${id}/fork`;
  for (const count of [-1, 17, 1000, 1.5, "2", true]) {
    const res = await apiWithin(30_000, "POST", p, { body: { count } });
    for (const f of res.json?.forks ?? []) if (f?.id) vms.track(f.id);
    expectError(res, 400, "INVALID_PARAMETERS", `POST ${p} {count: ${JSON.stringify(count)}}`);
  }
  assert.equal((await ok("GET", "/v1/vms")).vms.length, before, "no VM was created");
});

test("snapshot of a suspended VM with persistence: it stays suspended, and a VM made from it runs the process", { timeout: CREATE_TIMEOUT }, async () => {
  const id = need(S, "source VM");
  const bad = await api("POST", `/v1/vms/${id}/snapshot`, { body: { persistence: { type: "bogus" } } });
  expectError(bad, 400, "INVALID_PARAMETERS", "POST snapshot {persistence: {type: bogus}}");
  const sus = await api("POST", `/v1/vms/${id}/suspend`);
  assert.equal(sus.status, 200, show("POST", `/v1/vms/${id}/suspend`, sus));
  assert.equal(await vmState(id), "suspended");
  const p = `/v1/vms/${id}/snapshot`;
  const res = await apiWithin(150_000, "POST", p, { body: { persistence: { type: "persistent" } } });
  assert.equal(res.status, 200, show("POST", p, res));
  assert.match(res.json?.snapshotId ?? "", SNAP_RE, res.text);
  const sid = res.json.snapshotId;
  snapshots.add(sid);
  assert.equal(await vmState(id), "suspended", "snapshotting a suspended VM leaves it suspended");
  const info = await ok("GET", `/v1/vms/snapshots/${sid}`);
  assert.equal(info.snapshotPersistence?.type, "persistent", JSON.stringify(info));
  assert.equal(info.name ?? null, null, `no name given: ${JSON.stringify(info)}`);
  const vm = await vms.create({ snapshotId: sid });
  const c = await counterInfo(vm.id, counterPid);
  assert.ok(c.alive && c.value > USR1_JUMP, `the counter with its memory, from a suspended VM's snapshot: ${c.raw}`);
  assert.equal(await catFile(vm.id, "/root/pre-fork"), "pre-fork\n");
  const del = await api("DELETE", `/v1/vms/${vm.id}`);
  assert.equal(del.status, 200, show("DELETE", vm.id, del));
  vms.forget(vm.id);
  assert.equal((await ok("DELETE", `/v1/vms/snapshots/${sid}`)).snapshot_id, sid);
  snapshots.delete(sid);
  // The source resumes with its process.
  assert.ok((await counterInfo(id, counterPid)).alive, "the source's counter after resume");
});

test("delete the forks and the source; the others are unaffected by each delete", { timeout: 60_000 }, async () => {
  const parent = need(S, "source VM");
  for (const f of forks) {
    const res = await api("DELETE", `/v1/vms/${f}`);
    assert.equal(res.status, 200, show("DELETE", f, res));
    vms.forget(f);
    await waitNoHostPids(f, 10_000);
  }
  assert.equal((await counterInfo(parent, counterPid)).alive, true, "the parent's counter still runs after its forks are deleted");
  const res = await api("DELETE", `/v1/vms/${parent}`);
  assert.equal(res.status, 200, show("DELETE", parent, res));
  vms.forget(parent);
  await waitNoHostPids(parent, 10_000);
});
