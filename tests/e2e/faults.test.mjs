// QEMU faults, as a host or a hostile guest would cause them: a VM's QEMU
// is killed (SIGKILL) while an exec, a file upload, a snapshot, a fork, a
// suspend or a resume of that VM is in flight, and a QEMU is frozen
// (SIGSTOP). Each request answers (a clear JSON error, or success when it
// finished first), the VM's state is right afterwards, nothing it made is
// left half done, other VMs are not affected, and sproutd's fds do not
// grow. One VM per case; after() deletes them all.
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { after, before, test } from "node:test";
import {
  CREATE_TIMEOUT,
  VmTracker,
  api,
  apiWithin,
  enc,
  exec,
  filesPath,
  qemuPids,
  rand,
  show,
  sleep,
  waitNoHostPids,
  waitState,
} from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

const SPROUTD_PID = +(process.env.SPROUTD_PID ?? 0);
const fdCount = () => (SPROUTD_PID ? readdirSync(`/proc/${SPROUTD_PID}/fd`).length : 0);
let fds0 = 0;
before(() => {
  fds0 = fdCount();
});

/** A fresh VM with /root/marker holding a random word; returns {id, marker}. */
async function freshVm(tag) {
  const { id } = await vms.create({ name: `e2e-fault-${tag}-${rand(3)}` });
  const marker = `m-${rand()}`;
  await exec(id, `echo ${marker} > /root/marker; sync`);
  return { id, marker };
}

/** Kills the VM's QEMU with SIGKILL; fails if it has none. */
function killQemu(id) {
  const pids = qemuPids(id);
  assert.ok(pids.length > 0, `a QEMU process for ${id}`);
  for (const pid of pids) process.kill(+pid, "SIGKILL");
}

/** An answer that is either success or a JSON error with a code. */
function answered(what, res) {
  assert.ok(!res.timedOut, `${what} answers: ${show("?", what, res)}`);
  if (res.status !== 200) assert.equal(typeof res.json?.code, "string", `${what}: a JSON error with a code: ${res.status} ${res.text}`);
}

/** After its QEMU died: the VM is lost or stopped, an exec errors at once, delete works, nothing runs. */
async function deadAndGone(id) {
  const state = await waitState(id, ["stopped", "lost", "suspended"], { timeoutMs: 20_000 });
  if (state !== "suspended") {
    const p = `/v1/vms/${id}/exec-await`;
    const res = await apiWithin(30_000, "POST", p, { body: { command: "true" } });
    assert.ok(!res.timedOut && res.status >= 400 && typeof res.json?.code === "string", `exec on a dead VM: ${show("POST", p, res)}`);
  }
  const del = await api("DELETE", `/v1/vms/${enc(id)}`);
  assert.equal(del.status, 200, show("DELETE", id, del));
  vms.forget(id);
  await waitNoHostPids(id);
  return state;
}

const T = { timeout: CREATE_TIMEOUT + 120_000 };

test("QEMU killed during an exec: the exec answers an error, the VM is lost", T, async () => {
  const { id } = await freshVm("exec");
  const p = `/v1/vms/${id}/exec-await`;
  const pending = apiWithin(60_000, "POST", p, { body: { command: "sleep 20; echo late" } });
  await sleep(1500);
  killQemu(id);
  const res = await pending;
  answered(p, res);
  assert.notEqual(res.status, 200, `an exec whose VM died under it fails: ${show("POST", p, res)}`);
  await deadAndGone(id);
});

test("QEMU killed during a file upload: the upload answers an error, the VM is lost", T, async () => {
  const { id } = await freshVm("file");
  const p = filesPath(id, "/root/big.bin");
  const body = Buffer.alloc(4 << 20, 7).toString("base64");
  const pending = apiWithin(120_000, "PUT", p, { body: { content: body, encoding: "base64" } });
  await sleep(150);
  killQemu(id);
  answered(p, await pending);
  await deadAndGone(id);
});

test("QEMU killed during a snapshot: it answers, and a snapshot that exists restores", T, async () => {
  const { id, marker } = await freshVm("snap");
  const p = `/v1/vms/${id}/snapshot`;
  const pending = apiWithin(120_000, "POST", p, { body: {} });
  await sleep(30);
  killQemu(id);
  const res = await pending;
  answered(p, res);
  console.log(`# snapshot with its QEMU killed: ${res.status} ${res.json?.code ?? ""}`);
  await deadAndGone(id);
  if (res.status === 200) {
    const sid = res.json.snapshotId;
    const r = await vms.create({ snapshotId: sid });
    assert.equal((await exec(r.id, "cat /root/marker")).stdout.trim(), marker);
    await api("DELETE", `/v1/vms/snapshots/${enc(sid)}`);
  }
});

test("QEMU killed during a fork: it answers, and no fork is left half made", T, async () => {
  const { id, marker } = await freshVm("fork");
  const list = async () => (await api("GET", "/v1/vms")).json.vms.map((v) => v.id);
  const before = new Set(await list());
  const p = `/v1/vms/${id}/fork`;
  const pending = apiWithin(180_000, "POST", p, { body: { count: 2 } });
  await sleep(30);
  killQemu(id);
  const res = await pending;
  answered(p, res);
  console.log(`# fork with its QEMU killed: ${res.status} ${res.json?.code ?? ""}`);
  const forks = res.status === 200 ? (res.json.forks ?? res.json.vms ?? []).map((v) => v.id ?? v) : [];
  for (const f of forks) {
    vms.track(f);
    assert.equal((await exec(f, "cat /root/marker")).stdout.trim(), marker, `fork ${f} has the parent's files`);
  }
  const now = (await list()).filter((v) => !before.has(v));
  assert.deepEqual(now.sort(), forks.sort(), "the VMs that appeared are exactly the forks answered");
  await deadAndGone(id);
});

test("QEMU killed during a suspend: it answers, the VM is suspended or lost", T, async () => {
  const { id, marker } = await freshVm("suspend");
  const p = `/v1/vms/${id}/suspend`;
  const pending = apiWithin(60_000, "POST", p);
  await sleep(20);
  killQemu(id);
  const res = await pending;
  answered(p, res);
  const state = await waitState(id, ["suspended", "stopped", "lost"], { timeoutMs: 20_000 });
  console.log(`# suspend with its QEMU killed: ${res.status} ${res.json?.code ?? ""}, state ${state}`);
  if (res.status === 200) assert.equal(state, "suspended");
  if (state === "suspended") assert.equal((await exec(id, "cat /root/marker")).stdout.trim(), marker);
  await deadAndGone(id).catch(async () => {
    await api("DELETE", `/v1/vms/${enc(id)}`);
  });
});

test("QEMU killed during a resume: it answers, and a VM still suspended resumes later", T, async () => {
  const { id, marker } = await freshVm("resume");
  const s = await api("POST", `/v1/vms/${id}/suspend`);
  assert.equal(s.status, 200, show("POST", "suspend", s));
  await waitNoHostPids(id);
  const p = `/v1/vms/${id}/start`;
  const pending = apiWithin(120_000, "POST", p);
  let killed = false;
  for (let i = 0; i < 500 && !killed; i++) {
    const pids = qemuPids(id);
    if (pids.length) {
      for (const pid of pids) process.kill(+pid, "SIGKILL");
      killed = true;
    } else await sleep(5);
  }
  const res = await pending;
  answered(p, res);
  const state = await waitState(id, ["suspended", "stopped", "lost"], { timeoutMs: 20_000 });
  console.log(`# resume with its QEMU killed (${killed ? "killed" : "no QEMU seen"}): ${res.status} ${res.json?.code ?? ""}, state ${state}`);
  if (state === "suspended") assert.equal((await exec(id, "cat /root/marker")).stdout.trim(), marker, "a resume cut short leaves a VM that resumes");
  const del = await api("DELETE", `/v1/vms/${enc(id)}`);
  assert.equal(del.status, 200);
  vms.forget(id);
  await waitNoHostPids(id);
});

test("a frozen QEMU (SIGSTOP) is found hung within seconds; other VMs go on; SIGCONT brings it back", T, async () => {
  const a = await freshVm("frozen");
  const b = await freshVm("other");
  const pids = qemuPids(a.id);
  assert.ok(pids.length > 0);
  for (const pid of pids) process.kill(+pid, "SIGSTOP");
  try {
    await sleep(5000);
    const p = `/v1/vms/${a.id}/exec-await`;
    const t0 = Date.now();
    const res = await apiWithin(30_000, "POST", p, { body: { command: "true" } });
    assert.ok(!res.timedOut && Date.now() - t0 < 10_000, `a hung VM answers within 10 s: ${show("POST", p, res)}`);
    assert.equal(res.status, 503, show("POST", p, res));
    assert.equal(res.json?.code, "VM_UNRESPONSIVE");
    const sp = `/v1/vms/${a.id}/suspend`;
    const sr = await apiWithin(30_000, "POST", sp);
    assert.ok(!sr.timedOut && sr.status === 503, `a suspend of a hung VM is refused at once: ${show("POST", sp, sr)}`);
    assert.equal((await exec(b.id, "cat /root/marker")).stdout.trim(), b.marker, "another VM is not affected");
  } finally {
    for (const pid of pids) process.kill(+pid, "SIGCONT");
  }
  let out = null;
  for (let i = 0; i < 40 && out === null; i++) {
    const r = await api("POST", `/v1/vms/${a.id}/exec-await`, { body: { command: "cat /root/marker" } });
    if (r.status === 200) out = r.json.stdout.trim();
    else await sleep(250);
  }
  assert.equal(out, a.marker, "the VM answers again after SIGCONT");
});

test("a guest that breaks its agent link (garbage on the port) gets a new link once its agent runs again", T, async () => {
  const { id, marker } = await freshVm("garbage");
  // Outside the agent's own cgroup, so that stopping the agent does not end it.
  const script =
    "sleep 1; systemctl stop sprout-agent; head -c 65536 /dev/urandom > /dev/virtio-ports/agent; sleep 2; systemctl start sprout-agent";
  const started = async () => (await exec(id, "systemctl show -p ExecMainStartTimestampMonotonic sprout-agent")).stdout.trim();
  const before = await started();
  await exec(id, `systemd-run --unit=break-agent-${rand(3)} sh -c '${script}'`);
  await sleep(4500);
  let out = null;
  const t0 = Date.now();
  while (out === null && Date.now() - t0 < 60_000) {
    const r = await apiWithin(30_000, "POST", `/v1/vms/${id}/exec-await`, { body: { command: "cat /root/marker" } });
    if (r.status === 200) out = r.json.stdout.trim();
    else {
      assert.equal(typeof r.json?.code, "string", `a JSON error while the link is down: ${r.status} ${r.text}`);
      await sleep(500);
    }
  }
  console.log(`# exec answered again ${Date.now() - t0} ms after the guest broke its agent link`);
  assert.equal(out, marker, "exec works again with a new link");
  assert.notEqual(await started(), before, "the guest's agent was stopped and started again");
  const info = await api("GET", `/v1/vms/${id}`);
  assert.equal(info.json?.agentReachable, true, `info says the agent is reachable again: ${info.text}`);
});

test("sproutd's open fds do not grow across the faults", { skip: !SPROUTD_PID }, async () => {
  await vms.cleanup();
  await sleep(2000);
  const fds = fdCount();
  console.log(`# sproutd fds: ${fds0} before, ${fds} after`);
  assert.ok(fds <= fds0 + 8, `fds grew from ${fds0} to ${fds}`);
});
