// End-to-end tests of the files API on one VM: binary and text round trips,
// files written inside the guest, directory listings, %2F-encoded paths,
// ".." resolved inside the guest (never on the host), and FILE_NOT_FOUND.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { after, test } from "node:test";
import {
  CREATE_TIMEOUT,
  VmTracker,
  api,
  decodeContent,
  enc,
  exec,
  expectError,
  filesPath,
  ok,
  rand,
  sha256,
  show,
} from "./lib.mjs";

const vms = new VmTracker();
const hostFiles = [];
after(async () => {
  for (const f of hostFiles) rmSync(f, { force: true });
  await vms.cleanup();
});

let vmId;
function needVm() {
  assert.ok(vmId, "no VM: the create test failed");
  return vmId;
}

const MiB = 1024 * 1024;

async function put(p, body) {
  const res = await api("PUT", filesPath(needVm(), p), { body });
  assert.equal(res.status, 200, show("PUT", p, res));
  return res.json;
}

async function get(p) {
  return ok("GET", filesPath(needVm(), p));
}

test("create a VM", { timeout: CREATE_TIMEOUT }, async () => {
  vmId = (await vms.create({ name: "e2e-files" })).id;
});

test("1 MiB random binary: PUT base64, GET byte-exact, same sha256 in the guest", { timeout: 120_000 }, async () => {
  const data = randomBytes(MiB);
  await put("/root/random.bin", { content: data.toString("base64"), encoding: "base64" });
  const back = decodeContent(await get("/root/random.bin"));
  assert.equal(back.length, data.length, "length");
  assert.ok(back.equals(data), "bytes differ");
  const r = await exec(needVm(), "sha256sum /root/random.bin; stat -c %s /root/random.bin");
  assert.equal(r.stdout, `${sha256(data)}  /root/random.bin\n${MiB}\n`);
});

test("1 MiB written in the guest reads back with the same sha256", { timeout: 120_000 }, async () => {
  const r = await exec(needVm(), "head -c 1048576 /dev/urandom > /root/g.bin && sha256sum /root/g.bin");
  assert.equal(r.statusCode, 0, JSON.stringify(r));
  const guestSum = r.stdout.split(/\s+/)[0];
  const back = decodeContent(await get("/root/g.bin"));
  assert.equal(back.length, MiB);
  assert.equal(sha256(back), guestSum);
});

test("every byte value survives the round trip", async () => {
  const data = Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256));
  await put("/root/bytes.bin", { content: data.toString("base64"), encoding: "base64" });
  assert.ok(decodeContent(await get("/root/bytes.bin")).equals(data));
});

test("text round trip with encoding utf8 and with no encoding", async () => {
  const text = "héllo wörld ✓ 世界 🌱\nline two\n";
  await put("/root/utf8.txt", { content: text, encoding: "utf8" });
  assert.equal(decodeContent(await get("/root/utf8.txt")).toString("utf8"), text);
  await put("/root/plain.txt", { content: "no encoding field\n" });
  assert.equal(decodeContent(await get("/root/plain.txt")).toString("utf8"), "no encoding field\n");
  const r = await exec(needVm(), "cat /root/utf8.txt");
  assert.equal(r.stdout, text, "the guest sees the same text");
});

test("a file written by the guest reads back as text", async () => {
  await exec(needVm(), "printf 'from the guest\\n' > /root/guest.txt");
  assert.equal(decodeContent(await get("/root/guest.txt")).toString(), "from the guest\n");
});

test("empty files and overwrites with shorter content", async () => {
  await put("/root/empty.txt", { content: "", encoding: "base64" });
  assert.equal(decodeContent(await get("/root/empty.txt")).length, 0);
  await put("/root/shrink.txt", { content: "a long first version of the file\n" });
  await put("/root/shrink.txt", { content: "short\n" });
  assert.equal(decodeContent(await get("/root/shrink.txt")).toString(), "short\n");
});

test("directory listing names files and directories with their kind", async () => {
  const id = needVm();
  const r = await exec(id, "rm -rf /root/d && mkdir -p /root/d/sub && echo a > /root/d/a.txt");
  assert.equal(r.statusCode, 0);
  await put("/root/d/b.bin", { content: Buffer.from([0, 1, 2]).toString("base64"), encoding: "base64" });
  const dir = await get("/root/d");
  assert.ok(Array.isArray(dir.files), `files array in ${JSON.stringify(dir)}`);
  const byName = Object.fromEntries(dir.files.map((f) => [f.name, f.kind]));
  assert.deepEqual(byName, { "a.txt": "file", "b.bin": "file", sub: "directory" });
  const slash = await get("/root/d/");
  assert.deepEqual(slash.files.map((f) => f.name).sort(), ["a.txt", "b.bin", "sub"]);
  const emptyDir = await get("/root/d/sub");
  assert.deepEqual(emptyDir.files, []);
});

test("paths arrive as one %2F-encoded segment, in either hex case", async () => {
  const id = needVm();
  await put("/root/enc test/ünï.txt", { content: "encoded\n" }).catch(async () => {
    // The parent may need to exist first; make it and retry.
    await exec(id, "mkdir -p '/root/enc test'");
    await put("/root/enc test/ünï.txt", { content: "encoded\n" });
  });
  const r = await exec(id, "cat '/root/enc test/ünï.txt'");
  assert.equal(r.stdout, "encoded\n");
  const upper = await ok("GET", `/v1/vms/${id}/files/%2Froot%2Fenc%20test%2F${enc("ünï.txt")}`);
  assert.equal(decodeContent(upper).toString(), "encoded\n");
  const lower = await ok("GET", `/v1/vms/${id}/files/%2froot%2fenc%20test%2f${enc("ünï.txt")}`);
  assert.equal(decodeContent(lower).toString(), "encoded\n");
});

test("'..' resolves inside the guest, never on the host", async () => {
  const id = needVm();
  const cat = await exec(id, "cat /etc/hostname");
  assert.equal(cat.stdout.trim(), id);
  const viaDots = decodeContent(await get("/tmp/../etc/hostname")).toString();
  assert.equal(viaDots, cat.stdout, "GET /tmp/../etc/hostname");
  const deep = decodeContent(await get("/root/../../../../../../etc/hostname")).toString();
  assert.equal(deep, cat.stdout, "GET with .. past the root");

  // A file that exists only on the host is not found in the guest.
  const hostOnly = `/tmp/sprout-host-only-${rand()}`;
  writeFileSync(hostOnly, "host secret\n");
  hostFiles.push(hostOnly);
  expectError(await api("GET", filesPath(id, hostOnly)), 404, "FILE_NOT_FOUND", `GET host-only ${hostOnly}`);
  expectError(
    await api("GET", filesPath(id, `/tmp/../..${hostOnly}`)),
    404,
    "FILE_NOT_FOUND",
    `GET host-only via ..`,
  );

  // A write through '..' lands in the guest and not on the host.
  const marker = `/tmp/sprout-guest-only-${rand()}`;
  hostFiles.push(marker);
  await put(`/root/..${marker}`, { content: "in the guest\n" });
  assert.equal(existsSync(marker), false, `${marker} appeared on the host`);
  const r = await exec(id, `cat ${marker}`);
  assert.equal(r.stdout, "in the guest\n");
});

test("symlinks resolve inside the guest", async () => {
  const id = needVm();
  const hostOnly = `/tmp/sprout-host-link-${rand()}`;
  writeFileSync(hostOnly, "host secret\n");
  hostFiles.push(hostOnly);
  const r = await exec(
    id,
    `echo guest-target > /tmp/link-target && ln -sfn /tmp/link-target /root/lnk && ` +
      `ln -sfn /etc /root/etc-link && ln -sfn ${hostOnly} /root/host-link`,
  );
  assert.equal(r.statusCode, 0, JSON.stringify(r));
  assert.equal(decodeContent(await get("/root/lnk")).toString(), "guest-target\n");
  assert.equal(decodeContent(await get("/root/etc-link/hostname")).toString().trim(), id);
  expectError(
    await api("GET", filesPath(id, "/root/host-link")),
    404,
    "FILE_NOT_FOUND",
    "GET a guest symlink to a host-only path",
  );
});

test("missing files are 404 FILE_NOT_FOUND", async () => {
  const id = needVm();
  expectError(await api("GET", filesPath(id, "/root/does-not-exist")), 404, "FILE_NOT_FOUND", "GET missing file");
  expectError(
    await api("GET", filesPath(id, "/no/such/dir/file")),
    404,
    "FILE_NOT_FOUND",
    "GET file in a missing directory",
  );
});

test("bad file bodies are 400", async () => {
  const id = needVm();
  for (const body of [{}, { content: 5 }, { content: "!!!not base64!!!", encoding: "base64" }]) {
    const res = await api("PUT", filesPath(id, "/root/bad.txt"), { body });
    expectError(res, 400, null, `PUT ${JSON.stringify(body)}`);
  }
});
