// What a hostile guest must not do to the daemon or to other tenants: a
// guest that stops reading its agent port cannot hold a request, another
// VM or a delete; an account cannot reach another account's VMs through
// any endpoint family.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { CREATE_TIMEOUT, VmTracker, api, apiWithin, exec, expectError, ok, rand, show, sleep } from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

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
});
