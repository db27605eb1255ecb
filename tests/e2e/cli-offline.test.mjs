// Tests of the `sprout` CLI against a fake in-process HTTP server, so argument
// parsing, request shapes (paths, encoding, bodies, headers), output
// formatting and exit codes are checked without sproutd or any VM.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, beforeEach, test } from "node:test";
import { spawn, spawnSync } from "node:child_process";
import { SPROUT_BIN, runCli } from "./lib.mjs";

const ID = "abcdefghij0123456789";
let server;
let url;
let dir;
let requests = [];
let reply = () => [500, { error: "INTERNAL_ERROR", code: "INTERNAL_ERROR", message: "no reply set" }];

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "sprout-cli-offline-"));
  server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString();
      const r = { method: req.method, url: req.url, headers: req.headers, raw, body: raw ? JSON.parse(raw) : undefined };
      requests.push(r);
      // A reply may take its time (a Promise), or stream (a body function
      // that writes to res itself).
      Promise.resolve(reply(r)).then(([status, body]) => {
        if (typeof body === "function") {
          res.writeHead(status, { "content-type": "application/x-ndjson" });
          return body(res);
        }
        res.writeHead(status, { "content-type": "application/json" });
        res.end(typeof body === "string" ? body : JSON.stringify(body));
      });
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  requests = [];
});

const env = () => ({ SPROUT_URL: url, SPROUT_API_KEY: "k-test" });
const cli = (args, opts = {}) => runCli(args, { env: env(), timeoutMs: 20_000, ...opts });

test("help and usage errors", async () => {
  for (const args of [["help"], ["--help"], ["-h"], ["vm", "help"]]) {
    const r = await cli(args);
    assert.equal(r.code, 0, args.join(" "));
    assert.match(r.out, /sprout vm create/);
  }
  const help = await cli(["help"]);
  for (const c of ["vm list", "vm get", "vm exec", "vm delete", "file get", "file put", "keys create"]) {
    assert.match(help.out, new RegExp(`sprout ${c}`), `help mentions ${c}`);
  }
  for (const args of [[], ["bogus"], ["vm"], ["vm", "bogus"], ["vm", "get"], ["vm", "get", "a", "b"],
    ["vm", "exec", ID], ["vm", "create", "--nope"], ["vm", "create", "--name"], ["file", "get", ID],
    ["vm", "list", "--limit", "x"], ["vm", "exec", ID, "--timeout", "soon", "--", "true"]]) {
    const r = await cli(args);
    assert.equal(r.code, 2, `sprout ${args.join(" ")}: ${r.stderr}`);
    assert.ok(r.stderr.length > 0, `usage on stderr for ${args.join(" ")}`);
  }
  assert.equal(requests.length, 0, "usage errors send nothing");
});

test("no API key is a usage error", async () => {
  const r = await runCli(["vm", "list"], { env: { SPROUT_URL: url } });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /SPROUT_API_KEY/);
});

test("FREESTYLE_* variables are the fallback; SPROUT_* win", async () => {
  reply = () => [200, { vms: [], totalCount: 0, runningCount: 0, startingCount: 0, suspendedCount: 0, stoppedCount: 0 }];
  let r = await runCli(["vm", "list"], { env: { FREESTYLE_API_URL: url + "/", FREESTYLE_API_KEY: "fs-key" } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).headers.authorization, "Bearer fs-key");
  assert.equal(requests.at(-1).url, "/v1/vms");
  r = await runCli(["vm", "list"], {
    env: { FREESTYLE_API_URL: "http://127.0.0.1:1", FREESTYLE_API_KEY: "fs-key", SPROUT_URL: url, SPROUT_API_KEY: "sp" },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).headers.authorization, "Bearer sp");
});

test("vm create sends the name and prints the id; --json prints the body", async () => {
  reply = () => [200, { id: ID, domains: [] }];
  let r = await cli(["vm", "create", "--name", "my vm"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, `${ID}\n`);
  assert.deepEqual(requests.at(-1).body, { name: "my vm" });
  assert.equal(requests.at(-1).method, "POST");
  assert.equal(requests.at(-1).headers["content-type"], "application/json");
  r = await cli(["vm", "create", "--json"]);
  assert.deepEqual(requests.at(-1).body, {});
  assert.deepEqual(JSON.parse(r.out), { id: ID, domains: [] });
  r = await cli(["--json", "vm", "create", "--name=x"]);
  assert.deepEqual(requests.at(-1).body, { name: "x" });
  assert.deepEqual(JSON.parse(r.out), { id: ID, domains: [] });
});

test("vm list: query string, table and counts", async () => {
  reply = () => [200, {
    vms: [
      { id: ID, name: "one", state: "running", createdAt: "2025-01-01T00:00:00Z" },
      { id: "b".repeat(20), name: null, state: "stopped", createdAt: "2025-01-02T00:00:00Z" },
    ],
    totalCount: 2, runningCount: 1, startingCount: 0, suspendedCount: 0, stoppedCount: 1,
  }];
  const r = await cli(["vm", "list", "--limit", "5", "--offset", "2", "--state", "running"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, "/v1/vms?limit=5&offset=2&vmState=running");
  const lines = r.out.trimEnd().split("\n");
  assert.match(lines[0], /^ID\s+NAME\s+STATE\s+CREATED$/);
  assert.match(lines[1], new RegExp(`^${ID}\\s+one\\s+running\\s+2025-01-01T00:00:00Z$`));
  assert.match(lines[2], /^b{20}\s+-\s+stopped\s+/);
  assert.match(lines[3], /^2 total, 1 running, 0 starting, 0 suspended, 1 stopped$/);
  await cli(["vm", "list", "--state", "running"]);
  assert.equal(requests.at(-1).url, "/v1/vms?vmState=running");
});

test("vm get prints fields; ids are path-encoded", async () => {
  reply = () => [200, { id: ID, name: "n", state: "running", cpuTimeSeconds: 1.5, domains: ["a"] }];
  const r = await cli(["vm", "get", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}`);
  assert.match(r.out, new RegExp(`^id\\s+${ID}$`, "m"));
  assert.match(r.out, /^state\s+running$/m);
  assert.match(r.out, /^domains\s+\["a"\]$/m);
  await cli(["vm", "get", "a/b c?"]);
  assert.equal(requests.at(-1).url, "/v1/vms/a%2Fb%20c%3F");
});

test("vm exec: command forms, timeout, output streams and exit status", async () => {
  reply = () => [200, { stdout: "out\n", stderr: "err\n", statusCode: 5 }];
  let r = await cli(["vm", "exec", ID, "--", "echo", "a b", "it's", "$x", "plain"]);
  assert.equal(r.code, 5);
  assert.equal(r.out, "out\n");
  assert.equal(r.stderr, "err\n");
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/exec-await`);
  assert.deepEqual(requests.at(-1).body, { command: "echo 'a b' 'it'\\''s' '$x' plain" });

  await cli(["vm", "exec", ID, "echo $HOME | wc -c"]);
  assert.deepEqual(requests.at(-1).body, { command: "echo $HOME | wc -c" });

  await cli(["vm", "exec", "--timeout", "500", ID, "--", "ls", "-la"]);
  assert.deepEqual(requests.at(-1).body, { command: "ls -la", timeoutMs: 500 });
  await cli(["vm", "exec", ID, "--timeout=250", "ls", "-la"]);
  assert.deepEqual(requests.at(-1).body, { command: "ls -la", timeoutMs: 250 });

  reply = () => [200, { stdout: "", stderr: "", statusCode: 0 }];
  r = await cli(["vm", "exec", ID, "true"]);
  assert.equal(r.code, 0);
  r = await cli(["vm", "exec", ID, "--json", "true"]);
  assert.deepEqual(JSON.parse(r.out), { stdout: "", stderr: "", statusCode: 0 });

  reply = () => [408, { error: "EXEC_TIMED_OUT", code: "EXEC_TIMED_OUT", message: "took too long" }];
  r = await cli(["vm", "exec", ID, "sleep 9"]);
  assert.equal(r.code, 124);
  assert.match(r.stderr, /EXEC_TIMED_OUT: took too long/);
});

test("server errors: message on stderr, exit 1", async () => {
  reply = () => [404, { error: "VM_NOT_FOUND", code: "VM_NOT_FOUND", message: "vm zz not found" }];
  let r = await cli(["vm", "delete", "zz"]);
  assert.equal(r.code, 1);
  assert.equal(r.out, "");
  assert.match(r.stderr, /vm delete: VM_NOT_FOUND: vm zz not found \(HTTP 404\)/);
  reply = () => [500, "plain text failure"];
  r = await cli(["vm", "get", ID]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /HTTP 500: plain text failure/);
  reply = () => [200, "not json"];
  r = await cli(["vm", "create"]);
  assert.equal(r.code, 1);
  r = await runCli(["vm", "list"], { env: { SPROUT_URL: "http://127.0.0.1:1", SPROUT_API_KEY: "k" } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot reach/);
});

test("vm delete prints what it deleted", async () => {
  reply = () => [200, { id: ID }];
  const r = await cli(["vm", "delete", ID]);
  assert.equal(r.code, 0);
  assert.equal(r.out, `deleted ${ID}\n`);
  assert.equal(requests.at(-1).method, "DELETE");
});

test("file get: the path is ONE encoded segment; base64 decoded raw; -o; directories", async () => {
  const data = randomBytes(70000);
  reply = () => [200, { content: data.toString("base64"), encoding: "base64" }];
  let r = await cli(["file", "get", ID, "/root/a b/ü.bin"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/files/%2Froot%2Fa%20b%2F%C3%BC.bin`);
  assert.ok(r.stdout.equals(data));
  const out = path.join(dir, "o.bin");
  r = await cli(["file", "get", ID, "/x", "-o", out]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.length, 0);
  assert.ok(readFileSync(out).equals(data));

  reply = () => [200, { content: "text é\n", encoding: "utf8" }];
  r = await cli(["file", "get", ID, "/t"]);
  assert.equal(r.out, "text é\n");

  reply = () => [200, { files: [{ name: "a.txt", kind: "file" }, { name: "sub", kind: "directory" }] }];
  r = await cli(["file", "get", ID, "/root"]);
  assert.equal(r.out, "a.txt\nsub/\n");
  r = await cli(["file", "get", ID, "/root", "--json"]);
  assert.deepEqual(JSON.parse(r.out).files.length, 2);

  reply = () => [404, { error: "FILE_NOT_FOUND", code: "FILE_NOT_FOUND", message: "no such file" }];
  r = await cli(["file", "get", ID, "/nope", "-o", path.join(dir, "never")]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /FILE_NOT_FOUND/);
});

test("file put: base64 body from a file or stdin", async () => {
  reply = () => [200, {}];
  const data = randomBytes(100000);
  const src = path.join(dir, "in.bin");
  writeFileSync(src, data);
  let r = await cli(["file", "put", ID, "/root/in.bin", src]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "wrote 100000 bytes to /root/in.bin\n");
  const req = requests.at(-1);
  assert.equal(req.method, "PUT");
  assert.equal(req.url, `/v1/vms/${ID}/files/%2Froot%2Fin.bin`);
  assert.equal(req.body.encoding, "base64");
  assert.ok(Buffer.from(req.body.content, "base64").equals(data));

  r = await cli(["file", "put", ID, "/s.txt"], { input: "stdin data" });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(Buffer.from(requests.at(-1).body.content, "base64").toString(), "stdin data");
  r = await cli(["file", "put", ID, "/e.txt", "-"], { input: "" });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).body.content, "");
  r = await cli(["file", "put", ID, "/x", path.join(dir, "missing")]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /missing/);
});

test("keys create: account in the body, key alone on the last line", async () => {
  reply = () => [200, { key: "sk-123", accountId: "acc1", account: "team" }];
  let r = await cli(["keys", "create", "--account", "team"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, "/admin/v1/keys");
  assert.deepEqual(requests.at(-1).body, { account: "team" });
  assert.equal(r.out.trimEnd().split("\n").at(-1), "sk-123");
  r = await cli(["keys", "create"]);
  assert.deepEqual(requests.at(-1).body, {});
  reply = () => [403, { error: "FORBIDDEN", code: "FORBIDDEN", message: "admin key required" }];
  r = await cli(["keys", "create"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /FORBIDDEN/);
});

// ---- the verbs beyond create/list/get/exec/delete ----

const ERR = (status, code, message) => () => [status, { error: code, code, message }];
const ndjson = (items) => items.map((i) => (typeof i === "string" ? i : JSON.stringify(i))).join("\n") + "\n";

test("new verbs: help lists them; usage errors send nothing and exit 2", async () => {
  const help = await cli(["help"]);
  for (const c of ["vm suspend", "vm start", "vm stop", "vm kill", "vm await", "vm fork", "vm snapshot",
    "vm optimize", "vm resize", "vm stats", "vm watch", "vm build", "snapshot list", "snapshot get",
    "snapshot update", "snapshot delete", "service list", "service get", "service status", "service logs",
    "service create", "service delete", "service start", "service stop", "service restart", "terminal list",
    "terminal logs"]) {
    assert.match(help.out, new RegExp(`sprout ${c} `), `help mentions ${c}`);
  }
  const groups = await cli(["service", "help"]);
  assert.equal(groups.code, 0);
  assert.match(groups.out, /sprout service restart ID NAME\.\.\./);
  assert.doesNotMatch(groups.out, /sprout vm /);
  for (const args of [["vm", "suspend"], ["vm", "start", ID, "x"], ["vm", "stop", "--bogus", ID], ["vm", "kill"],
    ["vm", "await"], ["vm", "optimize"], ["vm", "fork"], ["vm", "fork", ID, "--count", "0"],
    ["vm", "fork", ID, "--count", "two"], ["vm", "fork", ID, "--port", "80"], ["vm", "snapshot", ID, "--name"],
    ["vm", "resize", ID], ["vm", "resize", ID, "--memory-mb", "1000"], ["vm", "resize", ID, "--vcpus", "-1"],
    ["vm", "resize", ID, "--memory-mb", "2048", "--memory-gb", "2"], ["vm", "stats"],
    ["vm", "stats", ID, "--interval", "soon"], ["vm", "stats", ID, "--follow=yes"], ["vm", "watch"],
    ["vm", "build"], ["snapshot", "list", "x"], ["snapshot", "get"], ["snapshot", "update", "s1"],
    ["snapshot", "delete"], ["service", "list"], ["service", "get", ID], ["service", "status", ID],
    ["service", "logs", ID], ["service", "logs", ID, "web", "--lines", "x"], ["service", "create", ID],
    ["service", "create", ID, "extra", "--spec", "f"], ["service", "delete", ID], ["service", "start", ID],
    ["service", "stop"], ["service", "restart", ID], ["terminal", "list"], ["terminal", "logs", ID],
    ["terminal", "logs", ID, "main", "--raw"], ["service", "bogus"]]) {
    const r = await cli(args);
    assert.equal(r.code, 2, `sprout ${args.join(" ")}: ${r.stderr}`);
    assert.ok(r.stderr.length > 0, `usage on stderr for ${args.join(" ")}`);
  }
  const usage = await cli(["vm", "resize", ID]);
  assert.match(usage.stderr, /usage: sprout vm resize ID \[--memory-gb N/);
  assert.equal(requests.length, 0, "usage errors send nothing");
});

test("vm suspend/start/stop/kill/optimize: POST, body, what they say, --json", async () => {
  for (const [verb, body, said] of [["suspend", undefined, "suspended"], ["start", {}, "started"],
    ["stop", undefined, "stopped"], ["kill", undefined, "killed"], ["optimize", undefined, "optimized"]]) {
    reply = () => [200, { id: ID, verb }];
    let r = await cli(["vm", verb, ID]);
    assert.equal(r.code, 0, `${verb}: ${r.stderr}`);
    assert.equal(r.out, `${said} ${ID}\n`);
    assert.equal(r.stderr, "", "nothing extra on stderr when it is not a terminal");
    const req = requests.at(-1);
    assert.equal(req.method, "POST");
    assert.equal(req.url, `/v1/vms/${ID}/${verb}`);
    assert.deepEqual(req.body, body, verb);
    r = await cli(["vm", verb, ID, "--json"]);
    assert.deepEqual(JSON.parse(r.out), { id: ID, verb });
    reply = ERR(400, "VM_NOT_RUNNING", `vm ${ID} is not running`);
    r = await cli(["vm", verb, ID]);
    assert.equal(r.code, 1);
    assert.equal(r.out, "");
    assert.match(r.stderr, new RegExp(`vm ${verb}: VM_NOT_RUNNING: vm ${ID} is not running \\(HTTP 400\\)`));
  }
});

test("vm await: asks again after AWAIT_TIMED_OUT, then prints the state", async () => {
  let n = 0;
  reply = () => (++n < 3 ? [504, { error: "AWAIT_TIMED_OUT", code: "AWAIT_TIMED_OUT", message: "call await again" }]
    : [200, { id: ID, exitStatus: "stopped" }]);
  let r = await cli(["vm", "await", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, `stopped ${ID}\n`);
  assert.equal(r.stderr, "");
  assert.equal(requests.length, 3);
  assert.ok(requests.every((q) => q.method === "POST" && q.url === `/v1/vms/${ID}/await`));
  reply = () => [200, { id: ID, exitStatus: "deleted" }];
  r = await cli(["vm", "await", ID, "--json"]);
  assert.deepEqual(JSON.parse(r.out), { id: ID, exitStatus: "deleted" });
  reply = ERR(504, "GATEWAY_TIMEOUT", "something else");
  r = await cli(["vm", "await", ID]);
  assert.equal(r.code, 1, "a 504 that is not AWAIT_TIMED_OUT is a failure");
  assert.match(r.stderr, /GATEWAY_TIMEOUT/);
});

test("vm fork: count and ports in the body; one id a line", async () => {
  const forks = [{ id: "f".repeat(20), domains: [] }, { id: "g".repeat(20), domains: [] }];
  reply = () => [200, { vmId: ID, forks }];
  let r = await cli(["vm", "fork", ID, "--count", "2"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, `${"f".repeat(20)}\n${"g".repeat(20)}\n`);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/fork`);
  assert.deepEqual(requests.at(-1).body, { count: 2 });
  r = await cli(["vm", "fork", ID, "--port", "443:3000", "--json"]);
  assert.deepEqual(requests.at(-1).body, { ports: [{ port: 443, targetPort: 3000 }] });
  assert.deepEqual(JSON.parse(r.out).forks, forks);
  reply = ERR(403, "ACCESS_DENIED", "not yours");
  r = await cli(["vm", "fork", ID]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /vm fork: ACCESS_DENIED: not yours/);
});

test("vm snapshot: the name in the body; prints the snapshot id", async () => {
  reply = () => [200, { snapshotId: "snap1", sourceVmId: ID, sourceVmInstanceId: null }];
  let r = await cli(["vm", "snapshot", ID, "--name", "before upgrade"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "snap1\n");
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/snapshot`);
  assert.deepEqual(requests.at(-1).body, { name: "before upgrade" });
  r = await cli(["vm", "snapshot", ID, "--json"]);
  assert.deepEqual(requests.at(-1).body, {});
  assert.equal(JSON.parse(r.out).snapshotId, "snap1");
});

test("vm resize: the spec's field names, memory in whole GB", async () => {
  reply = () => [200, {}];
  let r = await cli(["vm", "resize", ID, "--memory-mb", "2048", "--vcpus", "2", "--disk-gb", "8"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, `resized ${ID}\n`);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/resize`);
  assert.deepEqual(requests.at(-1).body, { memSizeGb: 2, vcpuCount: 2, rootfsSizeGb: 8 });
  await cli(["vm", "resize", ID, "--memory-gb", "3"]);
  assert.deepEqual(requests.at(-1).body, { memSizeGb: 3 });
  reply = ERR(400, "INVALID_PARAMETERS", "resize only grows a VM");
  r = await cli(["vm", "resize", ID, "--disk-gb", "1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /INVALID_PARAMETERS: resize only grows a VM/);
});

test("vm build: GET /v1/vms/ID/build shown as a build", async () => {
  reply = () => [200, { buildId: "b1", state: "succeeded", snapshotId: "s1", plannedPhases: ["layer 1"] }];
  const r = await cli(["vm", "build", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/build`);
  assert.match(r.out, /^buildId\s+b1$/m);
  assert.match(r.out, /^state\s+succeeded$/m);
  assert.match(r.out, /^ {2}layer 1$/m);
});

const SAMPLE = (i) => ({
  vmId: ID, timestamp: `2025-01-01T00:00:0${i}Z`,
  memory: { totalBytes: 1073741824, availableBytes: 805306368, usedBytes: 268435456, usedPercent: 25 },
  cpu: { usagePercent: 12.5, count: 2 }, loadAverage: [0.5, 0.25, 0.125],
});

test("vm stats: one sample, or --follow every sample; human lines or JSON lines", async () => {
  reply = () => [200, ndjson([SAMPLE(1), "", SAMPLE(2), SAMPLE(3)])];
  let r = await cli(["vm", "stats", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).method, "GET");
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/stats/stream`);
  assert.equal(r.out, "2025-01-01T00:00:01Z  mem 256.0/1024.0 MiB (25.0%)  cpu 12.5% of 2  load 0.50 0.25 0.12\n");
  r = await cli(["vm", "stats", ID, "--follow", "--interval", "200", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/stats/stream?interval_ms=200`);
  assert.deepEqual(r.out.trimEnd().split("\n").map((l) => JSON.parse(l)), [SAMPLE(1), SAMPLE(2), SAMPLE(3)]);
  r = await cli(["vm", "stats", ID, "-f"]);
  assert.equal(r.out.trimEnd().split("\n").length, 3);

  // Without --follow it stops after the first sample of an endless stream.
  let timer;
  reply = () => [200, (res) => {
    let i = 0;
    res.write(JSON.stringify(SAMPLE(0)) + "\n");
    timer = setInterval(() => res.write(JSON.stringify(SAMPLE(++i % 10)) + "\n"), 100);
    res.on("close", () => clearInterval(timer));
  }];
  const t0 = Date.now();
  r = await cli(["vm", "stats", ID, "--json"]);
  clearInterval(timer);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.out), SAMPLE(0));
  assert.ok(Date.now() - t0 < 5000);

  reply = () => [200, ""];
  r = await cli(["vm", "stats", ID]);
  assert.equal(r.code, 1, "a stream that ends with no sample is a failure");
  reply = ERR(404, "VM_NOT_FOUND", "no such vm");
  r = await cli(["vm", "stats", ID, "--follow"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /vm stats: VM_NOT_FOUND: no such vm \(HTTP 404\)/);
});

test("vm watch: POST, one line per event (renames with both paths), keep-alives skipped", async () => {
  const events = [{ kind: "created", path: "/root/a" }, { kind: "renamed", path: "/root/b", oldPath: "/root/a" },
    "", { kind: "deleted", path: "/root/b" }];
  reply = () => [200, ndjson(events)];
  let r = await cli(["vm", "watch", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).method, "POST");
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/watch-files`);
  assert.equal(r.out, "created /root/a\nrenamed /root/a -> /root/b\ndeleted /root/b\n");
  r = await cli(["vm", "watch", ID, "--json"]);
  assert.deepEqual(r.out.trimEnd().split("\n").map((l) => JSON.parse(l)), events.filter((e) => e));
  reply = () => [200, "not json\n"];
  r = await cli(["vm", "watch", ID]);
  assert.equal(r.code, 1);
});

test("snapshot list/get/update/delete", async () => {
  reply = () => [200, {
    snapshots: [{ snapshotId: "s1", name: "one", state: "ready", sourceVmId: ID, createdAt: "2025-01-01T00:00:00Z", deleted: false },
      { snapshotId: "s2", name: null, state: "ready", sourceVmId: null, createdAt: "2025-01-02T00:00:00Z", deleted: true }],
    totalCount: 2, buildingCount: 0, readyCount: 1, failedCount: 0, cancelledCount: 0, lostCount: 0, deletedCount: 1,
  }];
  let r = await cli(["snapshot", "list"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, "/v1/vms/snapshots");
  const lines = r.out.trimEnd().split("\n");
  assert.match(lines[0], /^ID\s+NAME\s+STATE\s+SOURCE VM\s+CREATED$/);
  assert.match(lines[1], new RegExp(`^s1\\s+one\\s+ready\\s+${ID}\\s+2025-01-01T00:00:00Z$`));
  assert.match(lines[2], /^s2\s+-\s+ready\s+-\s+2025-01-02T00:00:00Z \(deleted\)$/);
  assert.equal(lines[3], "2 total, 1 ready, 0 building, 0 failed, 1 deleted");
  await cli(["snapshot", "list", "--include-deleted", "--include-building"]);
  assert.equal(requests.at(-1).url, "/v1/vms/snapshots?includeDeleted=true&includeBuilding=true");
  r = await cli(["snapshot", "list", "--include-failed", "--json"]);
  assert.equal(requests.at(-1).url, "/v1/vms/snapshots?includeFailed=true");
  assert.equal(JSON.parse(r.out).totalCount, 2);

  reply = () => [200, { snapshotId: "s1", state: "ready", name: "one", snapshotPersistence: { type: "sticky", priority: 5 } }];
  r = await cli(["snapshot", "get", "s/1"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, "/v1/vms/snapshots/s%2F1");
  assert.match(r.out, /^snapshotId\s+s1$/m);
  assert.match(r.out, /^snapshotPersistence\s+\{"type":"sticky","priority":5\}$/m);

  reply = () => [200, { snapshot_id: "s1", name: "two" }];
  r = await cli(["snapshot", "update", "s1", "--name", "two"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "updated s1\n");
  assert.equal(requests.at(-1).method, "PATCH");
  assert.deepEqual(requests.at(-1).body, { name: "two" });
  await cli(["snapshot", "update", "s1", "--name", ""]);
  assert.deepEqual(requests.at(-1).body, { name: null });

  reply = () => [200, { snapshot_id: "s1" }];
  r = await cli(["snapshot", "delete", "s1"]);
  assert.equal(r.out, "deleted s1\n");
  assert.equal(requests.at(-1).method, "DELETE");
  assert.equal(requests.at(-1).url, "/v1/vms/snapshots/s1");
  reply = ERR(409, "SNAPSHOT_IS_ACCOUNT_DEFAULT", "in use");
  r = await cli(["snapshot", "delete", "s1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /snapshot delete: SNAPSHOT_IS_ACCOUNT_DEFAULT: in use/);
});

test("service list/get/status/logs/delete: paths and output", async () => {
  const base = `/v1/vms/${ID}/systemd/services`;
  reply = () => [200, { services: [{ name: "web" }, { name: "worker" }] }];
  let r = await cli(["service", "list", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, base);
  assert.equal(r.out, "NAME\nweb\nworker\n");

  const st = { name: "web", loadState: "loaded", activeState: "active", subState: "running", description: "web app" };
  reply = () => [200, st];
  r = await cli(["service", "status", ID, "web"]);
  assert.equal(requests.at(-1).url, `${base}/web/status`);
  assert.equal(r.out, "web: active (running), loaded\n");
  r = await cli(["service", "get", ID, "web.service"]);
  assert.equal(requests.at(-1).url, `${base}/web.service/status`);
  assert.match(r.out, /^description\s+web app$/m);
  assert.match(r.out, /^activeState\s+active$/m);
  r = await cli(["service", "status", ID, "web", "--json"]);
  assert.deepEqual(JSON.parse(r.out), st);

  reply = () => [200, { logs: [{ message: "tick", timestamp: "2025-01-01T00:00:00Z", priority: "6", unit: "web.service" }] }];
  r = await cli(["service", "logs", ID, "web", "--lines", "5", "--since", "2025-01-01 00:00"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, `${base}/web/logs?lines=5&since=2025-01-01%2000%3A00`);
  assert.equal(r.out, "2025-01-01T00:00:00Z tick\n");
  await cli(["service", "logs", ID, "web"]);
  assert.equal(requests.at(-1).url, `${base}/web/logs`);

  reply = () => [200, { success: true, message: "service deleted" }];
  r = await cli(["service", "delete", ID, "web"]);
  assert.equal(r.out, "deleted web\n");
  assert.equal(requests.at(-1).method, "DELETE");
  assert.equal(requests.at(-1).url, `${base}/web`);
  reply = ERR(404, "SERVICE_NOT_FOUND", "no service web");
  r = await cli(["service", "status", ID, "web"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /service status: SERVICE_NOT_FOUND: no service web/);
});

test("service create: the spec file is the body; a failed start fails", async () => {
  const spec = { name: "web", mode: "service", exec: ["python3 -m http.server 8000"], env: { A: "b" } };
  const file = path.join(dir, "svc.json");
  writeFileSync(file, JSON.stringify(spec));
  reply = () => [200, { success: true, message: "service created and started", serviceName: "web.service" }];
  let r = await cli(["service", "create", ID, "--spec", file]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.out, "created web.service\n");
  assert.equal(requests.at(-1).method, "POST");
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/systemd/services`);
  assert.deepEqual(requests.at(-1).body, spec);
  r = await cli(["service", "create", ID, "--spec", "-"], { input: JSON.stringify(spec) });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(requests.at(-1).body, spec);

  reply = () => [200, { success: false, message: "Job failed: exit-code", serviceName: "web.service" }];
  r = await cli(["service", "create", ID, "--spec", file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /service create: Job failed: exit-code/);
  reply = ERR(409, "SERVICE_ALREADY_EXISTS", "exists");
  r = await cli(["service", "create", ID, "--spec", file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /SERVICE_ALREADY_EXISTS/);
  writeFileSync(file, "[1]");
  const before = requests.length;
  r = await cli(["service", "create", ID, "--spec", file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not a JSON object/);
  assert.equal(requests.length, before, "a bad spec is not sent");
});

test("service start/stop/restart: the batch body; any failure fails", async () => {
  for (const [verb, said] of [["start", "started"], ["stop", "stopped"], ["restart", "restarted"]]) {
    reply = (q) => [200, { results: q.body.services.map((s) => ({ serviceId: s.id, success: s.id !== "bad", message: s.id === "bad" ? "Unit bad.service not found." : "ok" })) }];
    let r = await cli(["service", verb, ID, "web", "worker"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.out, `${said} web\n${said} worker\n`);
    assert.equal(requests.at(-1).method, "POST");
    assert.equal(requests.at(-1).url, `/v1/vms/${ID}/systemd/${verb}`);
    assert.deepEqual(requests.at(-1).body, { services: [{ id: "web" }, { id: "worker" }] });
    r = await cli(["service", verb, ID, "web", "bad"]);
    assert.equal(r.code, 1);
    assert.equal(r.out, `${said} web\n`);
    assert.match(r.stderr, new RegExp(`service ${verb}: bad: Unit bad.service not found.`));
    r = await cli(["service", verb, ID, "bad", "--json"]);
    assert.equal(r.code, 1);
    assert.equal(JSON.parse(r.out).results[0].success, false);
  }
});

test("terminal list and logs (plain and --xterm)", async () => {
  reply = () => [200, { terminals: [{ name: "main", status: "running", created: null }] }];
  let r = await cli(["terminal", "list", ID]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/terminals`);
  assert.match(r.out, /^NAME\s+STATUS\s+CREATED\nmain\s+running\s+-\n$/);
  reply = () => [200, { logs: [{ line: "$ echo hi", timestamp: null }, { line: "hi", timestamp: null }] }];
  r = await cli(["terminal", "logs", ID, "main"]);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/terminals/main/logs`);
  assert.equal(r.out, "$ echo hi\nhi\n");
  reply = () => [200, { output: "\u001b[1mhi\u001b[0m\r\n" }];
  r = await cli(["terminal", "logs", ID, "my term", "--xterm"]);
  assert.equal(requests.at(-1).url, `/v1/vms/${ID}/terminals/my%20term/xterm-256color`);
  assert.equal(r.out, "\u001b[1mhi\u001b[0m\r\n");
  r = await cli(["terminal", "logs", ID, "main", "--xterm", "--json"]);
  assert.deepEqual(JSON.parse(r.out), { output: "\u001b[1mhi\u001b[0m\r\n" });
  reply = ERR(404, "TERMINAL_NOT_FOUND", "no terminal nope");
  r = await cli(["terminal", "logs", ID, "nope"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /TERMINAL_NOT_FOUND/);
});

test("long operations show elapsed seconds on a terminal's stderr, and only there", async (t) => {
  if (spawnSync("script", ["--version"]).status !== 0) return t.skip("no script(1) to give the CLI a terminal");
  reply = () => new Promise((resolve) => setTimeout(() => resolve([200, { vmId: ID, forks: [{ id: "f".repeat(20) }] }]), 2600));
  // script(1) runs the CLI on a pseudo-terminal; its stdout and stderr both
  // land in script's output. Not spawnSync: this process is the server.
  const q = (s) => `'${s.replace(/'/g, "'\\''")}'`;
  const child = spawn("script", ["-q", "-e", "-c", `${q(path.resolve(SPROUT_BIN))} vm fork ${ID}`, "/dev/null"],
    { env: { ...process.env, ...env() }, stdio: ["ignore", "pipe", "pipe"] });
  const chunks = [];
  child.stdout.on("data", (d) => chunks.push(d));
  child.stderr.on("data", (d) => chunks.push(d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const status = await new Promise((resolve) => child.on("close", resolve));
  clearTimeout(timer);
  const r = { status, stdout: Buffer.concat(chunks).toString(), stderr: "" };
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /vm fork: 1s elapsed/);
  assert.match(r.stdout, /vm fork: 2s elapsed/);
  assert.match(r.stdout, /f{20}/);
  // Not a terminal: nothing but the answer.
  const plain = await cli(["vm", "fork", ID]);
  assert.equal(plain.code, 0);
  assert.equal(plain.stderr, "");
  assert.equal(plain.out, `${"f".repeat(20)}\n`);
});

test("vm shell: only http:// server URLs, and a server that is not there is said so", async () => {
  let r = await runCli(["vm", "shell", "abc"], { env: { SPROUT_URL: "https://127.0.0.1:9", SPROUT_API_KEY: "k" }, timeoutMs: 20_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /needs an http:\/\/ server URL/);
  r = await runCli(["vm", "shell", "abc"], { env: { SPROUT_URL: "http://127.0.0.1:9/", SPROUT_API_KEY: "k" }, timeoutMs: 20_000 });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cannot connect to 127\.0\.0\.1 port 9/);
  r = await runCli(["vm", "shell"], { env: { SPROUT_URL: "http://127.0.0.1:9", SPROUT_API_KEY: "k" }, timeoutMs: 20_000 });
  assert.equal(r.code, 2, r.stderr);
});
