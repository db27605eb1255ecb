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
import { runCli } from "./lib.mjs";

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
      const [status, body] = reply(r);
      res.writeHead(status, { "content-type": "application/json" });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
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
