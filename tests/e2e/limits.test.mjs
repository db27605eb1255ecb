// Keys and per-account limits through the HTTP API and the CLI: listing
// and revoking keys (an account sees only its own), the limits set with a
// key (VMs, running VMs, guest memory, snapshots), their atomic counting
// under 32 concurrent creates, and the per-VM caps on a resize.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import {
  ADMIN_KEY,
  BASE,
  CREATE_TIMEOUT,
  VmTracker,
  api,
  expectError,
  ok,
  rand,
  runCli,
  show,
} from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

/** A key for a fresh account with these limits. */
async function limitedAccount(limits) {
  const res = await ok("POST", "/admin/v1/keys", { body: { account: `limits-${rand(4)}`, limits } });
  for (const [k, v] of Object.entries(limits)) assert.equal(res.limits?.[k], v, `limits.${k} in ${JSON.stringify(res)}`);
  return res;
}

test("keys: listed without their secret, revoked by id; another account's key is not found", async () => {
  const a = await ok("POST", "/admin/v1/keys", { body: { account: `keys-a-${rand(3)}` } });
  const b = await ok("POST", "/admin/v1/keys", { body: { account: `keys-b-${rand(3)}` } });
  assert.match(a.id ?? "", /^key-[a-z0-9]+$/, JSON.stringify(a));

  const all = await ok("GET", "/admin/v1/keys");
  const mine = all.keys.find((k) => k.id === a.id);
  assert.ok(mine, `admin sees ${a.id}: ${JSON.stringify(all)}`);
  assert.equal(mine.account, a.account);
  assert.equal(mine.admin, false);
  assert.ok(a.key.startsWith(mine.prefix), `prefix ${mine.prefix} of ${a.key}`);
  assert.ok(!JSON.stringify(all).includes(a.key), "a listing never holds a key's secret");
  assert.ok(all.keys.some((k) => k.bootstrap && k.admin), "the bootstrap admin key is listed");

  const own = await ok("GET", "/admin/v1/keys", { key: a.key });
  assert.deepEqual(own.keys.map((k) => k.id), [a.id], "an account lists only its own keys");

  // Cross-account: b's key cannot see or revoke a's.
  expectError(await api("DELETE", `/admin/v1/keys/${a.id}`, { key: b.key }), 404, "KEY_NOT_FOUND", "revoke another's");
  expectError(await api("POST", "/admin/v1/keys", { key: b.key, body: {} }), 403, "FORBIDDEN", "non-admin create");
  assert.equal((await api("GET", "/v1/vms", { key: a.key })).status, 200, "a still works");

  await ok("DELETE", `/admin/v1/keys/${a.id}`);
  expectError(await api("GET", "/v1/vms", { key: a.key }), 401, "UNAUTHORIZED", "a revoked key");
  expectError(await api("DELETE", `/admin/v1/keys/${a.id}`), 404, "KEY_NOT_FOUND", "revoke twice");
  // An account may revoke its own key.
  await ok("DELETE", `/admin/v1/keys/${b.id}`, { key: b.key });
  expectError(await api("GET", "/v1/vms", { key: b.key }), 401, "UNAUTHORIZED", "self-revoked key");
});

test("keys: the CLI lists and revokes", async () => {
  const asAdmin = { SPROUT_URL: BASE, SPROUT_API_KEY: ADMIN_KEY };
  const made = await runCli(["keys", "create", "--account", `cli-keys-${rand(3)}`, "--max-vms", "3", "--json"], {
    env: asAdmin,
  });
  assert.equal(made.code, 0, made.stderr);
  const key = JSON.parse(made.out);
  assert.equal(key.limits.maxVms, 3);
  const list = await runCli(["keys", "list"], { env: asAdmin });
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.out, new RegExp(key.id));
  const rev = await runCli(["keys", "revoke", key.id], { env: asAdmin });
  assert.equal(rev.code, 0, rev.stderr);
  const again = await runCli(["keys", "revoke", key.id], { env: asAdmin });
  assert.equal(again.code, 1);
  assert.match(again.stderr, /KEY_NOT_FOUND/);
});

test("limits: 32 concurrent creates with a limit of 5 make exactly 5", { timeout: CREATE_TIMEOUT }, async () => {
  const acct = await limitedAccount({ maxVms: 5 });
  const results = await Promise.all(
    Array.from({ length: 32 }, () => api("POST", "/v1/vms", { key: acct.key, body: { idleTimeoutSeconds: 0 } })),
  );
  for (const r of results) if (r.status === 200) vms.track(r.json.id, acct.key);
  const made = results.filter((r) => r.status === 200);
  const refused = results.filter((r) => r.status === 429);
  assert.equal(made.length, 5, results.map((r) => `${r.status} ${r.json?.code ?? ""}`).join(", "));
  assert.equal(refused.length, 27);
  for (const r of refused) expectError(r, 429, "VM_LIMIT_REACHED");
  const list = await ok("GET", "/v1/vms", { key: acct.key });
  assert.equal(list.vms.length, 5, JSON.stringify(list));
  await Promise.all(made.map((r) => ok("DELETE", `/v1/vms/${r.json.id}`, { key: acct.key })));
  for (const r of made) vms.forget(r.json.id);
  // Deleted VMs no longer count.
  const again = await api("POST", "/v1/vms", { key: acct.key, body: {} });
  assert.equal(again.status, 200, show("POST", "/v1/vms", again));
  vms.track(again.json.id, acct.key);
});

test("limits: running VMs and their memory; a suspended VM frees its place", { timeout: CREATE_TIMEOUT }, async () => {
  const acct = await limitedAccount({ maxRunningVms: 1, maxVms: 3 });
  const a = await vms.create({ idleTimeoutSeconds: 0 }, acct.key);
  expectError(await api("POST", "/v1/vms", { key: acct.key, body: {} }), 429, "RUNNING_VM_LIMIT_REACHED", "second running VM");
  await ok("POST", `/v1/vms/${a.id}/suspend`, { key: acct.key });
  const b = await vms.create({ idleTimeoutSeconds: 0 }, acct.key);
  expectError(await api("POST", `/v1/vms/${a.id}/start`, { key: acct.key }), 429, "RUNNING_VM_LIMIT_REACHED", "resume past the limit");
  // A guest request that would resume it is refused the same way.
  expectError(await api("POST", `/v1/vms/${a.id}/exec-await`, { key: acct.key, body: { command: "true" } }), 429,
    "RUNNING_VM_LIMIT_REACHED", "exec resuming past the limit");
  await ok("DELETE", `/v1/vms/${b.id}`, { key: acct.key });
  vms.forget(b.id);
  await ok("POST", `/v1/vms/${a.id}/start`, { key: acct.key });

  const mem = await limitedAccount({ maxMemoryMb: 1500 });
  await vms.create({ idleTimeoutSeconds: 0 }, mem.key);
  expectError(await api("POST", "/v1/vms", { key: mem.key, body: {} }), 429, "MEMORY_LIMIT_REACHED", "second 1 GiB VM in 1500 MiB");
});

test("limits: snapshots of an account", { timeout: CREATE_TIMEOUT }, async () => {
  const acct = await limitedAccount({ maxSnapshots: 1 });
  const { id } = await vms.create({ idleTimeoutSeconds: 0 }, acct.key);
  const first = await ok("POST", `/v1/vms/${id}/snapshot`, { key: acct.key, body: {} });
  expectError(await api("POST", `/v1/vms/${id}/snapshot`, { key: acct.key, body: {} }), 429, "SNAPSHOT_LIMIT_REACHED", "second snapshot");
  await ok("DELETE", `/v1/vms/snapshots/${first.snapshotId}`, { key: acct.key });
  await ok("POST", `/v1/vms/${id}/snapshot`, { key: acct.key, body: {} });
});

test("limits: a resize past the server's per-VM caps is refused", async () => {
  const { id } = await vms.create({ idleTimeoutSeconds: 0 });
  for (const body of [{ memSizeGb: 4096 }, { vcpuCount: 1000 }, { rootfsSizeGb: 100000 }]) {
    expectError(await api("POST", `/v1/vms/${id}/resize`, { body }), 400, "INVALID_PARAMETERS", JSON.stringify(body));
  }
});
