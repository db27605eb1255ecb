// HTTP-side benchmarks for `make bench`: create-to-first-exec (median of
// 5), exec `true` round trip (median and p90 of 50), 1 MiB file put and get.
// Compares against the raw restore baseline passed in $RAW (JSON from
// sprout-bench-raw) and prints one JSON line per measurement.
import { randomBytes } from "node:crypto";

const url = process.env.SPROUT_URL;
const key = process.env.SPROUT_API_KEY;
const raw = JSON.parse(process.env.RAW);

async function call(method, path, body) {
  const res = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const median = (v) => { const s = [...v].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const pct = (v, p) => { const s = [...v].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]; };
const r1 = (x) => Math.round(x * 10) / 10;
const r2 = (x) => Math.round(x * 100) / 100;
const out = (o) => console.log(JSON.stringify(o));

// create -> first exec
const createTimes = [];
let vm;
for (let i = 0; i < 5; i++) {
  const t0 = performance.now();
  const { id } = await call("POST", "/v1/vms", {});
  const r = await call("POST", `/v1/vms/${id}/exec-await`, { command: "true" });
  if (r.statusCode !== 0) throw new Error("exec true failed");
  createTimes.push(performance.now() - t0);
  if (i < 4) await call("DELETE", `/v1/vms/${id}`);
  else vm = id;
}
const c2e = median(createTimes);
out({ bench: "create_to_first_exec", runs: 5, median_ms: r1(c2e), raw_restore_to_first_exec_ms: raw.restore_to_first_exec_ms,
      raw_restore_to_first_answer_ms: raw.restore_to_first_answer_ms, ratio_vs_raw: r2(c2e / raw.restore_to_first_exec_ms),
      target_ratio: 1.2 });

// exec `true` round trip
const execTimes = [];
for (let i = 0; i < 50; i++) {
  const t0 = performance.now();
  await call("POST", `/v1/vms/${vm}/exec-await`, { command: "true" });
  execTimes.push(performance.now() - t0);
}
const em = median(execTimes);
out({ bench: "exec_true_round_trip", runs: 50, median_ms: r1(em), p90_ms: r1(pct(execTimes, 90)),
      guest_bash_true_ms: raw.guest_bash_true_ms, ratio_vs_guest: r2(em / raw.guest_bash_true_ms), target_ratio: 1.2 });

// 1 MiB file put and get
const data = randomBytes(1 << 20);
const puts = [], gets = [];
for (let i = 0; i < 5; i++) {
  let t0 = performance.now();
  await call("PUT", `/v1/vms/${vm}/files/${encodeURIComponent("/tmp/bench.bin")}`, { content: data.toString("base64"), encoding: "base64" });
  puts.push(performance.now() - t0);
  t0 = performance.now();
  const r = await call("GET", `/v1/vms/${vm}/files/${encodeURIComponent("/tmp/bench.bin")}`);
  gets.push(performance.now() - t0);
  if (!Buffer.from(r.content, r.encoding === "base64" ? "base64" : "utf8").equals(data)) throw new Error("file mismatch");
}
out({ bench: "file_put_1mib", runs: 5, median_ms: r1(median(puts)) });
out({ bench: "file_get_1mib", runs: 5, median_ms: r1(median(gets)) });
await call("DELETE", `/v1/vms/${vm}`);
