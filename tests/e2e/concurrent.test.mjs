// End-to-end tests with several VMs at once, owned by a fresh account so the
// list counts are exact: 4 VMs created in parallel, each isolated from the
// others, listing with limit/offset/vmState, and deleting some of them.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CREATE_TIMEOUT, VmTracker, api, exec, expectError, newAccount, ok, rand } from "./lib.mjs";

const N = 4;
const vms = new VmTracker();
let key;
let ids = [];

before(async () => {
  key = (await newAccount(`e2e-conc-${rand(3)}`)).key;
});
after(() => vms.cleanup());

function needVms() {
  assert.equal(ids.length, N, "the VMs were not created");
  return ids;
}

test(`create ${N} VMs at once`, { timeout: CREATE_TIMEOUT * 2 }, async () => {
  const t0 = Date.now();
  const created = await Promise.all(
    Array.from({ length: N }, (_, i) => vms.create({ name: `conc-${i}` }, key)),
  );
  console.log(`# created ${N} VMs in parallel in ${Date.now() - t0} ms`);
  ids = created.map((v) => v.id);
  assert.equal(new Set(ids).size, N, `distinct ids: ${ids}`);
});

test("each VM answers exec and keeps its own files", { timeout: 5 * 60_000 }, async () => {
  const list = needVms();
  // Write each VM's own id into it, all at once.
  await Promise.all(list.map((id) => exec(id, `echo ${id} > /root/whoami`, { key })));
  const results = await Promise.all(list.map((id) => exec(id, "cat /root/whoami; uname -s", { key })));
  results.forEach((r, i) => {
    assert.equal(r.statusCode, 0);
    assert.equal(r.stdout, `${list[i]}\nLinux\n`, `VM ${list[i]} sees ${JSON.stringify(r.stdout)}`);
  });
});

test("each VM's info names itself", async () => {
  const list = needVms();
  const infos = await Promise.all(list.map((id) => ok("GET", `/v1/vms/${id}`, { key })));
  infos.forEach((vm, i) => {
    assert.equal(vm.id, list[i]);
    assert.equal(vm.name, `conc-${i}`);
    assert.equal(vm.state, "running");
  });
});

test("list: counts, limit/offset paging and the vmState filter", async () => {
  const list = needVms();
  const all = await ok("GET", "/v1/vms", { key });
  assert.equal(all.totalCount, N, JSON.stringify(all).slice(0, 300));
  assert.equal(all.runningCount, N);
  assert.equal(all.startingCount, 0);
  assert.equal(all.suspendedCount, 0);
  assert.equal(all.stoppedCount, 0);
  assert.deepEqual(all.vms.map((v) => v.id).sort(), [...list].sort());

  const p1 = await ok("GET", "/v1/vms?limit=2&offset=0", { key });
  const p2 = await ok("GET", "/v1/vms?limit=2&offset=2", { key });
  const p3 = await ok("GET", "/v1/vms?limit=2&offset=4", { key });
  assert.equal(p1.vms.length, 2, "first page");
  assert.equal(p2.vms.length, 2, "second page");
  assert.equal(p3.vms.length, 0, "past the end");
  assert.equal(p1.totalCount, N, "totalCount counts every VM, not the page");
  const paged = [...p1.vms, ...p2.vms].map((v) => v.id);
  assert.equal(new Set(paged).size, N, `pages overlap: ${paged}`);
  assert.deepEqual([...paged].sort(), [...list].sort());

  const limit3 = await ok("GET", "/v1/vms?limit=3", { key });
  assert.equal(limit3.vms.length, 3);
  const offset1 = await ok("GET", "/v1/vms?offset=1", { key });
  assert.equal(offset1.vms.length, N - 1);

  const running = await ok("GET", "/v1/vms?vmState=running", { key });
  assert.equal(running.vms.length, N);
  const stopped = await ok("GET", "/v1/vms?vmState=stopped", { key });
  assert.equal(stopped.vms.length, 0);
  const suspended = await ok("GET", "/v1/vms?vmState=suspended&limit=1", { key });
  assert.equal(suspended.vms.length, 0);
});

test("list: bad query values are rejected or ignored, never a crash", async () => {
  for (const q of ["limit=-1", "limit=abc", "offset=-5", "vmState=bogus"]) {
    const res = await api("GET", `/v1/vms?${q}`, { key });
    assert.ok(res.status === 200 || res.status === 400, `GET /v1/vms?${q} -> ${res.status} ${res.text.slice(0, 200)}`);
    if (res.status === 400) expectError(res, 400, null, `GET /v1/vms?${q}`);
  }
});

test("delete two VMs concurrently; the others keep running", { timeout: 5 * 60_000 }, async () => {
  const list = needVms();
  const [a, b, ...rest] = list;
  // An exec in flight on a VM being deleted must end promptly, with an error.
  const inflight = api("POST", `/v1/vms/${a}/exec-await`, { key, body: { command: "sleep 120; echo never" } });
  await new Promise((res) => setTimeout(res, 1000));
  const t0 = Date.now();
  const dels = await Promise.all([a, b].map((id) => ok("DELETE", `/v1/vms/${id}`, { key })));
  const lost = await inflight;
  assert.ok(Date.now() - t0 < 30000, `in-flight exec ended ${Date.now() - t0} ms after the delete`);
  assert.ok(lost.status >= 400, `in-flight exec on a deleted VM: ${lost.status} ${lost.text.slice(0, 200)}`);
  assert.equal(typeof lost.json?.code, "string", `JSON error for the in-flight exec: ${lost.text.slice(0, 200)}`);
  assert.deepEqual(dels.map((d) => d.id), [a, b]);
  vms.forget(a);
  vms.forget(b);
  for (const id of [a, b]) {
    expectError(await api("GET", `/v1/vms/${id}`, { key }), 404, "VM_NOT_FOUND", `GET deleted ${id}`);
  }
  const all = await ok("GET", "/v1/vms", { key });
  assert.equal(all.totalCount, rest.length);
  assert.deepEqual(all.vms.map((v) => v.id).sort(), [...rest].sort());
  const results = await Promise.all(rest.map((id) => exec(id, "cat /root/whoami", { key })));
  results.forEach((r, i) => assert.equal(r.stdout, `${rest[i]}\n`));
});
