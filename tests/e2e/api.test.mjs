// End-to-end tests of the VM lifecycle, exec, listing, bad input, auth and
// tenancy over plain HTTP. One VM serves every test in this file; the last
// test deletes it and the after() hook deletes it if anything went wrong.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import http from "node:http";
import { after, test } from "node:test";
import {
  ADMIN_KEY,
  BASE,
  CREATE_TIMEOUT,
  VmTracker,
  api,
  enc,
  exec,
  expectError,
  filesPath,
  newAccount,
  ok,
  rand,
  show,
} from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());

const NAME = `e2e-api-${rand(3)}`;
const UNKNOWN = "zzzzzzzzzzzzzzzzzzzz"; // well-formed id no VM has
let vmId;

function needVm() {
  assert.ok(vmId, "no VM: the create test failed");
  return vmId;
}

test("healthz answers 200 without a key", async () => {
  const res = await fetch(`${BASE}/healthz`);
  assert.equal(res.status, 200);
});

test("missing or invalid API key is 401 UNAUTHORIZED", async () => {
  for (const [what, opts] of [
    ["no Authorization", { key: null }],
    ["wrong key", { key: `wrong-${rand()}` }],
    ["empty bearer", { key: "" }],
    ["Basic scheme", { key: null, headers: { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` } }],
  ]) {
    expectError(await api("GET", "/v1/vms", opts), 401, "UNAUTHORIZED", `GET /v1/vms (${what})`);
    expectError(await api("POST", "/v1/vms", { ...opts, body: {} }), 401, "UNAUTHORIZED", `POST /v1/vms (${what})`);
  }
  // Auth comes before existence: an unknown VM is still 401 without a key.
  expectError(await api("GET", `/v1/vms/${UNKNOWN}`, { key: null }), 401, "UNAUTHORIZED", "GET unknown VM, no key");
  expectError(
    await api("POST", "/admin/v1/keys", { key: null, body: {} }),
    401,
    "UNAUTHORIZED",
    "POST /admin/v1/keys, no key",
  );
});

test("create a VM", { timeout: CREATE_TIMEOUT }, async () => {
  const t0 = Date.now();
  const vm = await vms.create({ name: NAME });
  console.log(`# created ${vm.id} in ${Date.now() - t0} ms`);
  assert.ok(Array.isArray(vm.domains), `domains array in ${JSON.stringify(vm)}`);
  vmId = vm.id;
});

test("get the VM", async () => {
  const id = needVm();
  const vm = await ok("GET", `/v1/vms/${id}`);
  assert.equal(vm.id, id);
  assert.equal(vm.state, "running");
  assert.equal(vm.name, NAME);
});

test("exec: echo hi", async () => {
  const r = await exec(needVm(), "echo hi");
  assert.deepEqual({ stdout: r.stdout, stderr: r.stderr, statusCode: r.statusCode }, {
    stdout: "hi\n",
    stderr: "",
    statusCode: 0,
  });
});

test("exec: exit codes propagate", async () => {
  const id = needVm();
  for (const [cmd, code] of [
    ["true", 0],
    ["false", 1],
    ["exit 42", 42],
    ["sh -c 'exit 255'", 255],
    ["nonexistent-command-xyz", 127],
  ]) {
    const r = await exec(id, cmd);
    assert.equal(r.statusCode, code, `${cmd}: ${JSON.stringify(r)}`);
  }
});

test("exec: stdout and stderr are separate", async () => {
  const r = await exec(needVm(), "echo out; echo err >&2; echo out2; exit 3");
  assert.equal(r.stdout, "out\nout2\n");
  assert.equal(r.stderr, "err\n");
  assert.equal(r.statusCode, 3);
});

test("exec: the guest runs Linux and is a different machine", async () => {
  const id = needVm();
  const r = await exec(id, "uname -a");
  assert.equal(r.statusCode, 0);
  assert.match(r.stdout, /Linux/);
  // Its own name: the VM id (not the snapshot's), in the kernel and the file.
  const h = await exec(id, "cat /etc/hostname; hostname");
  assert.equal(h.stdout, `${id}\n${id}\n`);
});

test("exec: a real shell with a working directory", async () => {
  const id = needVm();
  const pwd = await exec(id, "pwd");
  assert.equal(pwd.statusCode, 0);
  assert.match(pwd.stdout, /^\/\S*\n$/, `pwd: ${JSON.stringify(pwd)}`);
  const isDir = await exec(id, 'test -d "$(pwd)" && echo yes');
  assert.equal(isDir.stdout, "yes\n");
  const cd = await exec(id, "cd /tmp && pwd");
  assert.equal(cd.stdout, "/tmp\n");
  const shell = await exec(id, `x=$((6 * 7)); echo "$x" | tr 4 X; printf '%s|' "a b" 'c"d'`);
  assert.equal(shell.stdout, 'X2\na b|c"d|');
  // Each exec starts afresh: a cd does not leak into the next one.
  const again = await exec(id, "pwd");
  assert.equal(again.stdout, pwd.stdout);
});

test("exec: large output arrives whole", async () => {
  const r = await exec(needVm(), "head -c 300000 /dev/zero | tr '\\0' a; head -c 100000 /dev/zero | tr '\\0' b >&2");
  assert.equal(r.statusCode, 0);
  assert.equal(r.stdout.length, 300000);
  assert.ok(/^a+$/.test(r.stdout), "stdout is all 'a'");
  assert.equal(r.stderr.length, 100000);
});

test("exec: 20 concurrent commands each get their own output", { timeout: 5 * 60_000 }, async () => {
  const id = needVm();
  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      exec(id, `sleep 0.$((${i} % 5)); echo out-${i}; echo err-${i} >&2; exit ${i % 7}`),
    ),
  );
  results.forEach((r, i) => {
    assert.deepEqual(
      { stdout: r.stdout, stderr: r.stderr, statusCode: r.statusCode },
      { stdout: `out-${i}\n`, stderr: `err-${i}\n`, statusCode: i % 7 },
      `exec #${i}`,
    );
  });
});

test("exec: timeoutMs gives 408 EXEC_TIMED_OUT quickly and the VM keeps working", async () => {
  const id = needVm();
  const t0 = Date.now();
  const res = await api("POST", `/v1/vms/${id}/exec-await`, { body: { command: "sleep 60", timeoutMs: 1500 } });
  const ms = Date.now() - t0;
  expectError(res, 408, "EXEC_TIMED_OUT", "exec sleep 60 with timeoutMs 1500");
  assert.ok(ms >= 1000, `answered after ${ms} ms, before the timeout`);
  assert.ok(ms < 15000, `answered after ${ms} ms`);
  const r = await exec(id, "echo still-alive");
  assert.equal(r.stdout, "still-alive\n");
  // The timed-out command was killed, not left running in the guest.
  let left;
  for (let i = 0; i < 10; i++) {
    left = await exec(id, "pgrep -x sleep || echo none");
    if (left.stdout === "none\n") break;
    await new Promise((res) => setTimeout(res, 500));
  }
  assert.equal(left.stdout, "none\n", "`sleep 60` still runs in the guest after its exec timed out");
});

test("exec: stdin is empty and background jobs do not hold the answer", async () => {
  const id = needVm();
  const t0 = Date.now();
  const cat = await exec(id, "cat; echo done", { timeoutMs: 20000 });
  assert.equal(cat.stdout, "done\n", "cat must see EOF on stdin");
  const bg = await exec(id, "sleep 30 >/dev/null 2>&1 & echo started", { timeoutMs: 20000 });
  assert.equal(bg.stdout, "started\n");
  assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
  await exec(id, "pkill -x sleep || true");
});

test("exec: a command killed by a signal reports a failure status", async () => {
  const r = await exec(needVm(), "kill -9 $$");
  assert.notEqual(r.statusCode, 0, JSON.stringify(r));
});

test("exec: non-UTF-8 output still gives a valid JSON answer", async () => {
  const res = await api("POST", `/v1/vms/${needVm()}/exec-await`, {
    body: { command: "printf 'a\\377\\376b\\000c\\n'; head -c 4096 /dev/urandom >&2" },
  });
  assert.equal(res.status, 200, show("POST", "exec-await binary output", res));
  assert.equal(typeof res.json?.stdout, "string");
  assert.ok(res.json.stdout.startsWith("a"), JSON.stringify(res.json.stdout));
  assert.ok(res.json.stdout.endsWith("c\n"), JSON.stringify(res.json.stdout));
  assert.equal(res.json.statusCode, 0);
});

test("bad input: malformed JSON is 400 with a JSON error body", async () => {
  const id = needVm();
  for (const [method, p] of [
    ["POST", `/v1/vms/${id}/exec-await`],
    ["POST", "/v1/vms"],
    ["PUT", filesPath(id, "/root/x.txt")],
  ]) {
    const res = await api(method, p, { body: '{"command": "echo', headers: { "content-type": "application/json" } });
    expectError(res, 400, null, `${method} ${p} with malformed JSON`);
  }
});

test("bad input: exec without a command, or with a non-string one, is 400", async () => {
  const id = needVm();
  for (const body of [{}, { command: 42 }, { command: null }, [], "\"echo hi\""]) {
    const res = await api("POST", `/v1/vms/${id}/exec-await`, { body });
    expectError(res, 400, null, `exec with body ${JSON.stringify(body)}`);
  }
});

test("bad input: unknown routes answer a JSON error", async () => {
  for (const [method, p] of [
    ["GET", "/v1/nope"],
    ["GET", "/nope"],
    ["PATCH", "/v1/vms"],
  ]) {
    const res = await api(method, p);
    assert.ok(res.status === 404 || res.status === 405, show(method, p, res));
    expectError(res, res.status, null, `${method} ${p}`);
  }
});

test("routing: a known path with another method is 405 with Allow; literal paths beat VM ids", async () => {
  const id = needVm();
  for (const [method, p, allow] of [
    ["PATCH", "/v1/vms", "GET, POST"],
    ["PUT", `/v1/vms/${id}`, "GET, DELETE"],
    ["GET", `/v1/vms/${id}/exec-await`, "POST"],
    ["DELETE", `/v1/vms/${id}/files/${enc("/etc/hostname")}`, "GET, PUT"],
    ["POST", "/v1/vms/snapshots/sc-aaaaaaaaaaaaaaaaaaaa", "GET, PATCH, DELETE"],
  ]) {
    const res = await api(method, p);
    expectError(res, 405, "METHOD_NOT_ALLOWED", `${method} ${p}`);
    assert.equal(res.headers.get("allow"), allow, show(method, p, res));
  }
  // "snapshots" is also a valid legacy VM id; the literal route wins.
  const list = await api("GET", "/v1/vms/snapshots");
  assert.equal(list.status, 200, show("GET", "/v1/vms/snapshots", list));
  assert.ok(Array.isArray(list.json?.snapshots), show("GET", "/v1/vms/snapshots", list));
  // Without a key, an unknown path is 401, not a hint about what exists.
  expectError(await api("GET", "/v1/nope", { key: null }), 401, "UNAUTHORIZED", "GET /v1/nope without a key");
  expectError(await api("PUT", "/v1/vms", { key: null }), 401, "UNAUTHORIZED", "PUT /v1/vms without a key");
  assert.equal((await api("GET", "/healthz", { key: null })).status, 200, "GET /healthz needs no key");
});

test("bad input: an unknown VM is 404 VM_NOT_FOUND", async () => {
  for (const [method, p, body] of [
    ["GET", `/v1/vms/${UNKNOWN}`],
    ["DELETE", `/v1/vms/${UNKNOWN}`],
    ["POST", `/v1/vms/${UNKNOWN}/exec-await`, { command: "true" }],
    ["GET", filesPath(UNKNOWN, "/etc/hostname")],
    ["PUT", filesPath(UNKNOWN, "/tmp/x"), { content: "x" }],
    ["GET", `/v1/vms/not-an-id`],
    ["GET", `/v1/vms/${enc("../../etc")}`],
  ]) {
    expectError(await api(method, p, { body }), 404, "VM_NOT_FOUND", `${method} ${p}`);
  }
});

/**
 * Sends headers declaring a body of `length` bytes plus only its first
 * `sent` bytes, then waits for the answer without sending the rest.
 */
function postPartial(urlPath, length, sent) {
  return new Promise((resolve, reject) => {
    const req = http.request(BASE + urlPath, {
      method: "POST",
      // A client that wants to be refused before sending the body says so.
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json", "content-length": length,
                 expect: "100-continue" },
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no answer to a ${length}-byte declared body within 15 s`));
    }, 15000);
    req.on("response", (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      res.on("end", () => {
        clearTimeout(timer);
        req.destroy();
        let json;
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode, text, json });
      });
    });
    req.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.write('{"command":"' + "x".repeat(sent));
  });
}

const MAX_BODY = Number(process.env.SPROUT_MAX_BODY_BYTES ?? 0);

test("bad input: a declared body over the cap is 413 PAYLOAD_TOO_LARGE", { skip: !MAX_BODY && "SPROUT_MAX_BODY_BYTES not set" }, async () => {
  const id = needVm();
  const res = await postPartial(`/v1/vms/${id}/exec-await`, MAX_BODY + 1024, 64 * 1024);
  expectError(res, 413, "PAYLOAD_TOO_LARGE", `exec with Content-Length ${MAX_BODY + 1024} (cap ${MAX_BODY})`);
  // A body under the cap is still accepted.
  const fits = JSON.stringify({ command: `echo ${"y".repeat(Math.min(MAX_BODY - 1024, 100000))} | wc -c` });
  const r = await api("POST", `/v1/vms/${id}/exec-await`, { body: fits });
  assert.equal(r.status, 200, show("POST", "exec-await (fits)", r));
  assert.equal(r.json.stdout.trim(), String(Math.min(MAX_BODY - 1024, 100000) + 1));
});

test("bad input: a client that sends a whole oversize body (as fetch and the SDK do) reads the 413", { skip: !MAX_BODY && "SPROUT_MAX_BODY_BYTES not set" }, async () => {
  const id = needVm();
  const big = JSON.stringify({ command: "echo " + "x".repeat(MAX_BODY + 1024) });
  let res;
  try {
    res = await api("POST", `/v1/vms/${id}/exec-await`, { body: big });
  } catch (e) {
    assert.fail(`fetch of a ${big.length}-byte body (cap ${MAX_BODY}) failed instead of answering 413: ` +
      `${e.message} (${e.cause?.code ?? e.cause?.message ?? "no cause"}); the server must read (drain) ` +
      "the rest of the body or linger before closing, or Node clients never see the answer");
  }
  expectError(res, 413, "PAYLOAD_TOO_LARGE", `exec with a ${big.length}-byte body (cap ${MAX_BODY})`);
  // The server is still fine afterwards.
  assert.equal((await exec(id, "echo ok")).stdout, "ok\n");
});

test("list: the VM is listed with its state and counts", async () => {
  const id = needVm();
  const all = await ok("GET", "/v1/vms");
  for (const k of ["totalCount", "runningCount", "startingCount", "suspendedCount", "stoppedCount"]) {
    assert.equal(typeof all[k], "number", `${k} in ${JSON.stringify(all).slice(0, 300)}`);
  }
  const mine = all.vms.find((v) => v.id === id);
  assert.ok(mine, `${id} listed`);
  assert.equal(mine.state, "running");
  assert.equal(mine.name, NAME);
  assert.equal(typeof mine.createdAt, "string");
  assert.ok(!Number.isNaN(Date.parse(mine.createdAt)), `createdAt parses: ${mine.createdAt}`);
  assert.ok(all.runningCount >= 1);
  assert.ok(all.totalCount >= all.vms.length);

  const running = await ok("GET", "/v1/vms?vmState=running");
  assert.ok(running.vms.some((v) => v.id === id));
  assert.ok(running.vms.every((v) => v.state === "running"));
  const stopped = await ok("GET", "/v1/vms?vmState=stopped");
  assert.ok(!stopped.vms.some((v) => v.id === id));

  const page = await ok("GET", "/v1/vms?limit=1&offset=0");
  assert.equal(page.vms.length, 1);
  const past = await ok("GET", `/v1/vms?limit=10&offset=${all.totalCount}`);
  assert.equal(past.vms.length, 0);
});

test("tenancy: another account cannot see or touch the VM", async () => {
  const id = needVm();
  const b = await newAccount(`e2e-tenant-${rand(3)}`);
  const key = b.key;
  assert.notEqual(key, ADMIN_KEY);

  const list = await ok("GET", "/v1/vms", { key });
  assert.ok(!list.vms.some((v) => v.id === id), "other account's list must not show the VM");
  assert.equal(list.totalCount, 0, `fresh account has no VMs: ${JSON.stringify(list).slice(0, 200)}`);
  for (const [method, p, body] of [
    ["GET", `/v1/vms/${id}`],
    ["POST", `/v1/vms/${id}/exec-await`, { command: "touch /tmp/pwned" }],
    ["GET", filesPath(id, "/etc/hostname")],
    ["PUT", filesPath(id, "/tmp/pwned"), { content: "x" }],
    ["DELETE", `/v1/vms/${id}`],
  ]) {
    expectError(await api(method, p, { body, key }), 404, "VM_NOT_FOUND", `${method} ${p} as another account`);
  }
  // The owner still has it, untouched.
  const vm = await ok("GET", `/v1/vms/${id}`);
  assert.equal(vm.state, "running");
  const r = await exec(id, "test -e /tmp/pwned; echo $?");
  assert.equal(r.stdout, "1\n");

  // A non-admin key may not mint keys.
  expectError(await api("POST", "/admin/v1/keys", { key, body: {} }), 403, "FORBIDDEN", "admin endpoint, non-admin key");
  expectError(
    await api("POST", "/admin/v1/keys", { key, body: { account: b.account } }),
    403,
    "FORBIDDEN",
    "admin endpoint, non-admin key, own account",
  );
});

test("admin keys: named accounts are reused, {} makes a new account", async () => {
  const name = `e2e-acct-${rand(3)}`;
  const k1 = await newAccount(name);
  const k2 = await newAccount(name);
  assert.equal(k1.account, name);
  assert.equal(k1.accountId, k2.accountId, "same name, same account");
  assert.notEqual(k1.key, k2.key, "each call mints a new key");
  const fresh = await newAccount();
  assert.notEqual(fresh.accountId, k1.accountId);
  // Both keys of the account work.
  await ok("GET", "/v1/vms", { key: k2.key });
  expectError(
    await api("POST", "/admin/v1/keys", { body: "{nope", headers: { "content-type": "application/json" } }),
    400,
    null,
    "admin endpoint, malformed JSON",
  );
});

test("delete the VM; then it is gone", async () => {
  const id = needVm();
  const del = await ok("DELETE", `/v1/vms/${id}`);
  assert.equal(del.id, id);
  vms.forget(id);
  expectError(await api("GET", `/v1/vms/${id}`), 404, "VM_NOT_FOUND", "GET after delete");
  expectError(
    await api("POST", `/v1/vms/${id}/exec-await`, { body: { command: "true" } }),
    404,
    "VM_NOT_FOUND",
    "exec after delete",
  );
  expectError(await api("DELETE", `/v1/vms/${id}`), 404, "VM_NOT_FOUND", "DELETE twice");
  const list = await ok("GET", "/v1/vms");
  assert.ok(!list.vms.some((v) => v.id === id), "deleted VM not listed");
  // sproutd runs on this machine in the suite: its QEMU process is gone too.
  if (/^http:\/\/(127\.0\.0\.1|localhost)[:/]/.test(BASE)) {
    let procs = "";
    for (let i = 0; i < 20; i++) {
      procs = spawnSync("pgrep", ["-af", id], { encoding: "utf8" }).stdout?.trim() ?? "";
      if (!procs) break;
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.equal(procs, "", `processes of the deleted VM still run 10 s later: ${procs}`);
  }
});
