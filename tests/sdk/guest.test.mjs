// The official SDK (freestyle-sandboxes 0.1.46, unmodified) against sproutd
// for what runs inside the VM: systemd services, terminals, watchFiles and
// vm.user(). One VM, deleted by after().
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { Freestyle, VmSpec } from "freestyle-sandboxes";

const baseUrl = process.env.SPROUT_URL ?? process.env.FREESTYLE_API_URL ?? "http://127.0.0.1:8080";
const apiKey = process.env.SPROUT_API_KEY ?? process.env.FREESTYLE_API_KEY;
// watchFiles hands the SDK's fetch a path without the base URL; a fetch
// that resolves it is the SDK's own extension point for this.
const freestyle = new Freestyle({ baseUrl, apiKey, fetch: (u, o) => fetch(new URL(u, baseUrl), o) });

let vm;
after(async () => {
  if (vm) await vm.delete().catch((e) => console.error(`# cleanup: ${e}`));
});

test("systemd through the SDK: create, list, status, logs, stop, delete", { timeout: 5 * 60_000 }, async () => {
  ({ vm } = await freestyle.vms.create());
  const res = await vm.systemd.create({ name: "hello", mode: "service", exec: ["while true; do echo hello-sdk; sleep 0.5; done"] });
  assert.equal(res.success, true, JSON.stringify(res));
  const list = await vm.systemd.list();
  assert.ok(list.services.some((s) => s.name === "hello"));
  const st = await vm.systemd.getStatus({ serviceId: "hello" });
  assert.equal(st.activeState, "active");
  await new Promise((r) => setTimeout(r, 1200));
  const logs = await vm.systemd.getLogs({ serviceId: "hello", lines: 3 });
  assert.ok(logs.logs.some((l) => l.message === "hello-sdk"), JSON.stringify(logs));
  const stop = await vm.systemd.stop({ services: [{ id: "hello" }] });
  assert.equal(stop.results[0].success, true);
  await vm.systemd.delete({ serviceId: "hello" });
  await assert.rejects(vm.systemd.getStatus({ serviceId: "hello" }), (e) => /SERVICE_NOT_FOUND/.test(`${e.code ?? ""} ${e.message}`));
});

test("terminals through the SDK: exec in a named terminal keeps state; list and logs", async () => {
  await vm.exec({ command: "cd /tmp; Y=sdk", terminal: "t1" });
  const r = await vm.exec({ command: "pwd; echo $Y", terminal: "t1" });
  assert.equal(r.stdout, "/tmp\nsdk\n");
  const list = await vm.terminals.list();
  assert.ok(list.terminals.some((t) => t.name === "t1"));
  const logs = await vm.terminals.getLogs({ terminalId: "t1" });
  assert.ok(logs.logs.some((l) => l.line === "sdk"));
  const out = await vm.terminals.getOutput({ terminalId: "t1" });
  assert.match(out.output, /sdk/);
});

test("watchFiles through the SDK yields events for files changed in the VM", async () => {
  const it = vm.fs.watchFiles();
  const first = it.next();
  await new Promise((r) => setTimeout(r, 1000));
  await vm.exec("echo x > /root/watched.txt");
  const { value } = await first;
  assert.equal(value.path, "/root/watched.txt");
  assert.equal(value.kind, "created");
  await it.return();
});

test("vm.user() runs exec and file writes as that Linux user", async () => {
  await vm.exec("useradd -m dana");
  const dana = vm.user({ username: "dana" });
  assert.equal((await dana.exec("whoami")).stdout, "dana\n");
  await dana.fs.writeTextFile("/home/dana/x.txt", "mine");
  assert.equal((await vm.exec("stat -c %U /home/dana/x.txt")).stdout, "dana\n");
  assert.equal(await dana.fs.readTextFile("/home/dana/x.txt"), "mine");
});

// VmSpec.runCommands sends a chain of oneshot services, each requiring the
// one before and each removing itself after success (deleteAfterSuccess).
test("VmSpec.runCommands through the SDK: the commands run once, in order, and their units go", { timeout: 5 * 60_000 }, async () => {
  const { vm: v } = await freestyle.vms.create(new VmSpec().runCommands(
    "echo one >> /root/steps", "echo two >> /root/steps", "echo three >> /root/steps"));
  try {
    let steps = "";
    for (let i = 0; i < 60 && steps !== "one\ntwo\nthree\n"; i++) {
      await new Promise((r) => setTimeout(r, 500));
      steps = (await v.exec("cat /root/steps 2>/dev/null")).stdout;
    }
    assert.equal(steps, "one\ntwo\nthree\n");
    let left;
    for (let i = 0; i < 30; i++) {
      left = (await v.systemd.list()).services.map((s) => s.name);
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.deepEqual(left, []);
  } finally {
    await v.delete();
  }
});
