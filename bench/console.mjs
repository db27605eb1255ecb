// The web console's load, for `make bench`: the page at / with its
// libraries, in Debian's Chromium (headless, puppeteer-core from
// tests/browser), cold and then from the browser's cache, to "load" and
// to the sign-in form shown. Target: under 1 s on loopback. One JSON line.
import { createRequire } from "node:module";
import { median, out, r1 } from "./lib.mjs";

const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
const puppeteer = require("puppeteer-core");
const url = `${process.env.SPROUT_URL}/`;
const browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", headless: true,
                                         args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
try {
  const page = await browser.newPage();
  let bytes = 0;
  page.on("response", async (r) => { bytes += (await r.buffer().catch(() => Buffer.alloc(0))).length; });
  const times = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await page.goto(url, { waitUntil: "load" });
    await page.waitForSelector("#signin:not([hidden])");
    times.push(performance.now() - t0);
  }
  out({ bench: "console_page_load", runs: 5, first_ms: r1(times[0]), median_ms: r1(median(times)), bytes_first_load: bytes,
        target_ms: 1000, note: "to the sign-in form shown; the first load is cold, the others may use the browser's cache" });
} finally {
  await browser.close();
}
