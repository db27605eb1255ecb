// End-to-end tests of what runs inside the VM: the systemd services API,
// Linux users through X-Freestyle-Vm-Linux-User-Id, and create-time setup
// (groups, users, additionalFiles, git from a repository served by the host,
// aptDeps from the Debian mirror, services). after() deletes the VMs.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { VmTracker, api, exec, expectError, ok, sleep } from "./lib.mjs";

const vms = new VmTracker();
const snapshots = new Set();
const gitDaemons = [];
// Where the host's test servers listen, and the address guests reach them at.
const SERVE_ADDR = process.env.SPROUT_TEST_HOST_ADDR || "127.0.0.1";
const GUEST_SEES = process.env.SPROUT_TEST_HOST_ADDR || "10.0.2.2";
after(async () => {
  for (const d of gitDaemons) d.kill();
  await vms.cleanup();
  for (const id of snapshots) await api("DELETE", `/v1/vms/snapshots/${id}`).catch(() => {});
});

/** Polls fn() (an async function returning truthy when done) every 500 ms
 * for up to ms; returns its last value. */
async function poll(fn, ms = 60_000) {
  const end = Date.now() + ms;
  let v;
  while (!(v = await fn()) && Date.now() < end) await sleep(500);
  return v;
}

const svc = (vm, p = "") => `/v1/vms/${vm}/systemd${p}`;
let A;

test("systemd: create, list, status, logs, batch stop/start, delete", async () => {
  A = (await vms.create({})).id;
  const created = await ok("POST", svc(A, "/services"), {
    body: { name: "ticker", mode: "service", exec: ["echo booting", "while true; do echo tick $WORD; sleep 0.5; done"],
            env: { WORD: "hello world" }, restartPolicy: { policy: "always", restartSec: 1 } },
  });
  assert.equal(created.success, true, JSON.stringify(created));
  assert.equal(created.serviceName, "ticker.service");
  expectError(await api("POST", svc(A, "/services"), { body: { name: "ticker", mode: "service", exec: ["true"] } }),
    409, "SERVICE_ALREADY_EXISTS");

  const list = await ok("GET", svc(A, "/services"));
  assert.deepEqual(list.services.map((s) => s.name), ["ticker"]);

  const st = await ok("GET", svc(A, "/services/ticker/status"));
  assert.equal(st.activeState, "active");
  assert.equal(st.subState, "running");
  assert.equal(st.loadState, "loaded");
  assert.equal(typeof st.description, "string");

  await sleep(1500);
  const logs = await ok("GET", svc(A, "/services/ticker/logs?lines=5"));
  assert.ok(logs.logs.length > 0 && logs.logs.length <= 5, JSON.stringify(logs));
  assert.ok(logs.logs.some((l) => l.message === "tick hello world"), JSON.stringify(logs));
  assert.ok(!Number.isNaN(Date.parse(logs.logs[0].timestamp)));

  const stop = await ok("POST", svc(A, "/stop"), { body: { services: [{ id: "ticker" }, { id: "missing" }] } });
  assert.deepEqual(stop.results.map((r) => [r.serviceId, r.success]), [["ticker", true], ["missing", false]]);
  assert.equal((await ok("GET", svc(A, "/services/ticker/status"))).activeState, "inactive");
  await ok("POST", svc(A, "/start"), { body: { services: [{ id: "ticker" }] } });
  assert.equal((await ok("GET", svc(A, "/services/ticker/status"))).activeState, "active");
  await ok("POST", svc(A, "/restart"), { body: { services: [{ id: "ticker.service" }] } });

  await ok("DELETE", svc(A, "/services/ticker"));
  expectError(await api("DELETE", svc(A, "/services/ticker")), 404, "SERVICE_NOT_FOUND");
  expectError(await api("GET", svc(A, "/services/ticker/status")), 404, "SERVICE_NOT_FOUND");
  assert.equal((await exec(A, "pgrep -f 'tick $WORD' || echo none")).stdout.trim(), "none");
});

test("systemd: names and specs are validated with the SDK's codes", async () => {
  const bad = [
    [{ name: "", mode: "service", exec: ["true"] }, "SERVICE_NAME_EMPTY"],
    [{ name: "a b", mode: "service", exec: ["true"] }, "SERVICE_NAME_INVALID_CHARS"],
    [{ name: "x".repeat(80), mode: "service", exec: ["true"] }, "SERVICE_NAME_TOO_LONG"],
    [{ name: "ok", mode: "service", exec: [] }, "EXEC_EMPTY"],
    [{ name: "ok", mode: "daemon", exec: ["true"] }, "INVALID_PARAMETERS"],
  ];
  for (const [body, code] of bad) expectError(await api("POST", svc(A, "/services"), { body }), 400, code, JSON.stringify(body));
  // A oneshot with commands in order, as another user, in a workdir.
  await ok("POST", svc(A, "/services"), {
    body: { name: "once", mode: "oneshot", exec: ["pwd > /tmp/once", "whoami >> /tmp/once"], user: "nobody",
            workdir: "/tmp", enable: false },
  });
  let out;
  for (let i = 0; i < 20 && out !== "/tmp\nnobody\n"; i++) {
    await sleep(300);
    out = (await exec(A, "cat /tmp/once 2>/dev/null")).stdout;
  }
  assert.equal(out, "/tmp\nnobody\n");
});

test("linux user header: exec and files act as that user; unknown user is USER_NOT_FOUND", async () => {
  await exec(A, "useradd -m bob");
  const hdr = { "X-Freestyle-Vm-Linux-User-Id": "bob" };
  const r = await ok("POST", `/v1/vms/${A}/exec-await`, { body: { command: "whoami; echo $HOME" }, headers: hdr });
  assert.equal(r.stdout, "bob\n/home/bob\n");
  await ok("PUT", `/v1/vms/${A}/files/${encodeURIComponent("/home/bob/note.txt")}`, { body: { content: "x" }, headers: hdr });
  assert.equal((await exec(A, "stat -c %U /home/bob/note.txt")).stdout, "bob\n");
  expectError(await api("PUT", `/v1/vms/${A}/files/${encodeURIComponent("/root/nope")}`, { body: { content: "x" }, headers: hdr }),
    403, "FORBIDDEN");
  expectError(await api("POST", `/v1/vms/${A}/exec-await`, { body: { command: "true" },
    headers: { "X-Freestyle-Vm-Linux-User-Id": "ghost" } }), 404, "USER_NOT_FOUND");
});

/** Serves a fresh git repository from the host over git://, on the address
 * tests/run.sh lets guests reach (a host address sproutd was told to allow;
 * with --unconfined, the host's loopback through QEMU's 10.0.2.2). */
async function serveRepo() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "sprout-git-"));
  const work = path.join(dir, "work");
  const git = (...a) => execFileSync("git", a, { cwd: work, env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t",
    GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" } }).toString().trim();
  execFileSync("git", ["init", "-q", "-b", "main", work]);
  writeFileSync(path.join(work, "README"), "first\n");
  git("add", "README");
  git("commit", "-q", "-m", "one");
  const first = git("rev-parse", "HEAD");
  writeFileSync(path.join(work, "README"), "second\n");
  git("commit", "-q", "-am", "two");
  execFileSync("git", ["clone", "-q", "--bare", work, path.join(dir, "repo.git")]);
  const port = await new Promise((res) => { const s = net.createServer(); s.listen(0, SERVE_ADDR, () => { const p = s.address().port; s.close(() => res(p)); }); });
  gitDaemons.push(spawn("git", ["daemon", "--reuseaddr", `--base-path=${dir}`, "--export-all", `--port=${port}`,
    `--listen=${SERVE_ADDR}`, dir], { stdio: "ignore" }));
  await sleep(500);
  return { url: `git://${GUEST_SEES}:${port}/repo.git`, first, port };
}

/** A TCP proxy on the host to the repository's port that holds every
 * connection until open() is called. */
async function gatedProxy(port) {
  let open;
  const opened = new Promise((r) => (open = r));
  const state = { connections: 0 };
  const server = net.createServer((c) => {
    state.connections++;
    c.pause();
    c.on("error", () => {});
    opened.then(() => {
      const up = net.connect(port, SERVE_ADDR);
      up.on("error", () => c.destroy());
      c.pipe(up);
      up.pipe(c);
    });
  });
  await new Promise((r) => server.listen(0, SERVE_ADDR, r));
  return { port: server.address().port, open, close: () => server.close(), state };
}

test("create-time setup: groups, users, files, git repos at a rev, and an enabled service", async () => {
  const { url, first } = await serveRepo();
  const { id } = await vms.create({
    groups: [{ name: "devs", gid: 2100 }],
    users: [{ name: "carol", uid: 1600, groups: ["devs"], gecos: "Carol" }],
    additionalFiles: {
      "/opt/app/run.sh": { content: "#!/bin/sh\necho served-by-$(whoami) > /tmp/app.out\nexec sleep 1000\n", executable: true },
      "/opt/app/data.bin": { content: Buffer.from([0, 1, 2, 255]).toString("base64"), encoding: "base64" },
    },
    git: { config: { user: { name: "Carol C", email: "carol@example.org" } },
           repos: [{ repo: url, path: "/srv/repo", rev: first }, { repo: url, path: "/srv/head" }] },
    systemd: { services: [{ name: "app", mode: "service", exec: ["/opt/app/run.sh"], user: "carol" }] },
  });
  const r = await exec(id, "id -nG carol; cat /srv/repo/README /srv/head/README; git config --system user.email;" +
    " test -x /opt/app/run.sh && echo exe; od -An -tu1 /opt/app/data.bin; systemctl is-active app; sleep 0.5; cat /tmp/app.out");
  assert.equal(r.stdout, "carol devs\nfirst\nsecond\ncarol@example.org\nexe\n   0   1   2 255\nactive\nserved-by-carol\n",
    JSON.stringify(r));
});

test("create-time setup: a failing service gives VM_SETUP_FAILED with its logs; bad specs are 400", async () => {
  const res = await api("POST", "/v1/vms", { body: { systemd: { services: [{ name: "bad", mode: "service", exec: ["echo dying; exit 3"] }] } } });
  expectError(res, 500, "VM_SETUP_FAILED");
  const unit = res.json.diagnostics?.failedUnits?.[0];
  assert.equal(unit?.name, "bad", JSON.stringify(res.json));
  assert.match(unit.logs, /dying/);
  for (const body of [{ users: [{ name: "Bad User" }] }, { groups: [{ name: "" }] }, { aptDeps: ["bad;rm -rf /"] },
                      { git: { config: {}, repos: [{ repo: "x", path: "relative" }] } }]) {
    expectError(await api("POST", "/v1/vms", { body }), 400, "CREATE_VM_BAD_REQUEST", JSON.stringify(body));
  }
});

test("create-time setup: aptDeps are installed from the Debian mirror through the guest's network", async () => {
  const { id } = await vms.create({ aptDeps: ["jq"] });
  assert.match((await exec(id, "jq --version")).stdout, /^jq-/);
});

test("systemd: deleteAfterSuccess removes a oneshot after success and keeps a failed one", async () => {
  const vm = A ?? (await vms.create({})).id;
  expectError(await api("POST", svc(vm, "/services"), { body: { name: "x", mode: "oneshot", exec: ["true"], deleteAfterSuccess: "yes" } }),
    400, "INVALID_PARAMETERS");
  // Enabled (the default) and as another user: the removal must undo the
  // enable link too, and run as root whatever User= says.
  await ok("POST", svc(vm, "/services"), {
    body: { name: "tidy-ok", mode: "oneshot", exec: ["echo ran > /tmp/tidy-ok.out"], user: "nobody", deleteAfterSuccess: true },
  });
  await ok("POST", svc(vm, "/services"), {
    body: { name: "tidy-bad", mode: "oneshot", exec: ["echo about to fail; exit 4"], deleteAfterSuccess: true },
  });
  // On a long-running service the flag does not apply: it keeps running.
  await ok("POST", svc(vm, "/services"), { body: { name: "tidy-svc", mode: "service", exec: ["exec sleep 1000"], deleteAfterSuccess: true } });
  const names = async () => (await ok("GET", svc(vm, "/services"))).services.map((s) => s.name);
  const done = await poll(async () => {
    const bad = await api("GET", svc(vm, "/services/tidy-bad/status"));
    return !(await names()).includes("tidy-ok") && bad.json?.activeState === "failed";
  });
  assert.ok(done, `tidy-ok still listed or tidy-bad not failed: ${JSON.stringify(await names())}`);
  assert.equal((await exec(vm, "cat /tmp/tidy-ok.out")).stdout, "ran\n");
  expectError(await api("GET", svc(vm, "/services/tidy-ok/status")), 404, "SERVICE_NOT_FOUND");
  const left = await exec(vm, "cd /etc/systemd/system; ls -d tidy-ok.service tidy-ok.service.d multi-user.target.wants/tidy-ok.service" +
    " 2>/dev/null; systemctl show -p LoadState --value tidy-ok.service");
  assert.equal(left.stdout, "not-found\n", "tidy-ok's unit, drop-ins and enable link are gone and systemd forgot it");
  // The failed run keeps its unit, enable link, status and logs.
  const names2 = await names();
  assert.ok(names2.includes("tidy-bad") && names2.includes("tidy-svc"), JSON.stringify(names2));
  assert.equal((await exec(vm, "test -f /etc/systemd/system/tidy-bad.service && test -L " +
    "/etc/systemd/system/multi-user.target.wants/tidy-bad.service && echo kept")).stdout, "kept\n");
  const logs = await ok("GET", svc(vm, "/services/tidy-bad/logs?lines=50"));
  assert.ok(logs.logs.some((l) => l.message === "about to fail"), JSON.stringify(logs));
  assert.equal((await ok("GET", svc(vm, "/services/tidy-svc/status"))).activeState, "active");
  await ok("DELETE", svc(vm, "/services/tidy-bad"));
  await ok("DELETE", svc(vm, "/services/tidy-svc"));
});

test("create-time setup: a runCommands-style chain of deleteAfterSuccess oneshots runs once each, in order", async () => {
  // What the SDK's VmSpec.runCommands sends: each oneshot after and
  // requiring the one before, all deleteAfterSuccess. The last one fails.
  const step = (i, cmd) => ({ name: `chain-${i}`, mode: "oneshot", deleteAfterSuccess: true, exec: [cmd],
    ...(i > 1 ? { after: [`chain-${i - 1}`], requires: [`chain-${i - 1}`] } : {}) });
  const { id } = await vms.create({
    systemd: { services: [step(1, "echo 1 >> /tmp/chain; sleep 1"), step(2, "echo 2 >> /tmp/chain"),
                          step(3, "echo 3 >> /tmp/chain; sleep 1"), step(4, "echo 4 >> /tmp/chain; exit 7")] },
  });
  const st = await poll(async () => {
    const r = await api("GET", svc(id, "/services/chain-4/status"));
    return r.json?.activeState === "failed" && r.json;
  });
  assert.ok(st, "chain-4 ran and failed");
  assert.equal((await exec(id, "cat /tmp/chain")).stdout, "1\n2\n3\n4\n");
  assert.deepEqual((await ok("GET", svc(id, "/services"))).services.map((s) => s.name), ["chain-4"]);
  assert.equal((await exec(id, "ls /etc/systemd/system | grep -c '^chain-' ; true")).stdout, "1\n");
});

test("create-time setup: patchedServices drop-ins take effect, restarting a running unit", async () => {
  // A snapshot with a running service that records its environment when
  // it starts; a VM made from it patches that service's env, and the
  // exec of a unit shipped (not started) in additionalFiles.
  const vm = A ?? (await vms.create({})).id;
  await ok("POST", svc(vm, "/services"), { body: { name: "probe", mode: "service",
    exec: ["echo v=$PATCHED > /tmp/probe.out; exec sleep 1000"] } });
  assert.equal((await exec(vm, "sleep 0.5; cat /tmp/probe.out")).stdout, "v=\n");
  const { snapshotId } = await ok("POST", `/v1/vms/${vm}/snapshot`, { body: {} });
  snapshots.add(snapshotId);
  await ok("DELETE", svc(vm, "/services/probe"));
  const { id } = await vms.create({
    snapshotId,
    additionalFiles: { "/etc/systemd/system/probe2.service": {
      content: "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo original > /tmp/probe2.out'\n" } },
    systemd: { patchedServices: [{ name: "probe", env: { PATCHED: "yes" } },
                                 { name: "probe2", exec: ["echo patched-$(whoami) > /tmp/probe2.out"] }] },
  });
  const r = await exec(id, "cat /tmp/probe.out; systemctl show -p DropInPaths --value probe.service;" +
    " systemctl start probe2.service; cat /tmp/probe2.out");
  assert.equal(r.stdout, "v=yes\n/etc/systemd/system/probe.service.d/50-sprout.conf\npatched-root\n", JSON.stringify(r));
  expectError(await api("POST", "/v1/vms", { body: { systemd: { patchedServices: [{ name: "bad name", env: {} }] } } }),
    400, "SERVICE_NAME_INVALID_CHARS");
});

test("waitForReadySignal: false answers at once; requests wait for the setup and see it", async () => {
  // The setup clones a repository through a proxy that holds the
  // connection until the create has answered: a create that waited for
  // its setup would only answer when the fallback below opens the gate.
  const { port } = await serveRepo();
  const gate = await gatedProxy(port);
  let fellBack = false;
  const fallback = setTimeout(() => {
    fellBack = true;
    gate.open();
  }, 90_000);
  let id;
  try {
    ({ id } = await vms.create({
      waitForReadySignal: false,
      users: [{ name: "dave" }],
      additionalFiles: { "/opt/bg/hello.txt": { content: "made by setup\n" } },
      git: { config: {}, repos: [{ repo: `git://${GUEST_SEES}:${gate.port}/repo.git`, path: "/srv/bg" }] },
      systemd: { services: [{ name: "bg-web", mode: "service", exec: ["exec sleep 1000"] }] },
    }));
  } finally {
    clearTimeout(fallback);
    gate.open();
  }
  assert.equal(fellBack, false, "the create answered only once its setup could go on");
  const info = await ok("GET", `/v1/vms/${id}`);
  assert.ok(["starting", "running"].includes(info.state), `state right after create: ${info.state}`);
  // The first request waits for the restore and the whole setup.
  const r = await exec(id, "cat /opt/bg/hello.txt; id -un dave; systemctl is-active bg-web; cat /srv/bg/README");
  gate.close();
  assert.equal(r.stdout, "made by setup\ndave\nactive\nsecond\n", JSON.stringify(r));
  assert.ok(gate.state.connections >= 1, "the setup went through the gate");
  const after = await ok("GET", `/v1/vms/${id}`);
  assert.equal(after.state, "running");
  assert.equal(after.error, undefined);
  assert.deepEqual((await ok("GET", svc(id, "/services"))).services.map((s) => s.name), ["bg-web"]);
});

test("waitForReadySignal: false with a failing setup keeps the VM, stopped, with the error", async () => {
  // A malformed setup is still refused before any VM exists.
  expectError(await api("POST", "/v1/vms", { body: { waitForReadySignal: false, users: [{ name: "Bad User" }] } }),
    400, "CREATE_VM_BAD_REQUEST");
  const { id } = await vms.create({
    waitForReadySignal: false,
    systemd: { services: [{ name: "bad", mode: "service", exec: ["echo dying; exit 3"] }] },
  });
  // Requests wait for the outcome, then get a clear error.
  expectError(await api("POST", `/v1/vms/${id}/exec-await`, { body: { command: "true" } }), 409, "VM_SETUP_FAILED");
  const info = await ok("GET", `/v1/vms/${id}`);
  assert.equal(info.state, "stopped", JSON.stringify(info));
  assert.equal(info.error?.code, "VM_SETUP_FAILED", JSON.stringify(info));
  const unit = info.error.diagnostics?.failedUnits?.[0];
  assert.equal(unit?.name, "bad", JSON.stringify(info.error));
  assert.match(unit.logs, /dying/);
  expectError(await api("GET", svc(id, "/services")), 409, "VM_SETUP_FAILED");
  const listed = (await ok("GET", "/v1/vms")).vms.find((v) => v.id === id);
  assert.equal(listed?.state, "stopped");
  await ok("DELETE", `/v1/vms/${id}`);
  vms.forget(id);
  expectError(await api("GET", `/v1/vms/${id}`), 404, "VM_NOT_FOUND");
});

test("waitForReadySignal: false: deleting a VM whose setup still runs cuts the setup short", async () => {
  // A notify service that never signals keeps the setup waiting for its
  // start job until timeoutSec (10 min). One VM is deleted at once (while
  // it restores), the other once its setup has had time to begin; without
  // the cut each delete would wait for the setup's end.
  const spec = {
    waitForReadySignal: false,
    readySignalTimeoutSeconds: 900,
    systemd: { services: [{ name: "never-ready", mode: "service", readySignal: true, timeoutSec: 600, exec: ["sleep 3600"] }] },
  };
  const a = (await vms.create(spec)).id;
  const b = (await vms.create(spec)).id;
  for (const [id, wait] of [[a, 0], [b, 5000]]) {
    await sleep(wait);
    assert.equal((await ok("GET", `/v1/vms/${id}`)).state, "starting");
    const res = await api("DELETE", `/v1/vms/${id}`);
    assert.equal(res.status, 200, res.text);
    assert.ok(res.ms < 60_000, `delete of a VM in setup took ${res.ms} ms`);
    vms.forget(id);
    expectError(await api("GET", `/v1/vms/${id}`), 404, "VM_NOT_FOUND");
  }
});
