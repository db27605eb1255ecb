// End-to-end tests of the warm pool and of what makes every restored VM its
// own: sproutd keeps VMs restored and paused (--warm-pool, 2 by default),
// a create claims one and gets the request's settings, the pool fills
// again; pooled VMs count against no account; every VM from a snapshot,
// the pool or a fork has its own random pool, machine id and host name;
// GET /metrics (admin only) in the Prometheus text format; /healthz names
// the pool's figures.
import assert from "node:assert/strict";
import { existsSync, readFileSync, realpathSync, statSync } from "node:fs";
import { after, test } from "node:test";
import { CREATE_TIMEOUT, VmTracker, api, catFile, exec, expectError, newAccount, ok, rand, sleep } from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

// The pool's figures once it holds at least n VMs (it fills in the
// background, after creates have been quiet for a moment).
async function poolHolds(n, timeoutMs = 180_000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = (await ok("GET", "/healthz")).warmPool;
    if (last.vms >= n) return last;
    await sleep(500);
  }
  assert.fail(`the warm pool did not reach ${n} VMs within ${timeoutMs} ms: ${JSON.stringify(last)}`);
}

async function metrics(key) {
  const res = await api("GET", "/metrics", { key });
  assert.equal(res.status, 200, res.text);
  return res.text;
}

const metric = (text, name) => {
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
};

// What makes a VM itself, read inside it.
async function identity(id) {
  const r = await exec(id, "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /etc/machine-id; hostname; cat /proc/sys/kernel/random/uuid");
  assert.equal(r.statusCode, 0, JSON.stringify(r));
  const [random, machineId, hostname, uuid] = r.stdout.trim().split("\n");
  assert.match(random, /^[0-9a-f]{64}$/);
  assert.match(machineId, /^[0-9a-f]{32}$/);
  return { random, machineId, hostname, uuid };
}

function allDiffer(ids, field) {
  const values = ids.map((x) => x[field]);
  assert.equal(new Set(values).size, values.length, `every VM has its own ${field}: ${values.join(" ")}`);
}

test("the pool fills; a create claims a pooled VM with the request's settings, and the pool fills again", { timeout: CREATE_TIMEOUT }, async () => {
  const before = await poolHolds(1);
  assert.ok(before.memoryBytes >= before.vms * 128 * 1024 * 1024, JSON.stringify(before));
  const hits = metric(await metrics(), "sprout_warm_pool_hits_total");
  const tag = rand(4);
  const vm = await vms.create({
    name: `pooled-${tag}`,
    workdir: "/srv/pooled",
    additionalFiles: { "/srv/pooled/hello.txt": { content: `hello ${tag}\n` } },
    idleTimeoutSeconds: 600,
  });
  assert.equal(metric(await metrics(), "sprout_warm_pool_hits_total"), hits + 1, "the create came from the pool");
  const info = await ok("GET", `/v1/vms/${vm.id}`);
  assert.equal(info.state, "running");
  assert.equal(info.name, `pooled-${tag}`);
  const r = await exec(vm.id, "pwd; cat hello.txt; date +%s");
  assert.equal(r.statusCode, 0);
  const [pwd, hello, when] = r.stdout.trim().split("\n");
  assert.equal(pwd, "/srv/pooled");
  assert.equal(hello, `hello ${tag}`);
  assert.ok(Math.abs(Number(when) - Date.now() / 1000) < 30, `the guest clock was set at the claim: ${when}`);
  const listed = await ok("GET", "/v1/vms");
  assert.ok(listed.vms.some((v) => v.id === vm.id), "the claimed VM is listed");
  await poolHolds(before.vms);
});

test("pooled VMs are no account's: an account allowed one VM gets one from the pool, and no other", { timeout: CREATE_TIMEOUT }, async () => {
  await poolHolds(1);
  const acct = await ok("POST", "/admin/v1/keys", { body: { account: `e2e-pool-${rand(3)}`, limits: { maxVms: 1 } } });
  const list = await ok("GET", "/v1/vms", { key: acct.key });
  assert.equal(list.vms.length, 0, "a new account sees no VM, pooled ones included");
  const a = await vms.create({}, acct.key);
  expectError(await api("POST", "/v1/vms", { body: {}, key: acct.key }), 429, "VM_LIMIT_REACHED");
  await ok("DELETE", `/v1/vms/${a.id}`, { key: acct.key });
  vms.forget(a.id);
});

test("every VM is its own: two pooled creates and two forks differ in random bytes, machine id and host name", { timeout: CREATE_TIMEOUT }, async () => {
  await poolHolds(2);
  const [a, b] = await Promise.all([vms.create({}), vms.create({})]);
  const forked = await ok("POST", `/v1/vms/${a.id}/fork`, { body: { count: 2 }, timeoutMs: CREATE_TIMEOUT });
  const children = forked.forks.map((x) => x.id);
  assert.equal(children.length, 2, JSON.stringify(forked));
  children.forEach((id) => vms.track(id));
  const all = [a.id, b.id, ...children];
  const ids = await Promise.all(all.map(identity));
  allDiffer(ids, "random");
  allDiffer(ids, "uuid");
  allDiffer(ids, "machineId");
  allDiffer(ids, "hostname");
  ids.forEach((x, i) => assert.equal(x.hostname, all[i], "a VM's host name is its id"));
  // The same VM keeps its identity across a suspend and resume.
  await ok("POST", `/v1/vms/${b.id}/suspend`);
  const again = await identity(b.id);
  assert.equal(again.machineId, ids[1].machineId);
  assert.equal(again.hostname, ids[1].hostname);
  // journald goes on answering under the new machine id.
  const hosts = await catFile(a.id, "/etc/hosts");
  assert.match(hosts, new RegExp(`^127\\.0\\.1\\.1\\s+${a.id}$`, "m"));
  const j = await exec(a.id, "logger -t pooltest hello-$(cat /etc/machine-id); sleep 1; journalctl -t pooltest --no-pager -o cat");
  assert.match(j.stdout, new RegExp(`hello-${ids[0].machineId}`), `journalctl after the id changed: ${JSON.stringify(j)}`);
});

test("GET /metrics: the Prometheus text format, for admin keys only", async () => {
  const text = await metrics();
  for (const name of ["sprout_vms", "sprout_warm_pool_vms", "sprout_warm_pool_hits_total", "sprout_warm_pool_misses_total",
    "sprout_qemu_resident_bytes", "sprout_storage_bytes", "sprout_http_requests_total", "sprout_http_request_seconds",
    "sprout_vm_pool_claim_seconds", "sprout_vm_fork_seconds", "sprout_vm_suspend_seconds"]) {
    assert.match(text, new RegExp(`^# TYPE ${name} (gauge|counter|histogram)$`, "m"), `${name} has a TYPE line`);
  }
  assert.match(text, /^sprout_vms\{state="running"\} \d+$/m);
  assert.match(text, /^sprout_http_requests_total\{op="create_vm",code="2xx"\} [1-9]\d*$/m);
  assert.match(text, /^sprout_http_request_seconds_bucket\{op="create_vm",le="\+Inf"\} [1-9]\d*$/m);
  assert.ok(metric(text, "sprout_qemu_processes") >= 1);
  // Every sample line is NAME{labels} VALUE.
  for (const line of text.split("\n").filter((l) => l && !l.startsWith("#")))
    assert.match(line, /^[a-z_]+(\{[^}]*\})? -?[0-9.e+]+$/, line);
  const user = await newAccount(`e2e-metrics-${rand(3)}`);
  expectError(await api("GET", "/metrics", { key: user.key }), 403);
  expectError(await api("GET", "/metrics", { key: "" }), 401);
});

// A running VM's RAM is on a tmpfs of its own (vms/<id>/ram, sized to its
// memory), not page cache in the data dir; a suspend saves it to disk once
// (sparse) and drops the tmpfs; the guest's memory comes back whole; a
// delete leaves no mount. Reads the host's mount table and data dir.
test("a running VM's RAM is on its own tmpfs and reaches the disk only at suspend", { skip: !process.env.SPROUT_DATA_DIR }, async () => {
  const data = realpathSync(process.env.SPROUT_DATA_DIR);
  const ramMount = (id) => readFileSync("/proc/self/mountinfo", "utf8").split("\n")
    .find((l) => l.split(" ")[4] === `${data}/vms/${id}/ram`);
  const vm = await vms.create({});
  const mb = (await ok("GET", `/v1/vms/${vm.id}`)).memSizeMb;
  const mount = ramMount(vm.id);
  assert.ok(mount, "a tmpfs is mounted at vms/<id>/ram");
  assert.match(mount, new RegExp(` - tmpfs \\S+ \\S*size=${(mb + 1) * 1024}k`), `sized to its memory (+1 MiB): ${mount}`);
  assert.ok(!existsSync(`${data}/vms/${vm.id}/mem`), "no RAM file in the data dir while it runs");
  const sum = (await exec(vm.id, "head -c 64M /dev/urandom > /dev/shm/blob && md5sum < /dev/shm/blob")).stdout;
  await ok("POST", `/v1/vms/${vm.id}/suspend`);
  assert.equal(ramMount(vm.id), undefined, "the tmpfs goes with the QEMU");
  const saved = statSync(`${data}/vms/${vm.id}/mem`);
  assert.equal(saved.size, mb * 2 ** 20);
  assert.ok(saved.blocks * 512 >= 64 * 2 ** 20, `the guest's pages are on disk (${saved.blocks * 512} bytes)`);
  assert.ok(saved.blocks * 512 < mb * 2 ** 20 / 2, `only the pages in use, not all ${mb} MiB (${saved.blocks * 512} bytes)`);
  assert.equal((await exec(vm.id, "md5sum < /dev/shm/blob")).stdout, sum, "memory whole after the resume");
  // A fork runs from its own tmpfs too, and sees the same memory.
  const fork = (await ok("POST", `/v1/vms/${vm.id}/fork`, { body: { count: 1 }, timeoutMs: CREATE_TIMEOUT })).forks[0];
  vms.track(fork.id);
  assert.ok(ramMount(fork.id), "the fork's RAM is on a tmpfs");
  assert.equal((await exec(fork.id, "md5sum < /dev/shm/blob")).stdout, sum);
  for (const id of [fork.id, vm.id]) {
    await ok("DELETE", `/v1/vms/${id}`);
    assert.equal(ramMount(id), undefined, "no mount left after a delete");
  }
});
