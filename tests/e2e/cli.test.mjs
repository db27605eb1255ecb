// End-to-end tests of the `sprout` CLI (build/sprout) against the running
// sproutd: keys create, the vm commands (exit codes propagate) and the file
// commands with human and --json output. One VM, owned by a key the CLI mints.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { ADMIN_KEY, BASE, CREATE_TIMEOUT, VmTracker, runCli } from "./lib.mjs";

const vms = new VmTracker();
let dir;
let key; // a non-admin key for a fresh account, minted by `sprout keys create`
let vmId;

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "sprout-cli-e2e-"));
});
after(async () => {
  await vms.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const asAdmin = { SPROUT_URL: BASE, SPROUT_API_KEY: ADMIN_KEY };
const cli = (args, opts = {}) => runCli(args, { env: { SPROUT_URL: BASE, SPROUT_API_KEY: key }, ...opts });

function needVm() {
  assert.ok(vmId, "no VM: vm create failed");
  return vmId;
}

function okRun(r, what) {
  assert.equal(r.code, 0, `${what}: exit ${r.code} ${r.signal ?? ""}\nstdout: ${r.out.slice(0, 300)}\nstderr: ${r.stderr}`);
  return r;
}

test("keys create prints the new key alone on its last line", async () => {
  const account = `cli-e2e-${randomBytes(3).toString("hex")}`;
  const r = okRun(await runCli(["keys", "create", "--account", account], { env: asAdmin }), "keys create");
  const lines = r.out.trimEnd().split("\n");
  key = lines.at(-1);
  assert.match(key, /^\S+$/, `last line: ${JSON.stringify(key)}`);
  assert.notEqual(key, ADMIN_KEY);
  const j = okRun(await runCli(["keys", "create", "--account", account, "--json"], { env: asAdmin }), "keys --json");
  const body = JSON.parse(j.out);
  assert.equal(body.account, account);
  assert.equal(typeof body.key, "string");
});

test("keys create with a non-admin key fails with FORBIDDEN", async () => {
  assert.ok(key, "no key");
  const r = await cli(["keys", "create"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /FORBIDDEN/);
});

test("vm create prints the id", { timeout: CREATE_TIMEOUT }, async () => {
  assert.ok(key, "no key");
  const r = okRun(await cli(["vm", "create", "--name", "cli-vm"]), "vm create");
  vmId = r.out.trim();
  assert.match(vmId, /^[a-z0-9]{20}$/);
  vms.track(vmId, key);
});

test("vm list shows the VM, human and --json", async () => {
  const id = needVm();
  const human = okRun(await cli(["vm", "list"]), "vm list");
  const row = human.out.split("\n").find((l) => l.startsWith(id));
  assert.ok(row, `row for ${id} in:\n${human.out}`);
  assert.match(row, /cli-vm/);
  assert.match(row, /running/);
  const json = JSON.parse(okRun(await cli(["vm", "list", "--json"]), "vm list --json").out);
  assert.deepEqual(json.vms.map((v) => v.id), [id]);
  assert.equal(json.totalCount, 1);
  const filtered = JSON.parse(okRun(await cli(["vm", "list", "--state", "stopped", "--json"]), "list stopped").out);
  assert.equal(filtered.vms.length, 0);
  const paged = JSON.parse(okRun(await cli(["vm", "list", "--limit", "1", "--offset", "1", "--json"]), "list").out);
  assert.equal(paged.vms.length, 0);
});

test("vm get shows the VM, human and --json", async () => {
  const id = needVm();
  const human = okRun(await cli(["vm", "get", id]), "vm get");
  assert.match(human.out, new RegExp(`^id\\s+${id}$`, "m"));
  assert.match(human.out, /^state\s+running$/m);
  const json = JSON.parse(okRun(await cli(["vm", "get", id, "--json"]), "vm get --json").out);
  assert.equal(json.id, id);
});

test("vm exec: output streams and exit codes propagate", async () => {
  const id = needVm();
  const hi = okRun(await cli(["vm", "exec", id, "--", "echo", "hi"]), "exec echo hi");
  assert.equal(hi.out, "hi\n");
  assert.equal(hi.stderr, "");

  const fail = await cli(["vm", "exec", id, "echo out; echo oops >&2; exit 7"]);
  assert.equal(fail.code, 7, fail.stderr);
  assert.equal(fail.out, "out\n");
  assert.equal(fail.stderr, "oops\n");

  // Several words are an argv: each is quoted for the guest shell.
  const quoted = okRun(await cli(["vm", "exec", id, "--", "printf", "%s\\n", "a b", "c'd", "$HOME"]), "exec argv");
  assert.equal(quoted.out, "a b\nc'd\n$HOME\n");

  const json = await cli(["vm", "exec", id, "--json", "--", "sh", "-c", "echo j; exit 3"]);
  assert.equal(json.code, 3);
  const body = JSON.parse(json.out);
  assert.equal(body.stdout, "j\n");
  assert.equal(body.statusCode, 3);
});

test("vm exec --timeout fails quickly with exit 124", async () => {
  const id = needVm();
  const t0 = Date.now();
  const r = await cli(["vm", "exec", id, "--timeout", "1000", "--", "sleep", "60"]);
  assert.equal(r.code, 124, r.stderr);
  assert.match(r.stderr, /EXEC_TIMED_OUT/);
  assert.ok(Date.now() - t0 < 20000);
});

test("file put/get round trip: binary file, stdin, -o, --json", { timeout: 120_000 }, async () => {
  const id = needVm();
  const data = randomBytes(200 * 1024);
  const src = path.join(dir, "src.bin");
  writeFileSync(src, data);

  const put = okRun(await cli(["file", "put", id, "/root/cli.bin", src]), "file put");
  assert.match(put.out, /wrote 204800 bytes to \/root\/cli\.bin/);

  const stdout = okRun(await cli(["file", "get", id, "/root/cli.bin"]), "file get");
  assert.ok(stdout.stdout.equals(data), "stdout bytes differ");

  const out = path.join(dir, "out.bin");
  okRun(await cli(["file", "get", id, "/root/cli.bin", "-o", out]), "file get -o");
  assert.ok(readFileSync(out).equals(data), "-o file bytes differ");

  const json = JSON.parse(okRun(await cli(["file", "get", id, "/root/cli.bin", "--json"]), "file get --json").out);
  assert.ok(Buffer.from(json.content, json.encoding === "base64" ? "base64" : "utf8").equals(data));

  okRun(await cli(["file", "put", id, "/root/stdin.txt", "-"], { input: "from stdin\n" }), "file put -");
  const text = okRun(await cli(["file", "get", id, "/root/stdin.txt"]), "file get text");
  assert.equal(text.out, "from stdin\n");

  const putJson = okRun(await cli(["file", "put", id, "/root/j.txt", "--json"], { input: "x" }), "put --json");
  assert.equal(typeof JSON.parse(putJson.out), "object");

  const ls = okRun(await cli(["file", "get", id, "/root"]), "file get dir");
  const names = ls.out.split("\n");
  assert.ok(names.includes("cli.bin"), ls.out);
  assert.ok(names.includes("stdin.txt"), ls.out);

  const missing = await cli(["file", "get", id, "/root/nope"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /FILE_NOT_FOUND/);
});

test("errors: unknown VM, bad key, usage", async () => {
  const r = await cli(["vm", "get", "zzzzzzzzzzzzzzzzzzzz"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /VM_NOT_FOUND/);
  const bad = await runCli(["vm", "list"], { env: { SPROUT_URL: BASE, SPROUT_API_KEY: "nope" } });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /UNAUTHORIZED/);
  const usage = await cli(["vm", "exec"]);
  assert.equal(usage.code, 2);
});

test("vm delete, then get fails", async () => {
  const id = needVm();
  const r = okRun(await cli(["vm", "delete", id]), "vm delete");
  assert.equal(r.out, `deleted ${id}\n`);
  vms.forget(id);
  const gone = await cli(["vm", "get", id]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /VM_NOT_FOUND/);
});
