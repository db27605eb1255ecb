// Runs the official Freestyle TypeScript SDK (freestyle-sandboxes 0.1.46,
// unmodified) against sproutd: SPROUT_URL / SPROUT_API_KEY (or the
// FREESTYLE_* equivalents). One VM, deleted at the end (or by after()).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, test } from "node:test";
import { Errors, Freestyle } from "freestyle-sandboxes";

const baseUrl = process.env.SPROUT_URL ?? process.env.FREESTYLE_API_URL ?? "http://127.0.0.1:8080";
const apiKey = process.env.SPROUT_API_KEY ?? process.env.FREESTYLE_API_KEY;
const freestyle = new Freestyle({ baseUrl, apiKey });

let vm;
let vmId;
let deleted = false;

after(async () => {
  if (vm && !deleted) await vm.delete().catch((e) => console.error(`# cleanup: ${e}`));
});

function needVm() {
  assert.ok(vm, "no VM: vms.create failed");
  return vm;
}

test("the client needs an API key", () => {
  const saved = process.env.FREESTYLE_API_KEY;
  delete process.env.FREESTYLE_API_KEY;
  try {
    assert.throws(() => new Freestyle({ baseUrl }), /API key is required/);
  } finally {
    if (saved !== undefined) process.env.FREESTYLE_API_KEY = saved;
  }
});

test("vms.create returns a usable vm and its id", { timeout: 5 * 60_000 }, async () => {
  const t0 = Date.now();
  const res = await freestyle.vms.create();
  console.log(`# vms.create took ${Date.now() - t0} ms`);
  assert.match(res.vmId, /^[a-z0-9]{20}$/);
  assert.equal(res.vm.vmId, res.vmId);
  assert.ok(Array.isArray(res.domains));
  vm = res.vm;
  vmId = res.vmId;
});

test("vm.exec runs a shell command", async () => {
  const r = await needVm().exec("echo hello");
  assert.equal(r.stdout, "hello\n");
  assert.equal(r.statusCode, 0);
  const f = await needVm().exec({ command: "echo bad >&2; exit 4" });
  assert.equal(f.stderr, "bad\n");
  assert.equal(f.statusCode, 4);
});

test("vm.exec with timeoutMs rejects with EXEC_TIMED_OUT", async () => {
  // The SDK has no class for this code; errorFromJSON yields a plain Error naming it.
  await assert.rejects(needVm().exec({ command: "sleep 60", timeoutMs: 1000 }), /EXEC_TIMED_OUT/);
});

test("vm.fs text and binary round trips", async () => {
  const fs = needVm().fs;
  const text = "hello from the SDK ✓\nsecond line\n";
  await fs.writeTextFile("/root/sdk/hello.txt", text).catch(async () => {
    // Whether PUT creates parent directories is the server's choice; make it.
    await fs.mkdir("/root/sdk", true);
    await fs.writeTextFile("/root/sdk/hello.txt", text);
  });
  assert.equal(await fs.readTextFile("/root/sdk/hello.txt"), text);
  const data = randomBytes(64 * 1024);
  await fs.writeFile("/root/sdk/data.bin", data);
  assert.ok((await fs.readFile("/root/sdk/data.bin")).equals(data), "binary bytes differ");
});

test("vm.fs.readDir lists files with their kind", async () => {
  const fs = needVm().fs;
  await fs.mkdir("/root/sdk/subdir", true);
  const entries = await fs.readDir("/root/sdk");
  const byName = Object.fromEntries(entries.map((e) => [e.name, e.kind]));
  assert.equal(byName["hello.txt"], "file");
  assert.equal(byName["data.bin"], "file");
  assert.equal(byName.subdir, "directory");
});

test("vm.fs.mkdir, exists, stat and remove run through exec", async () => {
  const fs = needVm().fs;
  await fs.mkdir("/root/sdk/a/b/c", true);
  assert.equal(await fs.exists("/root/sdk/a/b/c"), true);
  assert.equal(await fs.exists("/root/sdk/nope"), false);
  await assert.rejects(fs.mkdir("/root/sdk/x/y/z", false), /Failed to create directory/);
  const dir = await fs.stat("/root/sdk/a/b/c");
  assert.equal(dir.isDirectory, true);
  assert.equal(dir.isFile, false);
  const file = await fs.stat("/root/sdk/hello.txt");
  assert.equal(file.isFile, true);
  assert.equal(file.size, Buffer.byteLength("hello from the SDK ✓\nsecond line\n"));
  assert.equal(file.owner, "root");
  await fs.remove("/root/sdk/a", true);
  assert.equal(await fs.exists("/root/sdk/a"), false);
});

test("errors are mapped to the SDK's classes", async () => {
  const fs = needVm().fs;
  await assert.rejects(fs.readTextFile("/root/sdk/missing.txt"), (e) => {
    assert.ok(e instanceof Errors.FileNotFoundError, `${e?.name}: ${e?.message}`);
    assert.match(e.message, /^FILE_NOT_FOUND: /);
    return true;
  });
  await assert.rejects(freestyle.vms.ref({ vmId: "zzzzzzzzzzzzzzzzzzzz" }).getInfo(), (e) => {
    assert.ok(e instanceof Errors.VmNotFoundError, `${e?.name}: ${e?.message}`);
    return true;
  });
  const bad = new Freestyle({ baseUrl, apiKey: "not-a-key" });
  await assert.rejects(bad.vms.list(), (e) => {
    assert.ok(e instanceof Errors.UnauthorizedError, `${e?.name}: ${e?.message}`);
    return true;
  });
});

test("vm.user runs exec and files as that Linux user", async () => {
  const nobody = needVm().user({ username: "nobody" });
  const r = await nobody.exec("id -un");
  assert.equal(r.stdout, "nobody\n");
  await nobody.fs.writeTextFile("/tmp/sdk-nobody.txt", "mine\n");
  const owner = await needVm().exec("stat -c %U /tmp/sdk-nobody.txt");
  assert.equal(owner.stdout, "nobody\n");
  assert.equal(await nobody.fs.readTextFile("/tmp/sdk-nobody.txt"), "mine\n");
  // root's home is closed to nobody.
  await assert.rejects(nobody.fs.writeTextFile("/root/sdk-nobody.txt", "no\n"));
});

test("vm.getInfo and vms.list", async () => {
  const info = await needVm().getInfo();
  assert.equal(info.id, vmId);
  assert.equal(info.state, "running");
  const list = await freestyle.vms.list();
  assert.ok(list.vms.some((v) => v.id === vmId), "listed");
  assert.ok(list.totalCount >= 1);
  const got = await freestyle.vms.get({ vmId });
  assert.equal((await got.vm.getInfo()).id, vmId);
});

test("vm.delete; then the VM is gone", async () => {
  const res = await needVm().delete();
  deleted = true;
  assert.equal(res.id, vmId);
  await assert.rejects(needVm().getInfo(), (e) => e instanceof Errors.VmNotFoundError);
  const list = await freestyle.vms.list();
  assert.ok(!list.vms.some((v) => v.id === vmId), "not listed after delete");
});
