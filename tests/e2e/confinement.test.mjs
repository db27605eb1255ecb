// What a hostile guest must not do to the daemon or to other tenants: a
// guest that stops reading its agent port cannot hold a request, another
// VM or a delete; an account cannot reach another account's VMs through
// any endpoint family.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { readFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import { CREATE_TIMEOUT, VmTracker, api, apiWithin, exec, expectError, hostPids, ok, rand, show, sleep } from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

/** The host's view of a VM's QEMU: /proc/PID/status fields and environ. */
function qemuProc(id) {
  const pids = hostPids(id);
  assert.equal(pids.length, 1, `one QEMU for ${id}: ${pids}`);
  const status = Object.fromEntries(
    readFileSync(`/proc/${pids[0]}/status`, "utf8")
      .split("\n")
      .map((l) => l.split(":\t"))
      .filter((kv) => kv.length === 2),
  );
  const environ = readFileSync(`/proc/${pids[0]}/environ`, "utf8").split("\0").filter(Boolean);
  return { pid: pids[0], status, environ };
}

/** The memory limit of a process's cgroup (v1 or v2), in bytes. */
function memoryLimit(pid) {
  const lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n");
  const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
  const path = v1 ? `/sys/fs/cgroup/memory${v1.split(":")[2]}/memory.limit_in_bytes`
    : `/sys/fs/cgroup${lines.find((l) => l.startsWith("0::")).slice(3)}/memory.max`;
  return Number(readFileSync(path, "utf8").trim());
}

test("each QEMU runs as its own unprivileged uid, sandboxed, with no SPROUT_ variables", { timeout: CREATE_TIMEOUT }, async () => {
  const [a, b] = await Promise.all([vms.create({ idleTimeoutSeconds: 0 }), vms.create({ idleTimeoutSeconds: 0 })]);
  const pa = qemuProc(a.id);
  const pb = qemuProc(b.id);
  const uid = (p) => p.status.Uid.split(/\s+/);
  for (const p of [pa, pb]) {
    assert.ok(uid(p).every((u) => u !== "0"), `QEMU ${p.pid} uids: ${p.status.Uid}`);
    assert.equal(p.status.Seccomp.trim(), "2", `QEMU ${p.pid} Seccomp`);
    assert.equal(p.status.NoNewPrivs.trim(), "1", `QEMU ${p.pid} NoNewPrivs`);
    assert.ok(!p.environ.some((e) => e.startsWith("SPROUT_") || e.startsWith("FREESTYLE_")), `QEMU ${p.pid} environ: ${p.environ}`);
  }
  assert.notEqual(uid(pa)[0], uid(pb)[0], "two VMs, two uids");
  // Its cgroup limits its memory to the guest's RAM and QEMU's own share.
  const info = await ok("GET", `/v1/vms/${a.id}`);
  const limit = memoryLimit(pa.pid);
  assert.ok(limit >= info.memSizeMb * 1048576 && limit <= (info.memSizeMb + 1024) * 1048576,
    `memory limit ${limit} for a ${info.memSizeMb} MiB guest`);
  // Its root shows its own directory, not the data dir's other VMs.
  const root = `/proc/${pa.pid}/root`;
  const ownDir = readFileSync(`/proc/${pa.pid}/cmdline`, "utf8").split("\0").find((x) => x.includes("/qmp.sock"));
  const vmsDir = ownDir.replace(/^unix:/, "").replace(/\/[^/]+\/qmp\.sock.*$/, "");
  const { readdirSync } = await import("node:fs");
  assert.deepEqual(readdirSync(`${root}${vmsDir}`), [a.id], `the VMs a jail shows`);
  // The guest still works, and restores from snapshots made under it.
  assert.equal((await exec(a.id, "echo ok")).stdout, "ok\n");
  const snap = await ok("POST", `/v1/vms/${a.id}/snapshot`, { body: {} });
  const c = await vms.create({ snapshotId: snap.snapshotId, idleTimeoutSeconds: 0 });
  assert.equal((await exec(c.id, "echo restored")).stdout, "restored\n");
  await ok("DELETE", `/v1/vms/snapshots/${snap.snapshotId}`);
});

test("a guest that SIGSTOPs its agent: an upload fails in time, other VMs answer, delete completes", { timeout: CREATE_TIMEOUT }, async () => {
  const [stuck, other] = await Promise.all([vms.create({ idleTimeoutSeconds: 0 }), vms.create({ idleTimeoutSeconds: 0 })]);
  await exec(stuck.id, "setsid sh -c 'sleep 1; kill -STOP $(pidof sprout-agent)' >/dev/null 2>&1 < /dev/null &");
  await sleep(2500);
  const content = Buffer.alloc(4 << 20, 7).toString("base64");
  const t0 = Date.now();
  const put = await apiWithin(90_000, "PUT", `/v1/vms/${stuck.id}/files/${encodeURIComponent("/root/big")}`, {
    body: { content, encoding: "base64" },
  });
  const took = Date.now() - t0;
  assert.ok(put.status >= 500 && put.status < 600, show("PUT", "upload to a stuck guest", put));
  // Its deadline: 30 s and a second per MiB.
  assert.ok(took < 45_000, `the upload failed after ${took} ms`);
  // The other VM is not held up by it.
  const t1 = Date.now();
  const out = await exec(other.id, "echo alive");
  assert.equal(out.stdout, "alive\n");
  assert.ok(Date.now() - t1 < 15_000, "another VM's exec answered in time");
  const t2 = Date.now();
  const del = await apiWithin(60_000, "DELETE", `/v1/vms/${stuck.id}`);
  assert.equal(del.status, 200, show("DELETE", stuck.id, del));
  assert.ok(Date.now() - t2 < 30_000, `delete of the stuck VM took ${Date.now() - t2} ms`);
  vms.forget(stuck.id);
});

test("another account's VM is not found through any endpoint family", { timeout: CREATE_TIMEOUT }, async () => {
  const owner = await ok("POST", "/admin/v1/keys", { body: { account: `conf-owner-${rand(3)}` } });
  const stranger = await ok("POST", "/admin/v1/keys", { body: { account: `conf-stranger-${rand(3)}` } });
  const { id } = await vms.create({ idleTimeoutSeconds: 0 }, owner.key);
  const snap = await ok("POST", `/v1/vms/${id}/snapshot`, { key: owner.key, body: {} });
  const f = encodeURIComponent("/etc/hostname");
  const calls = [
    ["GET", `/v1/vms/${id}`],
    ["POST", `/v1/vms/${id}/exec-await`, { command: "true" }],
    ["GET", `/v1/vms/${id}/files/${f}`],
    ["PUT", `/v1/vms/${id}/files/${f}`, { content: "x" }],
    ["POST", `/v1/vms/${id}/suspend`],
    ["POST", `/v1/vms/${id}/start`],
    ["POST", `/v1/vms/${id}/stop`],
    ["POST", `/v1/vms/${id}/kill`],
    ["POST", `/v1/vms/${id}/await`],
    ["POST", `/v1/vms/${id}/snapshot`, {}],
    ["POST", `/v1/vms/${id}/fork`, {}],
    ["POST", `/v1/vms/${id}/optimize`],
    ["POST", `/v1/vms/${id}/resize`, { rootfsSizeGb: 8 }],
    ["GET", `/v1/vms/${id}/systemd/services`],
    ["GET", `/v1/vms/${id}/systemd/services/foo/status`],
    ["POST", `/v1/vms/${id}/systemd/restart`, { services: [{ id: "foo" }] }],
    ["GET", `/v1/vms/${id}/terminals`],
    ["GET", `/v1/vms/${id}/terminals/t1/logs`],
    ["POST", `/v1/vms/${id}/watch-files`],
    ["GET", `/v1/vms/${id}/stats/stream`],
    ["DELETE", `/v1/vms/${id}`],
  ];
  for (const [method, p, body] of calls) {
    expectError(await apiWithin(60_000, method, p, { key: stranger.key, body }), 404, "VM_NOT_FOUND", `${method} ${p} as a stranger`);
  }
  for (const [method, body] of [["GET"], ["PATCH", { name: "x" }], ["DELETE"]]) {
    expectError(await api(method, `/v1/vms/snapshots/${snap.snapshotId}`, { key: stranger.key, body }), 404, "SNAPSHOT_NOT_FOUND",
      `${method} snapshot as a stranger`);
  }
  expectError(await api("POST", "/v1/vms", { key: stranger.key, body: { snapshotId: snap.snapshotId } }), 404,
    "SNAPSHOT_NOT_FOUND", "create from a stranger's snapshot");
  expectError(await api("DELETE", `/admin/v1/keys/${owner.id}`, { key: stranger.key }), 404, "KEY_NOT_FOUND", "revoke a stranger's key");
  const list = await ok("GET", "/v1/vms", { key: stranger.key });
  assert.ok(!list.vms.some((v) => v.id === id), "not listed for the stranger");
  // The owner still has it, running.
  assert.equal((await ok("GET", `/v1/vms/${id}`, { key: owner.key })).state, "running");
  await ok("DELETE", `/v1/vms/snapshots/${snap.snapshotId}`, { key: owner.key });
});

test("a guest flooding its serial console leaves a bounded console log", { timeout: CREATE_TIMEOUT }, async () => {
  const { id } = await vms.create({ idleTimeoutSeconds: 0 });
  const { pid } = qemuProc(id);
  const serial = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").find((x) => x.includes("console.log"));
  const log = serial.replace(/^.*path=/, "").replace(/,.*$/, "");
  const t0 = Date.now();
  await exec(id, "timeout 90 sh -c 'head -c 4000000 /dev/zero | tr \"\\000\" x > /dev/ttyS0'; true", { timeoutMs: 120_000 });
  await sleep(1500);
  const { statSync } = await import("node:fs");
  const size = statSync(log).size;
  assert.ok(size <= 2 << 20, `console.log is ${size} bytes after ${Date.now() - t0} ms of flooding`);
  assert.ok(statSync(`${log}.1`).size > 0, "the last lines before a trim are kept in console.log.1");
});

/** A TCP listener that counts the connections it gets. */
async function canary(host) {
  const seen = [];
  const server = net.createServer((sock) => {
    seen.push(sock.remoteAddress);
    sock.destroy();
  });
  await new Promise((resolve) => server.listen(0, host, resolve));
  return { port: server.address().port, seen, close: () => new Promise((r) => server.close(r)) };
}

test("the guest's network: the internet, never the host, its loopback, link-local or private ranges", { timeout: CREATE_TIMEOUT }, async () => {
  const { id } = await vms.create({ idleTimeoutSeconds: 0 });
  const loop = await canary("127.0.0.1");
  const any = await canary("0.0.0.0");
  // The host's own addresses, but the one tests/run.sh lets guests reach on purpose.
  const hostIps = Object.values(os.networkInterfaces()).flat()
    .filter((a) => a.family === "IPv4" && !a.internal && a.address !== process.env.SPROUT_TEST_HOST_ADDR)
    .map((a) => a.address);
  const targets = [
    `10.0.2.2:${loop.port}`, // the guest's gateway (QEMU's user-mode networking forwarded it to the host's loopback)
    `10.0.2.2:${any.port}`,
    `10.0.2.3:${any.port}`,
    ...hostIps.map((ip) => `${ip}:${any.port}`), // the host's own addresses
    `100.64.0.1:${any.port}`, // veth addresses (the host's and other VMs')
    `100.64.0.5:${any.port}`,
    `100.64.0.6:${any.port}`,
    "169.254.169.254:80", // cloud metadata
    `172.17.0.1:${any.port}`,
    `192.168.0.1:${any.port}`,
  ];
  const script = targets
    .map((t) => `if timeout 3 bash -c 'exec 3<>/dev/tcp/${t.replace(":", "/")}' 2>/dev/null; then echo "open ${t}"; fi`)
    .join("; ");
  const r = await exec(id, script, { timeoutMs: 120_000 });
  await sleep(500);
  await loop.close();
  await any.close();
  assert.equal(r.stdout, "", `reachable from the guest: ${r.stdout}`);
  assert.deepEqual(loop.seen, [], "the loopback canary was reached");
  assert.deepEqual(any.seen, [], "the host's canary was reached");
  // DNS and the internet (the Debian mirror) work.
  const web = await exec(id, "getent hosts deb.debian.org >/dev/null && curl -s -m 30 -o /dev/null -w '%{http_code}' http://deb.debian.org/debian/", { timeoutMs: 60_000 });
  assert.match(web.stdout, /^[23]\d\d$/, `the Debian mirror from the guest: ${JSON.stringify(web)}`);
});
