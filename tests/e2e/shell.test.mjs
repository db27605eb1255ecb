// `sprout vm shell ID` on a pseudo-terminal (util-linux's `script` gives it
// one): a command typed runs in the VM, the terminal's size reaches the
// shell, and the shell's exit status is the command's own; --terminal
// attaches to a persistent terminal that the next shell finds again.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { SPROUT_BIN, VmTracker, ok, sleep } from "./lib.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());
let vm;
before(async () => {
  vm = await vms.create({});
});

// Runs `sprout ARGS` under `script` (a pty of rows x cols), typing each of
// inputs once the output so far matches its `after`; resolves to {code,
// output}.
function onPty(args, inputs, { rows = 30, cols = 100, killAfter } = {}) {
  const cmd = [SPROUT_BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
  const child = spawn("script", ["-q", "-e", "-c", `stty rows ${rows} cols ${cols}; exec ${cmd}`, "/dev/null"], {
    env: { ...process.env, TERM: "xterm" },
  });
  let output = "";
  const pending = [...inputs];
  const feed = () => {
    while (pending.length && pending[0].after.test(output)) child.stdin.write(pending.shift().text);
  };
  child.stdout.on("data", (d) => {
    output += d.toString();
    feed();
    if (killAfter?.test(output)) child.kill("SIGTERM");
  });
  child.stderr.on("data", (d) => { output += d.toString(); });
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  return new Promise((resolve) => child.on("close", (code) => {
    clearTimeout(timer);
    resolve({ code, output, left: pending.length });
  }));
}

test("vm shell: a typed command runs in the VM, the size is the terminal's, the exit status passes through", async () => {
  const r = await onPty(["vm", "shell", vm.id], [
    { after: /[#$] $/m, text: "stty size; echo shell-$((6*7)); hostname\r" },
    { after: /shell-42/, text: "exit 5\r" },
  ]);
  assert.equal(r.left, 0, `not every input was typed: ${r.output}`);
  assert.match(r.output, /30 100/);
  assert.match(r.output, /shell-42/);
  assert.ok(r.output.includes(vm.id), "hostname is the VM id");
  assert.equal(r.code, 5, r.output);
  // Ephemeral: nothing is left in the VM.
  await sleep(500);
  const names = (await ok("GET", `/v1/vms/${vm.id}/terminals`)).terminals.map((t) => t.name);
  assert.ok(!names.some((n) => n.startsWith("shell-")), `left behind: ${names}`);
});

test("vm shell --terminal NAME: a persistent terminal the next shell finds again", async () => {
  // The local side ends (SIGTERM) once the variable is set: a detach.
  const first = await onPty(["vm", "shell", vm.id, "--terminal", "keep"], [
    { after: /[#$] $/m, text: "export MARK=persist-$((3+4)); echo set-$((1+1))\r" },
  ], { killAfter: /set-2/ });
  assert.ok(first.output.includes("set-2"), first.output);
  const names = (await ok("GET", `/v1/vms/${vm.id}/terminals`)).terminals.map((t) => t.name);
  assert.ok(names.includes("keep"), `the terminal went: ${names}`);
  const second = await onPty(["vm", "shell", vm.id, "--terminal", "keep"], [
    { after: /[#$] $/m, text: "echo got-$MARK; exit 0\r" },
  ]);
  assert.match(second.output, /got-persist-7/);
  assert.equal(second.code, 0);
});

test("vm shell refuses a VM it cannot see, with the server's error", async () => {
  const r = await onPty(["vm", "shell", "nosuchvm000000000000"], []);
  assert.notEqual(r.code, 0);
  assert.match(r.output, /VM_NOT_FOUND|not found/i);
});
