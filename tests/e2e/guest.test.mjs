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
let gitDaemon;
after(async () => {
  gitDaemon?.kill();
  await vms.cleanup();
});

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

/** Serves a fresh git repository from the host over git://; the guest
 * reaches the host as 10.0.2.2 (QEMU user networking). */
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
  const port = await new Promise((res) => { const s = net.createServer(); s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => res(p)); }); });
  gitDaemon = spawn("git", ["daemon", "--reuseaddr", `--base-path=${dir}`, "--export-all", `--port=${port}`, "--listen=127.0.0.1", dir],
    { stdio: "ignore" });
  await sleep(500);
  return { url: `git://10.0.2.2:${port}/repo.git`, first };
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
