// End-to-end tests of the ingress proxy (sproutd --proxy-listen, which
// tests/run.sh starts and names in SPROUT_PROXY_URL): a small perl HTTP and
// WebSocket server inside VMs (the guest image has perl, not python),
// reached by Host header: <vmId>.vm.localhost for port 443's target,
// 8081-<vmId>.vm.localhost for 8081's, and custom domains. Routing, the
// errors (unknown host 404, no listener 502, stopped 503, bad request 400),
// X-Forwarded-*, keep-alive, Content-Length and chunked bodies streamed
// both ways, a WebSocket echo, concurrent clients, wake on request from
// suspended, traffic as activity for idleTimeoutSeconds, ports on create
// and fork, HTTPS on the same port (tests/run.sh gives sproutd a
// certificate and names it in SPROUT_PROXY_CA), a 1 GiB upload in bounded
// memory, and a guest that never answers (504 after
// --proxy-timeout-seconds).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { after, before, test } from "node:test";
import { ADMIN_KEY, BASE, CREATE_TIMEOUT, VmTracker, api, expectError, newAccount, ok, rand, runCli, sleep, vmState, waitState } from "./lib.mjs";

const PROXY = new URL(process.env.SPROUT_PROXY_URL ?? "http://127.0.0.1:8081");
const DOMAIN = "vm.localhost";
const CA = process.env.SPROUT_PROXY_CA ? readFileSync(process.env.SPROUT_PROXY_CA) : null;
const PROXY_TIMEOUT_S = +(process.env.SPROUT_PROXY_TIMEOUT_SECONDS ?? 60);
const vms = new VmTracker();
const TAG = rand(4);
after(() => vms.cleanup());

// The server in the VMs (tests/e2e/httpd.pl).
const SERVER = readFileSync(new URL("./httpd.pl", import.meta.url), "utf8");

// A create body: the server on each port, as systemd services.
function withServers(body, ...ports) {
  return {
    ...body,
    idleTimeoutSeconds: body.idleTimeoutSeconds ?? 0,
    additionalFiles: { "/srv/app.pl": { content: SERVER } },
    systemd: {
      services: ports.map((p) => ({ name: `app-${p}`, mode: "service", exec: [`/usr/bin/perl /srv/app.pl ${p} port-${p}`], enable: true })),
    },
  };
}

// One request through the proxy with Host set (over TLS when secure);
// {status, headers, body (Buffer)}.
function request(host, { method = "GET", path = "/", body, headers = {}, agent, timeoutMs = 120_000, secure = false } = {}) {
  return new Promise((resolve, reject) => {
    const req = (secure ? https : http).request(
      {
        host: PROXY.hostname, port: PROXY.port, method, path, agent, headers: { host, ...headers }, timeout: timeoutMs,
        ...(secure ? { ca: CA, servername: host.split(":")[0] } : {}),
      },
      (res) => {
        const parts = [];
        res.on("data", (d) => parts.push(d));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer from ${host}${path} within ${timeoutMs} ms`)));
    req.on("error", reject);
    if (Array.isArray(body)) {
      for (const part of body) req.write(part);
      req.end();
    } else {
      req.end(body);
    }
  });
}

// Raw bytes to the proxy; what comes back until it closes.
function raw(bytes, timeoutMs = 20_000) {
  return new Promise((resolve, reject) => {
    const s = net.connect(+PROXY.port, PROXY.hostname);
    const parts = [];
    s.setTimeout(timeoutMs, () => s.destroy(new Error("timeout")));
    s.on("connect", () => s.write(bytes));
    s.on("data", (d) => parts.push(d));
    s.on("end", () => resolve(Buffer.concat(parts).toString("latin1")));
    s.on("error", reject);
  });
}

// Waits until the server in the VM answers through the proxy.
async function serving(host, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    last = await request(host).catch((e) => ({ status: 0, body: Buffer.from(String(e)) }));
    if (last.status === 200) return last;
    await sleep(500);
  }
  assert.fail(`${host} did not serve within ${timeoutMs} ms: ${last?.status} ${last?.body}`);
}

let A; // {id}: 443 -> 3000 and 8081 -> 4000, both served
const hostA = () => `${A.id}.${DOMAIN}`;

before(async () => {
  A = await vms.create(withServers({ ports: [{ port: 443, targetPort: 3000 }, { port: 8081, targetPort: 4000 }] }, 3000, 4000));
});

test("a VM's ports by Host: <id>.domain and 8081-<id>.domain, with X-Forwarded-* and the :port browsers add", async () => {
  assert.deepEqual(A.domains, [`${A.id}.${DOMAIN}`, `8081-${A.id}.${DOMAIN}`]);
  const info = await ok("GET", `/v1/vms/${A.id}`);
  assert.deepEqual(info.domains, A.domains);
  const r = await serving(hostA());
  assert.equal(r.body.toString(), `hello from port-3000\nxff=127.0.0.1\nxfh=${hostA()}\nxfp=http\nGET /\n`);
  const withPort = await request(`${hostA()}:${PROXY.port}`, { path: "/p?q=1" });
  assert.equal(withPort.status, 200);
  assert.match(withPort.body.toString(), /^hello from port-3000\n.*\nxfh=.*:\d+\n.*\nGET \/p\?q=1\n$/s);
  const upper = await request(hostA().toUpperCase(), { headers: { "x-forwarded-for": "6.6.6.6" } });
  assert.match(upper.body.toString(), /xff=127\.0\.0\.1\n/, "a client's own X-Forwarded-For is replaced");
  const other = await serving(`8081-${A.id}.${DOMAIN}`);
  assert.match(other.body.toString(), /^hello from port-4000\n/);
});

test("ports: the default is 443 -> 3000, [] is none, and only 443 and 8081 can be exposed", async () => {
  const [def, none] = await Promise.all([vms.create(withServers({}, 3000)), vms.create(withServers({ ports: [] }, 3000))]);
  assert.deepEqual(def.domains, [`${def.id}.${DOMAIN}`]);
  assert.match((await serving(`${def.id}.${DOMAIN}`)).body.toString(), /^hello from port-3000/);
  assert.deepEqual(none.domains, []);
  const r = await request(`${none.id}.${DOMAIN}`);
  assert.equal(r.status, 404);
  assert.match(r.body.toString(), /no VM is served at/);
  const bad = await api("POST", "/v1/vms", { body: { ports: [{ port: 80, targetPort: 3000 }] } });
  expectError(bad, 400, "CREATE_VM_BAD_REQUEST");
  assert.match(bad.json.message, /only ports 443 and 8081/);
  expectError(await api("POST", "/v1/vms", { body: { ports: [{ port: 443, targetPort: 0 }] } }), 400, "CREATE_VM_BAD_REQUEST");
  expectError(await api("POST", "/v1/vms", { body: { ports: "443" } }), 400, "CREATE_VM_BAD_REQUEST");
});

test("what maps to nothing is 404, a port with no listener 502, a malformed request 400", async () => {
  for (const host of [`aaaaaaaaaaaaaaaaaaaa.${DOMAIN}`, `9999-${A.id}.${DOMAIN}`, "nothing.example.test", DOMAIN]) {
    const r = await request(host);
    assert.equal(r.status, 404, host);
    assert.match(r.body.toString(), /no VM is served at/);
  }
  await ok("POST", `/v1/vms/${A.id}/exec-await`, { body: { command: "systemctl stop app-4000" } });
  const r = await request(`8081-${A.id}.${DOMAIN}`);
  assert.equal(r.status, 502);
  assert.match(r.body.toString(), /nothing listens on port 4000/);
  await ok("POST", `/v1/vms/${A.id}/exec-await`, { body: { command: "systemctl start app-4000" } });
  await serving(`8081-${A.id}.${DOMAIN}`);
  assert.match(await raw("GARBAGE\r\n\r\n"), /^HTTP\/1\.1 400 /);
  assert.match(await raw("GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 400 [^]*Host/);
  assert.match(await raw(`GET / HTTP/1.1\r\nHost: ${hostA()}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n`), /^HTTP\/1\.1 400 /);
  assert.match(await raw("GET / HTTP/1.1\r\nHost: bad_host!\r\n\r\n"), /^HTTP\/1\.1 400 /);
  // A bare CR or a NUL in a head, read one way here and another by the server: 400.
  assert.match(await raw(`GET / HTTP/1.1\r\nHost: ${hostA()}\r\nX-A: a\rContent-Length: 5\r\n\r\n`), /^HTTP\/1\.1 400 /);
  assert.match(await raw(`GET /\0 HTTP/1.1\r\nHost: ${hostA()}\r\n\r\n`), /^HTTP\/1\.1 400 /);
  assert.match(await raw(`GET / HTTP/1.1\r\nHost: ${hostA()}\r\nX-Big: ${"a".repeat(20000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
});

test("bodies stream both ways: a 1 MiB POST and a chunked one come back byte for byte; keep-alive", async () => {
  const data = randomBytes(1 << 20);
  const r = await request(hostA(), { method: "POST", path: "/echo", body: data });
  assert.equal(r.status, 200);
  assert.ok(r.body.equals(data), "the 1 MiB body came back the same");
  const parts = [randomBytes(70_000), randomBytes(5), randomBytes(200_000)];
  const c = await request(hostA(), { method: "POST", path: "/echo", body: parts, headers: { "transfer-encoding": "chunked" } });
  assert.ok(c.body.equals(Buffer.concat(parts)), "the chunked body came back the same");
  const big = await request(hostA(), { path: `/bytes/${8 << 20}` });
  assert.equal(big.body.length, 8 << 20);
  // Several requests on one connection.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await request(hostA(), { path: `/k${i}`, agent })).body.toString());
  agent.destroy();
  assert.deepEqual(got.map((b) => b.split("\n")[4]), ["GET /k0", "GET /k1", "GET /k2"]);
});

// A WebSocket through the connected socket s: messages of three sizes echo.
async function wsEcho(s) {
  const key = randomBytes(16).toString("base64");
  let buf = Buffer.alloc(0);
  let failed, wake = () => {};
  s.on("data", (d) => { buf = Buffer.concat([buf, d]); wake(); });
  s.on("error", (e) => { failed = e; wake(); });
  s.on("close", () => { failed ??= new Error("the connection closed"); wake(); });
  // Resolves at the next data; rejects once the connection failed.
  const more = () => new Promise((resolve, reject) => {
    if (failed) return reject(failed);
    wake = () => (failed ? reject(failed) : resolve());
  });
  s.write(`GET /ws HTTP/1.1\r\nHost: ${hostA()}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  while (!buf.includes("\r\n\r\n")) await more();
  const head = buf.subarray(0, buf.indexOf("\r\n\r\n") + 4).toString();
  assert.match(head, /^HTTP\/1\.1 101 /);
  buf = buf.subarray(head.length);
  for (const size of [5, 300, 100_000]) {
    const payload = randomBytes(size), mask = randomBytes(4);
    const len = size < 126 ? Buffer.from([0x80 | size]) : size < 65536 ? Buffer.from([0x80 | 126, size >> 8, size & 255]) : Buffer.concat([Buffer.from([0x80 | 127]), Buffer.from(BigInt.asUintN(64, BigInt(size)).toString(16).padStart(16, "0"), "hex")]);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    s.write(Buffer.concat([Buffer.from([0x82]), len, mask, masked]));
    const hdr = size < 126 ? 2 : size < 65536 ? 4 : 10;
    while (buf.length < hdr + size) await more();
    assert.equal(buf[0], 0x82);
    assert.ok(buf.subarray(hdr, hdr + size).equals(payload), `a ${size}-byte message came back the same`);
    buf = buf.subarray(hdr + size);
  }
  s.destroy();
}

test("a WebSocket upgrade passes through: messages echo both ways", async () => {
  const s = net.connect(+PROXY.port, PROXY.hostname);
  await new Promise((r) => s.once("connect", r));
  await wsEcho(s);
});

test("TLS: the proxy port speaks HTTPS too, with X-Forwarded-Proto https, bodies, keep-alive and WebSockets", async () => {
  assert.ok(CA, "tests/run.sh gives sproutd a certificate and names it in SPROUT_PROXY_CA");
  const r = await request(hostA(), { secure: true, path: "/tls" });
  assert.equal(r.status, 200);
  assert.equal(r.body.toString(), `hello from port-3000\nxff=127.0.0.1\nxfh=${hostA()}\nxfp=https\nGET /tls\n`);
  const data = randomBytes(1 << 20);
  const e = await request(hostA(), { secure: true, method: "POST", path: "/echo", body: data });
  assert.ok(e.body.equals(data), "the 1 MiB body came back the same over TLS");
  const big = await request(hostA(), { secure: true, path: `/bytes/${8 << 20}` });
  assert.equal(big.body.length, 8 << 20);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await request(hostA(), { secure: true, path: `/k${i}`, agent })).body.toString());
  agent.destroy();
  assert.deepEqual(got.map((b) => b.split("\n")[4]), ["GET /k0", "GET /k1", "GET /k2"]);
  const missing = await request(`nothing-here.${DOMAIN}`, { secure: true });
  assert.equal(missing.status, 404);
  const s = tls.connect({ host: PROXY.hostname, port: +PROXY.port, ca: CA, servername: hostA() });
  await new Promise((resolve, reject) => { s.once("secureConnect", resolve); s.once("error", reject); });
  assert.equal(s.alpnProtocol, false, "no ALPN asked, none chosen");
  await wsEcho(s);
  // A handshake that is garbage ends that connection, and only it.
  const bad = await raw(Buffer.concat([Buffer.from([0x16, 3, 1, 0xff, 0xff]), randomBytes(20)]));
  assert.ok(!bad.startsWith("HTTP/"), "garbage after a TLS record header gets no HTTP answer");
  assert.equal((await request(hostA(), { secure: true })).status, 200);
});

// sproutd's resident memory (kB), found by the proxy port on its command line.
function sproutdRss() {
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (cmd[0].endsWith("sproutd") && cmd.includes(`${PROXY.hostname}:${PROXY.port}`))
        return +readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)[1];
    } catch {}
  }
  assert.fail(`no sproutd serves the proxy on ${PROXY.host}`);
}

test("a 1 GiB upload streams through in bounded memory", async () => {
  const before = sproutdRss();
  let peak = before;
  const sample = setInterval(() => { peak = Math.max(peak, sproutdRss()); }, 200);
  const total = 1 << 30, chunk = randomBytes(1 << 20);
  try {
    const r = await new Promise((resolve, reject) => {
      const req = http.request(
        { host: PROXY.hostname, port: PROXY.port, method: "POST", path: "/discard", headers: { host: hostA(), "content-length": total } },
        (res) => {
          const parts = [];
          res.on("data", (d) => parts.push(d));
          res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(parts).toString() }));
        },
      );
      req.on("error", reject);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) return req.once("drain", pump);
        }
        req.end();
      };
      pump();
    });
    assert.equal(r.status, 200);
    assert.equal(r.body, `n=${total}\n`);
  } finally {
    clearInterval(sample);
  }
  assert.ok(peak - before < 64 * 1024, `sproutd grew by ${peak - before} kB while 1 GiB went through (from ${before} kB)`);
});

test("a VM that never answers gets 504 after --proxy-timeout-seconds, and the proxy still serves", async () => {
  const t0 = Date.now();
  const r = await request(hostA(), { path: "/hang", timeoutMs: (PROXY_TIMEOUT_S + 60) * 1000 });
  const s = (Date.now() - t0) / 1000;
  assert.equal(r.status, 504);
  assert.match(r.body.toString(), /did not answer within/);
  assert.ok(s >= PROXY_TIMEOUT_S - 1 && s < PROXY_TIMEOUT_S + 30, `504 after ${s} s with a ${PROXY_TIMEOUT_S} s timeout`);
  assert.equal((await request(hostA())).status, 200);
});

test("20 clients at once are all answered", async () => {
  const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => request(hostA(), { path: `/c${i}` })));
  rs.forEach((r, i) => {
    assert.equal(r.status, 200);
    assert.match(r.body.toString(), new RegExp(`GET /c${i}\\n$`));
  });
});

test("1,000 idle connections (keep-alive, and a head cut short) do not hold up a new request", async () => {
  const socks = [];
  try {
    for (let i = 0; i < 1000; i++) {
      const s = net.connect(+PROXY.port, PROXY.hostname);
      s.on("error", () => {});
      if (i % 2) s.write(`GET / HTTP/1.1\r\nHost: ${hostA()}\r\n`); // never finished
      socks.push(s);
    }
    await Promise.all(socks.map((s) => (s.connecting ? new Promise((r) => s.once("connect", r)) : null)));
    const t0 = Date.now();
    const r = await request(hostA(), { path: "/while-busy", timeoutMs: 30_000 });
    assert.equal(r.status, 200);
    assert.ok(Date.now() - t0 < 10_000, `answered in ${Date.now() - t0} ms`);
  } finally {
    for (const s of socks) s.destroy();
  }
});

test("a request wakes a suspended VM and is answered; a stopped VM is 503", async () => {
  const B = await vms.create(withServers({}, 3000));
  const host = `${B.id}.${DOMAIN}`;
  await serving(host);
  await ok("POST", `/v1/vms/${B.id}/suspend`, { timeoutMs: CREATE_TIMEOUT });
  assert.equal(await vmState(B.id), "suspended");
  const r = await request(host, { path: "/woken" });
  assert.equal(r.status, 200);
  assert.match(r.body.toString(), /GET \/woken\n$/);
  assert.equal(await vmState(B.id), "running");
  await ok("POST", `/v1/vms/${B.id}/stop`, { timeoutMs: CREATE_TIMEOUT });
  const s = await request(host);
  assert.equal(s.status, 503);
  assert.match(s.body.toString(), /stopped/);
  // A deleted VM's host maps to nothing.
  await ok("DELETE", `/v1/vms/${B.id}`);
  vms.forget(B.id);
  assert.equal((await request(host)).status, 404);
});

test("traffic through the proxy keeps a VM from idling out; without it, it suspends", async () => {
  const C = await vms.create(withServers({ idleTimeoutSeconds: 6 }, 3000));
  const host = `${C.id}.${DOMAIN}`;
  await serving(host);
  for (let t = 0; t < 8; t++) {
    assert.equal((await request(host)).status, 200);
    await sleep(2000);
  }
  assert.equal(await vmState(C.id), "running", "in use for 16 s, past its 6 s idle timeout");
  await waitState(C.id, ["suspended"], { timeoutMs: 60_000 });
});

test("custom domains: mapped at create to a VM port; another account cannot take one (409)", async () => {
  const domain = `app-${TAG}.example.test`;
  const D = await vms.create(withServers({ ports: [], domains: [{ domain, vmPort: 3000 }] }, 3000));
  assert.deepEqual(D.domains, [domain]);
  const r = await serving(domain.toUpperCase());
  assert.match(r.body.toString(), /^hello from port-3000/);
  const other = await newAccount(`ingress-${TAG}`);
  const taken = await api("POST", "/v1/vms", { body: { domains: [{ domain }] }, key: other.key, timeoutMs: CREATE_TIMEOUT });
  expectError(taken, 409, "DOMAIN_ALREADY_MAPPED");
  const own = await api("POST", "/v1/vms", { body: { domains: [{ domain: `x.${DOMAIN}` }] } });
  expectError(own, 400, "CREATE_VM_BAD_REQUEST");
  expectError(await api("POST", "/v1/vms", { body: { domains: [{ domain: "no spaces.example" }] } }), 400, "CREATE_VM_BAD_REQUEST");
});

test("a fork has its parent's ports, and serves its own copy of the server", async () => {
  const f = await ok("POST", `/v1/vms/${A.id}/fork`, { body: { count: 1 }, timeoutMs: CREATE_TIMEOUT });
  const id = f.forks[0].id;
  vms.track(id);
  assert.deepEqual(f.forks[0].domains, [`${id}.${DOMAIN}`, `8081-${id}.${DOMAIN}`]);
  const r = await serving(`${id}.${DOMAIN}`);
  assert.match(r.body.toString(), /^hello from port-3000/);
});

test("CLI: vm create --port and vm url", async () => {
  const env = { SPROUT_URL: BASE, SPROUT_API_KEY: ADMIN_KEY };
  const c = await runCli(["vm", "create", "--port", "8081:3000"], { env });
  assert.equal(c.code, 0, c.stderr);
  const id = c.out.trim();
  vms.track(id);
  const u = await runCli(["vm", "url", id], { env: { ...env, SPROUT_PROXY_URL: PROXY.origin } });
  assert.equal(u.code, 0, u.stderr);
  assert.equal(u.out, `http://8081-${id}.${DOMAIN}:${PROXY.port}/\n`);
  const bad = await runCli(["vm", "create", "--port", "443"], { env });
  assert.equal(bad.code, 2);
});
