// The cost of confinement for `make bench`: create-to-first-exec (median of
// 7) and exec `true` round trip (median of 30) on a confined sproutd
// ($SPROUT_URL) and on an unconfined one ($UNCONFINED_URL), measured in the
// same run, plus the per-VM setup of uid, cgroup and network namespace as
// the confined daemon logged it ($SPROUT_LOG). One JSON line.
import { readFileSync } from "node:fs";
import { client, median, r1, r2 } from "./lib.mjs";

// One create-to-first-exec on each side per round, alternating, so that
// drift on a busy machine (the other daemon's snapshot still being written
// back, say) falls on both sides alike.
async function createOnce(call, state) {
  const t0 = performance.now();
  const { id } = await call("POST", "/v1/vms", { idleTimeoutSeconds: 0 });
  await call("POST", `/v1/vms/${id}/exec-await`, { command: "true" });
  state.creates.push(performance.now() - t0);
  if (state.last) await call("DELETE", `/v1/vms/${state.last}`);
  state.last = id;
}

async function execOnce(call, state) {
  const t0 = performance.now();
  await call("POST", `/v1/vms/${state.last}/exec-await`, { command: "true" });
  state.execs.push(performance.now() - t0);
}

const key = process.env.SPROUT_API_KEY;
const sides = [process.env.SPROUT_URL, process.env.UNCONFINED_URL].map((url) => ({ call: client(url, key), creates: [], execs: [], last: null }));
for (let i = 0; i < 7; i++) for (const s of i % 2 ? [...sides].reverse() : sides) await createOnce(s.call, s);
for (let i = 0; i < 30; i++) for (const s of sides) await execOnce(s.call, s);
for (const s of sides) await s.call("DELETE", `/v1/vms/${s.last}`);
const [confined, unconfined] = sides.map((s) => ({ create: median(s.creates), exec: median(s.execs) }));
const setups = [...readFileSync(process.env.SPROUT_LOG, "utf8").matchAll(/confined in (\d+) ms/g)].map((m) => Number(m[1]));
console.log(JSON.stringify({
  bench: "confinement_cost",
  confined_create_to_first_exec_ms: r1(confined.create),
  unconfined_create_to_first_exec_ms: r1(unconfined.create),
  create_ratio: r2(confined.create / unconfined.create),
  confined_exec_round_trip_ms: r1(confined.exec),
  unconfined_exec_round_trip_ms: r1(unconfined.exec),
  exec_ratio: r2(confined.exec / unconfined.exec),
  jail_setup_median_ms: setups.length ? median(setups) : null,
  jail_setup_runs: setups.length,
  target_create_added: 0.1,
}));
