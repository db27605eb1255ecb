// End-to-end tests of the interactive terminal over a WebSocket
// (GET /v1/vms/{vm_id}/terminals/{terminal_id}/ws): a shell at the size
// asked, typed input, resizes, a terminal that outlives its connection
// and gives its scrollback to the next, the exit status at the end, an
// ephemeral one that ends with its connection, the browser's way of
// sending the key, and what it refuses.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { VmTracker, enc, newAccount, ok, rand, sleep } from "./lib.mjs";
import net from "node:net";
import { randomBytes } from "node:crypto";
import { WS_OPCODES, frame, wsOpen } from "./ws.mjs";

const vms = new VmTracker();
after(() => vms.cleanup());
let vm;
before(async () => {
  vm = await vms.create({});
});

const wsPath = (id, name, query = "") => `/v1/vms/${enc(id)}/terminals/${enc(name)}/ws${query}`;

test("a shell at the size asked: input, a resize, and the exit status at the end", async () => {
  const { status, ws } = await wsOpen(wsPath(vm.id, "t1", "?rows=30&cols=100"));
  assert.equal(status, 101);
  ws.type("stty size; echo ws-$((6*7))\r");
  await ws.until(() => ws.output.includes("ws-42"), 30_000, "ws-42");
  assert.match(ws.output, /30 100/);
  ws.resize(40, 120);
  await sleep(300);
  ws.type("stty size\r");
  await ws.until(() => /40 120/.test(ws.output), 30_000, "the new size");
  // The terminal outlives the connection; the next one gets its scrollback.
  ws.close();
  await ws.until(() => ws.ended, 10_000, "the close");
  const terms = await ok("GET", `/v1/vms/${vm.id}/terminals`);
  assert.ok(terms.terminals.some((t) => t.name === "t1"), JSON.stringify(terms));
  const again = (await wsOpen(wsPath(vm.id, "t1"))).ws;
  await again.until(() => again.output.includes("ws-42"), 30_000, "the scrollback");
  again.type("exit 3\r");
  await again.until(() => again.messages.length > 0 && again.ended, 30_000, "the exit");
  assert.deepEqual(again.messages.at(-1), { type: "exit", code: 3 });
  assert.equal(again.closeCode, 1000);
});

test("an ephemeral terminal ends with its connection, even a shell that ignores SIGHUP", async () => {
  for (const [name, setup] of [["e1", ""], ["e2", "trap '' HUP; "]]) {
    const { ws } = await wsOpen(wsPath(vm.id, name, "?ephemeral=1"));
    ws.type(`${setup}echo here-$((1+1))\r`);
    await ws.until(() => ws.output.includes("here-2"), 30_000, "here-2");
    ws.destroy();
    let names = [];
    for (let i = 0; i < 75; i++) {
      names = (await ok("GET", `/v1/vms/${vm.id}/terminals`)).terminals.map((t) => t.name);
      if (!names.includes(name)) break;
      await sleep(200);
    }
    assert.ok(!names.includes(name), `${name} still listed: ${names}`);
  }
});

test("a browser's key as the subprotocol bearer.KEY; the server names sprout-terminal", async () => {
  const key = process.env.SPROUT_API_KEY;
  const { status, headers, ws } = await wsOpen(wsPath(vm.id, "b1", "?ephemeral=1"), { protocols: ["sprout-terminal", `bearer.${key}`] });
  assert.equal(status, 101);
  assert.equal(headers["sec-websocket-protocol"], "sprout-terminal");
  ws.type("echo browser-$((2+3))\r");
  await ws.until(() => ws.output.includes("browser-5"), 30_000, "browser-5");
  ws.close();
});

test("refused: no key, a wrong key, another account's VM, no upgrade, bad names and sizes", async () => {
  const expect = async (res, status, code) => {
    assert.equal(res.status, status, JSON.stringify(res));
    if (code) assert.equal(res.json?.code, code, JSON.stringify(res.json));
  };
  await expect(await wsOpen(wsPath(vm.id, "x"), { key: null }), 401, "UNAUTHORIZED");
  await expect(await wsOpen(wsPath(vm.id, "x"), { key: `sk-wrong-${rand()}` }), 401, "UNAUTHORIZED");
  await expect(await wsOpen(wsPath(vm.id, "x"), { protocols: ["sprout-terminal", "bearer.sk-nope"] }), 401);
  const other = await newAccount(`e2e-ws-${rand(3)}`);
  await expect(await wsOpen(wsPath(vm.id, "x"), { key: other.key }), 404, "VM_NOT_FOUND");
  await expect(await wsOpen(wsPath("nosuchvm000000000000", "x")), 404, "VM_NOT_FOUND");
  const plain = await fetch(`${process.env.SPROUT_URL}${wsPath(vm.id, "x")}`, { headers: { authorization: `Bearer ${process.env.SPROUT_API_KEY}` } });
  assert.equal(plain.status, 426);
  assert.equal((await plain.json()).code, "UPGRADE_REQUIRED");
  await expect(await wsOpen(wsPath(vm.id, "bad%20name")), 400);
  await expect(await wsOpen(wsPath(vm.id, "x", "?rows=10")), 400);
  await expect(await wsOpen(wsPath(vm.id, "x", "?rows=0&cols=10")), 400);
  await expect(await wsOpen(wsPath(vm.id, "x", "?ephemeral=yes")), 400);
});

test("hostile frames close the connection; the daemon and the VM go on", async () => {
  // An unmasked client frame: protocol error.
  let { ws } = await wsOpen(wsPath(vm.id, "h1", "?ephemeral=1"));
  ws.raw(frame(WS_OPCODES.BINARY, "echo x\r", { mask: false }));
  await ws.until(() => ws.ended, 10_000, "the close");
  assert.equal(ws.closeCode, 1002);
  // A frame announcing 2 GiB: too big.
  ({ ws } = await wsOpen(wsPath(vm.id, "h2", "?ephemeral=1")));
  ws.raw(Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0, 1, 2, 3, 4]));
  await ws.until(() => ws.ended, 10_000, "the close");
  assert.equal(ws.closeCode, 1009);
  // Junk controls and a flood of input are taken without harm.
  ({ ws } = await wsOpen(wsPath(vm.id, "h3", "?ephemeral=1")));
  ws.raw(frame(WS_OPCODES.TEXT, "{not json"));
  ws.raw(frame(WS_OPCODES.TEXT, JSON.stringify({ type: "resize", rows: 1e9, cols: -1 })));
  ws.type("x".repeat(200_000));
  ws.type("\x03\rEcho-after-$((3*3))\recho after-$((3*3))\r");
  await ws.until(() => ws.output.includes("after-9"), 60_000, "after-9");
  ws.destroy();
  const r = await ok("POST", `/v1/vms/${vm.id}/exec-await`, { body: { command: "echo alive" } });
  assert.equal(r.stdout.trim(), "alive");
});

test("a guest flooding its terminal: the connection carries it, and the terminal still answers", async () => {
  const { ws } = await wsOpen(wsPath(vm.id, "flood", "?ephemeral=1"));
  ws.type("head -c 6000000 /dev/urandom | base64 -w 0; echo; echo flood-$((5*5))\r");
  await ws.until(() => ws.output.includes("flood-25"), 240_000, "flood-25 after 8 MB of output");
  assert.ok(ws.output.length > 1_000_000, `output received: ${ws.output.length} bytes`);
  ws.type("echo still-$((2*4))\r");
  await ws.until(() => ws.output.includes("still-8"), 30_000, "still-8");
  ws.destroy();
  assert.equal((await fetch(`${process.env.SPROUT_URL}/healthz`)).status, 200);
});

test("clients that leave in the middle of the upgrade hold nothing: no terminal, no long-request slot", async () => {
  // More than the account's 32 long requests, each gone before or as its
  // 101 is sent.
  const url = new URL(process.env.SPROUT_URL);
  await Promise.all(Array.from({ length: 40 }, (_, i) => new Promise((resolve) => {
    const sock = net.connect(Number(url.port), url.hostname, () => {
      sock.write([`GET ${wsPath(vm.id, `gone${i}`, "?ephemeral=1")} HTTP/1.1`, `Host: ${url.host}`, "Upgrade: websocket",
        "Connection: Upgrade", `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`, "Sec-WebSocket-Version: 13",
        `Authorization: Bearer ${process.env.SPROUT_API_KEY}`, "", ""].join("\r\n"));
      if (i % 2) sock.destroy(); else setTimeout(() => sock.destroy(), 20);
    });
    sock.on("close", resolve);
    sock.on("error", resolve);
  })));
  let names = [];
  for (let i = 0; i < 75; i++) {
    names = (await ok("GET", `/v1/vms/${vm.id}/terminals`)).terminals.map((t) => t.name).filter((n) => n.startsWith("gone"));
    if (!names.length) break;
    await sleep(200);
  }
  assert.deepEqual(names, [], "ephemeral terminals of clients that left");
  const { status, ws } = await wsOpen(wsPath(vm.id, "after", "?ephemeral=1"));
  assert.equal(status, 101, "the account still has its long-request slots");
  ws.type("echo after-$((3+3))\r");
  await ws.until(() => ws.output.includes("after-6"), 30_000, "after-6");
  ws.destroy();
});

