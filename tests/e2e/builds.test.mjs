// End-to-end tests of templates and builds over plain HTTP: POST
// /v1/vms/snapshots with a spec or template (built in a temporary VM, then
// found in the layer cache), chains whose inner layer is reused, POST
// /v1/vms with a template, the build records and their phases, failures
// and their records, bad input, identical builds at once, and the
// background form (x-freestyle-background-after-secs).
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { ADMIN_KEY, BASE, CREATE_TIMEOUT, VmTracker, api, catFile, exec, expectError, newAccount, ok, rand, runCli, show } from "./lib.mjs";

const vms = new VmTracker();
const snapshots = new Set();
after(async () => {
  for (const id of snapshots) await api("DELETE", `/v1/vms/snapshots/${id}`).catch(() => {});
  await vms.cleanup();
});

const TAG = rand(4);
const T = { timeoutMs: CREATE_TIMEOUT };

// runCommands as SDK 0.1.46 sends them: chained oneshot services whose
// scripts are additional files.
function runCommands(prefix, ...commands) {
  const services = [];
  const additionalFiles = {};
  commands.forEach((cmd, i) => {
    const name = `${prefix}-${i + 1}`;
    const file = `/opt/freestyle/scripts/${name}.sh`;
    additionalFiles[file] = { content: `#!/bin/bash\n${cmd}`, encoding: "utf-8" };
    services.push({
      name,
      mode: "oneshot",
      deleteAfterSuccess: true,
      exec: [`/bin/bash ${file}`],
      ...(i > 0 ? { after: [`${prefix}-${i}.service`], requires: [`${prefix}-${i}.service`] } : {}),
    });
  });
  return { systemd: { services }, additionalFiles };
}

async function createSnapshot(body, opts = {}) {
  const res = await api("POST", "/v1/vms/snapshots", { body, ...T, ...opts });
  if (res.json?.snapshotId) snapshots.add(res.json.snapshotId);
  return res;
}

async function phases(buildId) {
  const p = await ok("GET", `/v1/vms/builds/${buildId}/phases`);
  return p.phases.map((x) => x.name);
}

async function vmFrom(snapshotId) {
  const c = await ok("POST", "/v1/vms", { body: { snapshotId }, ...T });
  vms.track(c.id);
  return c.id;
}

let first; // {snapshotId, buildId} of the one-layer spec

const SPEC = {
  discriminator: `one-${TAG}`,
  ...runCommands("freestyle-run-command", `echo built-${TAG} > /root/built.txt`, "cat /root/built.txt > /root/second.txt"),
};

test("a one-layer spec with runCommands is built in a VM and answered once done", async () => {
  const res = await createSnapshot({ spec: SPEC });
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  assert.match(res.json.snapshotId, /^sc-[a-z0-9]{20}$/);
  first = res.json;
  const build = await ok("GET", `/v1/vms/builds/${first.buildId}`);
  assert.equal(build.state, "succeeded");
  assert.equal(build.snapshotId, first.snapshotId);
  assert.ok(build.finishedAt, "a finished build says when");
  assert.deepEqual(build.plannedPhases, ["boot", "setup: additionalFiles", "setup: services", "snapshot"]);
  assert.deepEqual(await phases(first.buildId), build.plannedPhases);
  const snap = await ok("GET", `/v1/vms/snapshots/${first.snapshotId}`);
  assert.equal(snap.state, "ready");
  assert.equal(snap.buildId, first.buildId);
  assert.equal(snap.templateHash, build.templateHash);
  // The build's temporary VM is gone, and was never listed.
  const list = await ok("GET", "/v1/vms");
  assert.ok(!list.vms.some((v) => (v.name ?? "").startsWith("build ")), "no build VM is listed");
  // A VM from it has what the commands made (they ran before the snapshot).
  const id = await vmFrom(first.snapshotId);
  assert.equal((await catFile(id, "/root/second.txt")).trim(), `built-${TAG}`);
  const units = await exec(id, "ls /etc/systemd/system | grep -c freestyle-run-command || true");
  assert.equal(units.stdout.trim(), "0", "deleteAfterSuccess oneshots are gone");
});

test("the same spec again comes from the cache, without a VM", async () => {
  assert.ok(first, "needs the first build");
  const t0 = Date.now();
  const res = await createSnapshot({ spec: SPEC });
  const ms = Date.now() - t0;
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  assert.equal(res.json.snapshotId, first.snapshotId);
  assert.notEqual(res.json.buildId, first.buildId, "every request has its own build record");
  const p = await ok("GET", `/v1/vms/builds/${res.json.buildId}/phases`);
  assert.deepEqual(p.phases.map((x) => x.name), ["(cached)"]);
  assert.equal(p.phases[0].snapshotId, first.snapshotId);
  assert.ok(ms < 5000, `a cache hit is quick (${ms} ms)`);
  // The same content in another field order, and with the empty fields
  // the SDK sends, is the same layer.
  const shuffled = { git: { config: {} }, users: [], ...Object.fromEntries(Object.entries(SPEC).reverse()) };
  const again = await createSnapshot({ template: shuffled });
  assert.equal(again.json?.snapshotId, first.snapshotId, show("POST", "/v1/vms/snapshots", again));
});

test("skipCache builds anew; the new snapshot becomes the cache entry", async () => {
  assert.ok(first, "needs the first build");
  const res = await createSnapshot({ spec: { ...SPEC, skipCache: true } });
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  assert.notEqual(res.json.snapshotId, first.snapshotId);
  assert.ok((await phases(res.json.buildId)).includes("snapshot"));
  const hit = await createSnapshot({ spec: SPEC });
  assert.equal(hit.json.snapshotId, res.json.snapshotId);
});

test("a two-layer chain: changing the outer layer reuses the inner one", async () => {
  const inner = { discriminator: `inner-${TAG}`, ...runCommands("freestyle-run-command", "echo inner > /root/inner.txt") };
  const outer = (word) => ({
    snapshot: inner,
    additionalFiles: { "/root/outer.txt": { content: word } },
  });
  const a = await createSnapshot({ spec: outer("one") });
  assert.equal(a.status, 200, show("POST", "/v1/vms/snapshots", a));
  const pa = await ok("GET", `/v1/vms/builds/${a.json.buildId}/phases`);
  const names = pa.phases.map((x) => x.name);
  assert.ok(names.includes("layer 1/2: boot") && names.includes("layer 2/2: snapshot"), names.join(", "));
  const b = await createSnapshot({ spec: outer("two") });
  assert.equal(b.status, 200, show("POST", "/v1/vms/snapshots", b));
  assert.notEqual(b.json.snapshotId, a.json.snapshotId);
  const pb = await ok("GET", `/v1/vms/builds/${b.json.buildId}/phases`);
  assert.equal(pb.phases[0].name, "layer 1/2: (cached)");
  const innerSnap = pa.phases.find((x) => x.name === "layer 1/2: snapshot");
  assert.ok(innerSnap);
  const id = await vmFrom(b.json.snapshotId);
  assert.equal(await catFile(id, "/root/outer.txt"), "two");
  assert.equal((await catFile(id, "/root/inner.txt")).trim(), "inner");
  // The SDK's form of the same chain: the inner layer first, then a layer
  // on its snapshotId; and a second, empty layer on a snapshotId is it.
  const innerOnly = await createSnapshot({ template: inner });
  const ensured = await createSnapshot({ template: { snapshotId: innerOnly.json.snapshotId } });
  assert.equal(ensured.json?.snapshotId, innerOnly.json.snapshotId, show("POST", "/v1/vms/snapshots", ensured));
  // The same layer on two snapshots is two layers; written with its base
  // inside ({snapshot: {snapshotId}}) or beside it, it is one.
  const files = { "/root/on-top.txt": { content: "top" } };
  const onA = await createSnapshot({ spec: { snapshot: { snapshotId: a.json.snapshotId }, additionalFiles: files } });
  const onB = await createSnapshot({ spec: { snapshot: { snapshotId: b.json.snapshotId }, additionalFiles: files } });
  assert.equal(onA.status, 200, show("POST", "/v1/vms/snapshots", onA));
  assert.notEqual(onA.json.snapshotId, onB.json.snapshotId);
  const beside = await createSnapshot({ template: { snapshotId: a.json.snapshotId, additionalFiles: files } });
  assert.equal(beside.json?.snapshotId, onA.json.snapshotId, show("POST", "/v1/vms/snapshots", beside));
});

test("POST /v1/vms with a template builds it, and the VM names its build", async () => {
  const template = {
    discriminator: `vm-${TAG}`,
    workdir: "/srv",
    ...runCommands("freestyle-run-command", "mkdir -p /srv && echo from-template > /srv/t.txt"),
  };
  const c = await api("POST", "/v1/vms", { body: { template, additionalFiles: { "/root/own.txt": { content: "own" } } }, ...T });
  assert.equal(c.status, 200, show("POST", "/v1/vms", c));
  vms.track(c.json.id);
  assert.ok(Array.isArray(c.json.domains));
  assert.match(c.json.snapshotId, /^sc-/);
  snapshots.add(c.json.snapshotId);
  const info = await ok("GET", `/v1/vms/${c.json.id}`);
  assert.equal(info.snapshotId, c.json.snapshotId);
  assert.match(info.buildId, /^bd-/);
  assert.equal(info.workdir, "/srv", "the template's workdir");
  const build = await ok("GET", `/v1/vms/${c.json.id}/build`);
  assert.equal(build.buildId, info.buildId);
  assert.equal(build.state, "succeeded");
  const r = await exec(c.json.id, "cat t.txt /root/own.txt");
  assert.equal(r.stdout, "from-template\nown");
  // The second VM from the same template: the cached snapshot.
  const d = await ok("POST", "/v1/vms", { body: { template }, ...T });
  vms.track(d.id);
  assert.equal(d.snapshotId, c.json.snapshotId);
  // A VM made without a template has no build, nor does one whose
  // template only says what the VM gets (nothing to build).
  const plain = await ok("POST", "/v1/vms", { body: {}, ...T });
  vms.track(plain.id);
  expectError(await api("GET", `/v1/vms/${plain.id}/build`), 404, "BUILD_NOT_FOUND_FOR_VM");
  const bare = await ok("POST", "/v1/vms", { body: { template: { workdir: "/tmp", git: { config: {} } } }, ...T });
  vms.track(bare.id);
  expectError(await api("GET", `/v1/vms/${bare.id}/build`), 404, "BUILD_NOT_FOUND_FOR_VM");
  assert.equal((await ok("GET", `/v1/vms/${bare.id}`)).workdir, "/tmp");
});

test("a failing command fails the build: its record, its snapshot and the answer name it", async () => {
  const spec = {
    discriminator: `fail-${TAG}`,
    ...runCommands("freestyle-run-command", "echo fine", "echo about-to-fail-$((6*7)); exit 3"),
  };
  const res = await createSnapshot({ spec });
  assert.equal(res.status, 500, show("POST", "/v1/vms/snapshots", res));
  assert.equal(res.json.code, "SNAPSHOT_SETUP_FAILED");
  assert.equal(res.json.error, "SNAPSHOT_SETUP_FAILED");
  assert.match(res.json.message, /freestyle-run-command-2/);
  assert.match(res.json.message, /about-to-fail-42/);
  const build = await ok("GET", `/v1/vms/builds/${res.json.buildId}`);
  assert.equal(build.state, "failed");
  assert.match(build.failureReason, /freestyle-run-command-2[\s\S]*about-to-fail-42/);
  assert.ok(build.finishedAt);
  // GET /v1/vms/builds (Sprout's extension) lists it, newest first, with its reason.
  const listed = await ok("GET", "/v1/vms/builds");
  const mine = listed.builds.find((b) => b.buildId === res.json.buildId);
  assert.equal(mine?.state, "failed", JSON.stringify(listed).slice(0, 500));
  assert.match(mine.failureReason, /about-to-fail-42/);
  const starts = listed.builds.map((b) => Date.parse(b.startedAt));
  assert.deepEqual(starts, [...starts].sort((a, b) => b - a), "newest first");
  assert.equal((await ok("GET", "/v1/vms/builds?limit=1")).builds.length, 1);
  const plain = await ok("GET", "/v1/vms/snapshots");
  const all = await ok("GET", "/v1/vms/snapshots?includeFailed=true");
  const failed = all.snapshots.filter((s) => s.buildId === res.json.buildId);
  assert.equal(failed.length, 1);
  assert.equal(failed[0].state, "failed");
  assert.equal(failed[0].failed, true);
  assert.ok(!plain.snapshots.some((s) => s.buildId === res.json.buildId), "failed ones only when asked for");
  assert.ok(all.failedCount >= 1);
  expectError(await api("POST", "/v1/vms", { body: { snapshotId: failed[0].snapshotId } }), 404, "SNAPSHOT_NOT_FOUND");
  // The same through POST /v1/vms: BUILD_FAILED, and no VM is left.
  const before = (await ok("GET", "/v1/vms")).vms.length;
  const c = await api("POST", "/v1/vms", { body: { template: spec }, ...T });
  assert.equal(c.status, 500, show("POST", "/v1/vms", c));
  assert.equal(c.json.code, "BUILD_FAILED");
  assert.match(c.json.message, /about-to-fail-42/);
  assert.equal((await ok("GET", "/v1/vms")).vms.length, before);
});

test("bad input is refused before anything is built", async () => {
  const bad = async (body, status, code) => expectError(await api("POST", "/v1/vms/snapshots", { body }), status, code);
  await bad({ spec: { snapshotId: "sc-aaaaaaaaaaaaaaaaaaaa", baseImage: { dockerfileContent: "FROM debian" } } }, 400,
    "CREATE_SNAPSHOT_BAD_REQUEST");
  await bad({ spec: {}, template: {} }, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  await bad({}, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  await bad({ spec: "x" }, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  await bad({ spec: { snapshot: { snapshotId: "sc-zzzzzzzzzzzzzzzzzzzz" } } }, 404, "SNAPSHOT_NOT_FOUND");
  await bad({ spec: { aptDeps: ["bad package;rm"] } }, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  await bad({ spec: { snapshotId: "sc-aaaaaaaaaaaaaaaaaaaa", snapshot: {} } }, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  const vm = async (body, status, code) => expectError(await api("POST", "/v1/vms", { body }), status, code);
  await vm({ spec: { snapshot: {} }, template: {} }, 400, "CREATE_VM_BAD_REQUEST");
  await vm({ template: { memSizeGb: "big" } }, 400, "CREATE_VM_BAD_REQUEST");
  await vm({ template: { memSizeGb: 100000 } }, 400, "CREATE_VM_BAD_REQUEST");
  await bad({ spec: { vcpuCount: 100000 } }, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  await vm({ template: { snapshotId: "sc-zzzzzzzzzzzzzzzzzzzz" } }, 404, "SNAPSHOT_NOT_FOUND");
  expectError(await api("GET", "/v1/vms/builds/bd-zzzzzzzzzzzzzzzzzzzz"), 404, "BUILD_NOT_FOUND");
  expectError(await api("GET", "/v1/vms/builds/bd-zzzzzzzzzzzzzzzzzzzz/phases"), 404, "BUILD_NOT_FOUND");
  for (const q of ["limit=0", "limit=1001", "limit=-1", "limit=x"])
    expectError(await api("GET", `/v1/vms/builds?${q}`), 400, "INVALID_PARAMETERS");
});

test("another account sees neither the builds nor the snapshots, nor builds on them", async () => {
  assert.ok(first, "needs the first build");
  const other = (await newAccount(`builds-${TAG}`)).key;
  expectError(await api("GET", `/v1/vms/builds/${first.buildId}`, { key: other }), 404, "BUILD_NOT_FOUND");
  expectError(await api("GET", `/v1/vms/builds/${first.buildId}/phases`, { key: other }), 404, "BUILD_NOT_FOUND");
  assert.deepEqual((await ok("GET", "/v1/vms/builds", { key: other })).builds, []);
  expectError(
    await api("POST", "/v1/vms/snapshots", { body: { template: { snapshotId: first.snapshotId, aptDeps: [] } }, key: other }),
    404, "SNAPSHOT_NOT_FOUND");
  // Its own identical spec is its own build, not the first account's cache.
  const mine = await api("POST", "/v1/vms/snapshots", { body: { spec: SPEC }, key: other, ...T });
  assert.equal(mine.status, 200, show("POST", "/v1/vms/snapshots", mine));
  assert.notEqual(mine.json.snapshotId, first.snapshotId);
  await api("DELETE", `/v1/vms/snapshots/${mine.json.snapshotId}`, { key: other });
});

test("identical builds asked for at once are built once", async () => {
  const spec = { discriminator: `twice-${TAG}`, ...runCommands("freestyle-run-command", "sleep 2; echo x > /root/x") };
  const [a, b] = await Promise.all([createSnapshot({ spec }), createSnapshot({ spec })]);
  assert.equal(a.status, 200, show("POST", "/v1/vms/snapshots", a));
  assert.equal(b.status, 200, show("POST", "/v1/vms/snapshots", b));
  assert.equal(a.json.snapshotId, b.json.snapshotId);
  const built = [await phases(a.json.buildId), await phases(b.json.buildId)].filter((p) => p.includes("boot"));
  assert.equal(built.length, 1, "one of the two waited for the other");
});

test("the background form answers 202, then the outcome and the phases as logs", async () => {
  const spec = { discriminator: `bg-${TAG}`, ...runCommands("freestyle-run-command", "sleep 3") };
  const res = await createSnapshot({ spec }, { headers: { "x-freestyle-background-after-secs": "0" } });
  assert.equal(res.status, 202, show("POST", "/v1/vms/snapshots", res));
  const rid = res.json.requestId;
  assert.match(rid, /^bd-/);
  let done;
  for (let i = 0; i < 300 && !done; i++) {
    const r = await api("GET", `/auth/v1/background-requests/${rid}`);
    if (r.status === 200) done = r.json;
    else {
      assert.equal(r.status, 202, show("GET", "background request", r));
      await new Promise((ok) => setTimeout(ok, 1000));
    }
  }
  assert.ok(done?.snapshotId, "the build ended");
  snapshots.add(done.snapshotId);
  const logs = await ok("GET", `/observability/v1/logs?requestId=${rid}`);
  assert.ok(logs.logs.some((l) => l.message === "snapshot"), JSON.stringify(logs.logs));
});

test("sprout snapshot create shows each phase, then the snapshot; build get and phases read the record", async () => {
  const env = { SPROUT_URL: BASE, SPROUT_API_KEY: ADMIN_KEY };
  const spec = JSON.stringify({ discriminator: `cli-${TAG}`, ...runCommands("freestyle-run-command", "echo cli > /root/cli.txt") });
  const r = await runCli(["snapshot", "create", "--spec", "-"], { env, input: spec });
  assert.equal(r.code, 0, r.stderr);
  const sid = r.out.trim().split("\n").pop();
  assert.match(sid, /^sc-[a-z0-9]{20}$/);
  snapshots.add(sid);
  assert.match(r.stderr, /^build bd-/m);
  for (const phase of ["boot", "setup: services", "snapshot"]) assert.match(r.stderr, new RegExp(`\\] ${phase}`), r.stderr);
  const build = r.stderr.match(/^build (bd-[a-z0-9]+)/m)[1];
  const g = await runCli(["build", "get", build], { env });
  assert.equal(g.code, 0, g.stderr);
  assert.match(g.out, /state\s+succeeded/);
  assert.match(g.out, new RegExp(`snapshotId\\s+${sid}`));
  const l = await runCli(["build", "list"], { env });
  assert.equal(l.code, 0, l.stderr);
  assert.match(l.out, /^BUILD\s+STATE\s+STARTED/);
  assert.match(l.out, new RegExp(`^${build}\\s+succeeded\\s.*${sid}$`, "m"));
  const p = await runCli(["build", "phases", build, "--json"], { env });
  assert.deepEqual(JSON.parse(p.out).phases.map((x) => x.name), ["boot", "setup: additionalFiles", "setup: services", "snapshot"]);
  // A failing step: exit 1, the step and its output on stderr.
  const bad = JSON.stringify({ discriminator: `clibad-${TAG}`, ...runCommands("freestyle-run-command", "echo cli-step-broke; exit 9") });
  const f = await runCli(["snapshot", "create", "--spec", "-"], { env, input: bad });
  assert.equal(f.code, 1);
  assert.match(f.stderr, /SNAPSHOT_SETUP_FAILED[\s\S]*cli-step-broke/);
  const nf = await runCli(["build", "get", "bd-zzzzzzzzzzzzzzzzzzzz"], { env });
  assert.equal(nf.code, 1);
  assert.match(nf.stderr, /BUILD_NOT_FOUND/);
});

test("a baseImage Dockerfile on debian:bookworm-slim: RUN steps (heredocs too), ENV and WORKDIR", async () => {
  const dockerfile = [
    "FROM debian:bookworm-slim",
    "ENV GREETING=\"hello there\"",
    "WORKDIR /opt/app",
    "RUN echo \"$GREETING\" > greeting.txt && pwd > where.txt",
    "RUN <<'FREESTYLE_EOF'\necho heredoc-ran > /opt/app/heredoc.txt\nFREESTYLE_EOF",
    `RUN ["sh", "-c", "echo exec-${TAG} > /opt/app/exec.txt"]`,
  ].join("\n");
  const res = await createSnapshot({ spec: { baseImage: { dockerfileContent: dockerfile } } });
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  const names = await phases(res.json.buildId);
  assert.ok(names.includes("boot") && names.some((n) => n.startsWith("base image: RUN echo")), names.join(", "));
  const id = await vmFrom(res.json.snapshotId);
  const r = await exec(id, "cat /opt/app/greeting.txt /opt/app/where.txt /opt/app/heredoc.txt /opt/app/exec.txt; grep GREETING /etc/environment");
  assert.equal(r.stdout, `hello there\n/opt/app\nheredoc-ran\nexec-${TAG}\nGREETING='hello there'\n`);
  const again = await createSnapshot({ spec: { baseImage: { dockerfileContent: dockerfile } } });
  assert.equal(again.json.snapshotId, res.json.snapshotId, "the same Dockerfile is a cache hit");
  // A failing RUN fails the build, naming the step and its output.
  const bad = await createSnapshot({ spec: { baseImage: { dockerfileContent: "FROM debian:bookworm\nRUN echo df-broke-here; exit 5" } } });
  assert.equal(bad.status, 500, show("POST", "/v1/vms/snapshots", bad));
  assert.match(bad.json.message, /Dockerfile step 1 \(RUN echo df-broke-here; exit 5\) failed with exit code 5/);
  assert.match(bad.json.message, /df-broke-here/);
  // What cannot be built is refused up front, naming why.
  const refuse = async (content, status, re) => {
    const r2 = await api("POST", "/v1/vms/snapshots", { body: { spec: { baseImage: { dockerfileContent: content } } } });
    expectError(r2, status, "CREATE_SNAPSHOT_BAD_REQUEST");
    assert.match(r2.json.message, re);
  };
  // A registry that cannot answer (port 1 on loopback): the image is named.
  await refuse("FROM 127.0.0.1:1/nothing/here:3.19\nRUN true", 400, /127\.0\.0\.1:1\/nothing\/here:3\.19/);
  await refuse("FROM debian:bookworm AS a\nFROM debian:bookworm AS a", 400, /taken/);
  await refuse("FROM debian:bookworm\nCOPY . /app", 400, /COPY/);
  await refuse("FROM debian:bookworm\n" + "#".repeat(70 * 1024), 413, /over/);
});

test("a layer's memSizeGb, vcpuCount and rootfsSizeGb are what VMs from it get", async () => {
  const res = await createSnapshot({ spec: { discriminator: `size-${TAG}`, memSizeGb: 2, vcpuCount: 2, rootfsSizeGb: 12 } });
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  const id = await vmFrom(res.json.snapshotId);
  const r = await exec(id, "nproc; awk '/MemTotal/ {print int($2 / 1024 / 1024 + 0.5)}' /proc/meminfo; df -BG --output=size / | tail -1");
  assert.deepEqual(r.stdout.split(/\s+/).filter(Boolean), ["2", "2", "12G"]);
  const info = await ok("GET", `/v1/vms/${id}`);
  assert.equal(info.memSizeMb, 2048);
  assert.equal(info.vcpuCount, 2);
});

test("a client that asks for builds faster than they end is held to 4 at a time (429), and they all end", async () => {
  const spec = { discriminator: `flood-${TAG}`, ...runCommands("freestyle-run-command", "sleep 8") };
  const headers = { "x-freestyle-background-after-secs": "0" };
  const answers = [];
  for (let i = 0; i < 6; i++) answers.push(await api("POST", "/v1/vms/snapshots", { body: { spec }, headers }));
  const started = answers.filter((r) => r.status === 202);
  const refused = answers.filter((r) => r.status === 429);
  assert.equal(started.length, 4, answers.map((r) => r.status).join(" "));
  assert.equal(refused.length, 2);
  for (const r of refused) assert.equal(r.json.code, "TOO_MANY_REQUESTS");
  const ids = new Set();
  for (const s of started) {
    let done;
    for (let i = 0; i < 300 && !done; i++) {
      const r = await api("GET", `/auth/v1/background-requests/${s.json.requestId}`);
      if (r.status === 202) await new Promise((ok) => setTimeout(ok, 1000));
      else done = r;
    }
    assert.equal(done?.status, 200, show("GET", "background request", done ?? {}));
    ids.add(done.json.snapshotId);
  }
  assert.equal(ids.size, 1, "the four identical builds made one snapshot");
  for (const id of ids) snapshots.add(id);
  // Room again once they ended.
  const after = await createSnapshot({ spec });
  assert.equal(after.status, 200, show("POST", "/v1/vms/snapshots", after));
});

test("a build the account has no room for answers as that limit does", async () => {
  const limited = await ok("POST", "/admin/v1/keys", { body: { account: `nobuild-${TAG}`, limits: { maxVms: 1 } } });
  const key = limited.key;
  const c = await api("POST", "/v1/vms", { body: {}, key, ...T });
  assert.equal(c.status, 200, show("POST", "/v1/vms", c));
  vms.track(c.json.id, key);
  const r = await api("POST", "/v1/vms/snapshots", { body: { spec: { discriminator: `lim-${TAG}` } }, key, ...T });
  expectError(r, 429, "VM_LIMIT_REACHED");
  assert.match(r.json.buildId, /^bd-/);
  const build = await api("GET", `/v1/vms/builds/${r.json.buildId}`, { key });
  assert.equal(build.json.state, "failed");
  const v = await api("POST", "/v1/vms", { body: { template: { discriminator: `lim-${TAG}` } }, key, ...T });
  expectError(v, 429, "VM_LIMIT_REACHED");
});
