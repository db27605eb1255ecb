// Templates and builds through the official SDK (freestyle-sandboxes
// 0.1.46, unmodified): VmSpec with runCommands and .snapshot() (built once,
// then from the cache), a two-layer chain whose inner layer is reused,
// VmTemplate, snapshots.ensure, and a failing command's error. Every VM and
// snapshot made is deleted at the end.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, test } from "node:test";
import { Freestyle, VmBaseImage, VmSpec, VmTemplate } from "freestyle-sandboxes";

const baseUrl = process.env.SPROUT_URL ?? process.env.FREESTYLE_API_URL ?? "http://127.0.0.1:8080";
const apiKey = process.env.SPROUT_API_KEY ?? process.env.FREESTYLE_API_KEY;
const freestyle = new Freestyle({ baseUrl, apiKey });
const TAG = randomBytes(4).toString("hex");
const LONG = { timeout: 10 * 60_000 };

const vms = [];
const snapshots = new Set();
after(async () => {
  for (const vm of vms) await vm.delete().catch(() => {});
  for (const snapshotId of snapshots) await freestyle.vms.snapshots.delete({ snapshotId }).catch(() => {});
});

async function create(opts) {
  const res = await freestyle.vms.create(opts);
  vms.push(res.vm);
  return res;
}

async function snapshotOf(vmId) {
  const r = await fetch(`${baseUrl}/v1/vms/${vmId}`, { headers: { authorization: `Bearer ${apiKey}` } });
  const info = await r.json();
  if (info.snapshotId) snapshots.add(info.snapshotId);
  return info;
}

test("a VmSpec with runCommands and .snapshot() is built once, then comes from the cache", LONG, async () => {
  const spec = () =>
    new VmSpec()
      .discriminator(`sdk-${TAG}`)
      .runCommands(`echo sdk-${TAG} > /root/one.txt`, "cp /root/one.txt /root/two.txt")
      .snapshot();
  const t0 = Date.now();
  const a = await create({ spec: spec() });
  const first = Date.now() - t0;
  const r = await a.vm.exec("cat /root/two.txt");
  assert.equal(r.stdout, `sdk-${TAG}\n`);
  const infoA = await snapshotOf(a.vmId);
  assert.match(infoA.snapshotId, /^sc-/);
  const t1 = Date.now();
  const b = await create({ spec: spec() });
  const second = Date.now() - t1;
  const infoB = await snapshotOf(b.vmId);
  assert.equal(infoB.snapshotId, infoA.snapshotId, "the second VM comes from the cached snapshot");
  console.log(`# first create ${first} ms (build), second ${second} ms (cached)`);
  assert.equal((await b.vm.exec("cat /root/one.txt")).stdout, `sdk-${TAG}\n`);
});

test("a two-layer chain: a new outer layer reuses the inner one", LONG, async () => {
  const inner = () => new VmSpec().discriminator(`inner-${TAG}`).runCommands("echo inner > /root/inner.txt").snapshot();
  const a = await create({ spec: inner().runCommands("echo outer-a > /root/outer.txt").snapshot() });
  const b = await create({ spec: inner().runCommands("echo outer-b > /root/outer.txt").snapshot() });
  assert.equal((await b.vm.exec("cat /root/inner.txt /root/outer.txt")).stdout, "inner\nouter-b\n");
  assert.equal((await a.vm.exec("cat /root/outer.txt")).stdout, "outer-a\n");
  const infoA = await snapshotOf(a.vmId);
  const infoB = await snapshotOf(b.vmId);
  assert.notEqual(infoA.snapshotId, infoB.snapshotId);
  // The inner layer was built once: the second build's first phase is a hit.
  const build = await fetch(`${baseUrl}/v1/vms/${b.vmId}/build`, { headers: { authorization: `Bearer ${apiKey}` } });
  assert.equal(build.status, 200);
});

test("a VmTemplate and snapshots.ensure", LONG, async () => {
  const template = new VmTemplate({
    discriminator: `tpl-${TAG}`,
    additionalFiles: { "/root/from-template.txt": { content: "templated" } },
  });
  const ensured = await freestyle.vms.snapshots.ensure({ template });
  assert.match(ensured.snapshotId, /^sc-/);
  snapshots.add(ensured.snapshotId);
  const again = await freestyle.vms.snapshots.ensure({
    template: new VmTemplate({
      discriminator: `tpl-${TAG}`,
      additionalFiles: { "/root/from-template.txt": { content: "templated" } },
    }),
  });
  assert.equal(again.snapshotId, ensured.snapshotId);
  const vm = await create({ template });
  assert.equal((await vm.vm.exec("cat /root/from-template.txt")).stdout, "templated");
  const bySnapshot = await create({ snapshotId: ensured.snapshotId });
  assert.equal((await bySnapshot.vm.exec("cat /root/from-template.txt")).stdout, "templated");
  // ensure({snapshot}) sends an empty second layer on the first: no new build.
  const viaSpec = await freestyle.vms.snapshots.ensure({
    snapshot: new VmSpec().discriminator(`ens-${TAG}`).runCommands("echo e > /root/e.txt"),
  });
  snapshots.add(viaSpec.snapshotId);
  const viaSpec2 = await freestyle.vms.snapshots.ensure({
    snapshot: new VmSpec().discriminator(`ens-${TAG}`).runCommands("echo e > /root/e.txt"),
  });
  assert.equal(viaSpec2.snapshotId, viaSpec.snapshotId);
});

test("a failing command fails the create with the SDK's BUILD_FAILED error naming it", LONG, async () => {
  const spec = new VmSpec().discriminator(`fail-${TAG}`).runCommands("echo doomed-step; exit 7").snapshot();
  await assert.rejects(create({ spec }), (e) => {
    assert.match(String(e.message), /BUILD_FAILED/);
    assert.match(String(e.message), /freestyle-run-command-1/);
    assert.match(String(e.message), /doomed-step/);
    return true;
  });
});

test("a VmBaseImage from debian:bookworm-slim with runCommands (heredoc RUN lines)", LONG, async () => {
  const spec = new VmSpec()
    .baseImage(new VmBaseImage("FROM debian:bookworm-slim").runCommands(`echo base-${TAG} > /root/base.txt`, "echo second >> /root/base.txt"))
    .runCommands("cat /root/base.txt > /root/copy.txt")
    .snapshot();
  const a = await create({ spec });
  assert.equal((await a.vm.exec("cat /root/copy.txt")).stdout, `base-${TAG}\nsecond\n`);
  await snapshotOf(a.vmId);
});
