// The web console in a real browser: Debian's Chromium, headless, driven
// by puppeteer-core. A wrong key gets a clear message; with the right one
// the console lists VMs, creates one and shows it running; on its page
// the terminal runs what is typed, the stats plot receives points, a file
// uploaded through the page reads back through the API; deleting the VM
// makes it go from the list; the snapshots page lists the snapshots and
// builds the API lists, and a build shows its phases. Screenshots go to $SPROUT_SCREENSHOTS
// (build/test-logs) as dashboard-*.png.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import puppeteer from "puppeteer-core";

const BASE = (process.env.SPROUT_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const KEY = process.env.SPROUT_API_KEY;
const SHOTS = process.env.SPROUT_SCREENSHOTS ?? path.resolve("build/test-logs");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
mkdirSync(SHOTS, { recursive: true });

let browser, page, vmId;
const shot = (name) => page.screenshot({ path: path.join(SHOTS, `dashboard-${name}.png`), fullPage: true });
const api = async (method, p, body) => {
  const res = await fetch(BASE + p, { method, headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" }, body: body && JSON.stringify(body) });
  return { status: res.status, json: await res.json().catch(() => null) };
};

before(async () => {
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  page.on("dialog", (d) => d.accept()); // confirmations of destructive actions
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
});

after(async () => {
  if (vmId) await api("DELETE", `/v1/vms/${vmId}`).catch(() => {});
  await browser?.close();
});

test("the page loads from sproutd itself, with its libraries", async () => {
  const t0 = Date.now();
  const res = await page.goto(`${BASE}/`, { waitUntil: "load" });
  const ms = Date.now() - t0;
  assert.equal(res.status(), 200);
  console.log(`# the console loaded in ${ms} ms`);
  assert.equal(await page.evaluate(() => typeof Terminal === "function" && typeof uPlot === "function"), true);
  await page.waitForSelector("#signin:not([hidden])");
});

test("a wrong key shows a clear message", async () => {
  await page.type("#key", "sk-not-a-real-key");
  await page.click("#signin-form button");
  await page.waitForSelector("#signin-error:not([hidden])");
  const msg = await page.$eval("#signin-error", (e) => e.textContent);
  assert.match(msg, /refused/);
  await shot("1-wrong-key");
});

test("sign in, create a VM and see it listed as running", async () => {
  await page.$eval("#key", (e) => (e.value = ""));
  await page.type("#key", KEY);
  await page.click("#signin-form button");
  await page.waitForSelector("#create-vm");
  await page.click("#create-vm");
  await page.waitForFunction(() => /created (\w+)/.test(document.getElementById("create-status").textContent), { timeout: 300_000 });
  vmId = (await page.$eval("#create-status", (e) => e.textContent)).match(/created (\w+)/)[1];
  await page.waitForSelector(`tr[data-id="${vmId}"][data-state="running"]`, { timeout: 60_000 });
  await shot("2-vm-list");
});

test("the VM's terminal runs what is typed, and its stats plot gets points", async () => {
  await page.click(`tr[data-id="${vmId}"] a`);
  await page.waitForSelector("#terminal .xterm");
  // The shell's prompt first: the WebSocket is up.
  await page.waitForFunction(() => {
    const b = window.sproutTerm?.buffer.active;
    if (!b) return false;
    for (let i = 0; i < b.length; i++) if (/[#$] ?$/.test(b.getLine(i)?.translateToString(true) ?? "")) return true;
    return false;
  }, { timeout: 60_000 });
  await page.click("#terminal");
  await page.keyboard.type("echo dash-$RANDOM\n");
  // The output line: dash- and digits alone (the echoed command has $RANDOM).
  await page.waitForFunction(() => {
    const b = window.sproutTerm.buffer.active;
    for (let i = 0; i < b.length; i++) if (/^dash-\d+$/.test(b.getLine(i)?.translateToString(true).trim() ?? "")) return true;
    return false;
  }, { timeout: 60_000 });
  await page.waitForFunction(() => (window.sproutPlot?.data[0]?.length ?? 0) >= 3, { timeout: 60_000 });
  await shot("3-vm-page");
});

test("a file uploaded through the page reads back through the API", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "sprout-dash-"));
  const name = `upload-${Date.now()}.txt`;
  const content = `uploaded from the browser ${Math.random()}\n`;
  writeFileSync(path.join(dir, name), content);
  const input = await page.$("#file-upload");
  await input.uploadFile(path.join(dir, name));
  await page.waitForSelector(`#files tr[data-name="${name}"]`, { timeout: 30_000 });
  const r = await api("GET", `/v1/vms/${vmId}/files/${encodeURIComponent(`/root/${name}`)}`);
  assert.equal(r.status, 200);
  assert.equal(r.json.encoding === "base64" ? Buffer.from(r.json.content, "base64").toString() : r.json.content, content);
  await shot("4-file-uploaded");
});

test("deleting the VM makes it go from the list", async () => {
  await page.click('#view button[data-action="delete"]');
  await page.waitForFunction(() => location.hash === "#/vms");
  await page.waitForFunction((id) => !document.querySelector(`tr[data-id="${id}"]`) && document.querySelector("#view tbody tr"), { timeout: 30_000 }, vmId);
  assert.equal((await api("GET", `/v1/vms/${vmId}`)).status, 404);
  vmId = null;
  await shot("5-after-delete");
});

test("the snapshots page lists what the API lists, builds too, and a build shows its phases", async () => {
  const { snapshots } = (await api("GET", "/v1/vms/snapshots")).json;
  const { builds } = (await api("GET", "/v1/vms/builds")).json;
  await page.goto(`${BASE}/#/snapshots`);
  await page.waitForFunction(() => document.querySelector("#builds tr"), { timeout: 30_000 });
  for (const sn of snapshots) await page.waitForSelector(`tr[data-id="${sn.snapshotId}"]`, { timeout: 10_000 });
  if (!builds.length) {
    assert.match(await page.$eval("#builds", (e) => e.textContent), /No builds yet/);
    return;
  }
  for (const b of builds) await page.waitForSelector(`#builds tr[data-id="${b.buildId}"]`, { timeout: 10_000 });
  await shot("6-snapshots-builds");
  const b = builds[0];
  const { phases } = (await api("GET", `/v1/vms/builds/${b.buildId}/phases`)).json;
  await page.click(`#builds tr[data-id="${b.buildId}"] a`);
  await page.waitForSelector("#timeline");
  assert.equal(await page.$$eval("#timeline span", (e) => e.length), phases.length);
  assert.deepEqual(await page.$$eval("tr.phase td:first-child", (e) => e.map((x) => x.textContent)), phases.map((p) => p.name));
  await shot("7-build");
});
