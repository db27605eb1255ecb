// What the warm pools buy, for `make bench`: run against a sproutd with its
// pools ($POOL=on) and with none ($POOL=off), the same
// three measurements: create -> first exec, fork into 4 -> all exec, and a
// create from a cached template (a spec built once) -> first exec. Each
// create waits a moment first, so a pool that refills between requests
// (as it does under light use) has the chance to. One JSON line each.
import { client, median, out, r1, sleep } from "./lib.mjs";

const call = client(process.env.SPROUT_URL, process.env.SPROUT_API_KEY);
const pool = process.env.POOL ?? "on";
const health = async () => (await (await fetch(`${process.env.SPROUT_URL}/healthz`)).json()).warmPool;

const mine = new Set();
async function del(id) {
  await call("DELETE", `/v1/vms/${id}`);
  mine.delete(id);
}
async function exec(id) {
  const r = await call("POST", `/v1/vms/${id}/exec-await`, { command: "true" });
  if (r.statusCode !== 0) throw new Error(`exec true on ${id}: ${JSON.stringify(r)}`);
}
async function createToExec(body) {
  const t0 = performance.now();
  const { id } = await call("POST", "/v1/vms", body);
  mine.add(id);
  await exec(id);
  return { id, ms: performance.now() - t0 };
}
// Waits up to 60 s for the pools to hold n VMs (no-op without them).
async function settle(n = 1) {
  for (let i = 0; pool === "on" && i < 300 && (await health()).vms < n; i++) await sleep(200);
  await sleep(1500);
}

try {
  const runs = async (n, fn, pooled = 1) => {
    const times = [];
    const h = (await health()).hits;
    for (let i = 0; i < n; i++) {
      await settle(pooled);
      times.push(await fn());
    }
    return { times, hits: (await health()).hits - h };
  };

  let r = await runs(5, async () => {
    const { id, ms } = await createToExec({});
    await del(id);
    return ms;
  });
  out({ bench: "pool_compare_create_to_first_exec", pool, runs: 5, median_ms: r1(median(r.times)), runs_ms: r.times.map(r1), pool_hits: r.hits });

  const { id: parent } = await createToExec({});
  r = await runs(3, async () => {
    const t0 = performance.now();
    const f = await call("POST", `/v1/vms/${parent}/fork`, { count: 4 });
    const ids = f.forks.map((x) => x.id);
    ids.forEach((id) => mine.add(id));
    await Promise.all(ids.map(exec));
    const ms = performance.now() - t0;
    for (const id of ids) await del(id);
    return ms;
  });
  await del(parent);
  out({ bench: "pool_compare_fork_into_4_to_all_exec", pool, runs: 3, median_ms: r1(median(r.times)), runs_ms: r.times.map(r1),
        note: "a fork restores from a layer made at that moment: no pool can hold it" });

  const spec = {
    discriminator: `bench-pool-${pool}-${Date.now()}`,
    systemd: { services: [{ name: "freestyle-run-command-1", mode: "oneshot", deleteAfterSuccess: true,
                            exec: ["/bin/sh -c 'echo built > /root/built'"] }] },
  };
  const { snapshotId } = await call("POST", "/v1/vms/snapshots", { spec });
  // The default snapshot's 2 pooled VMs and the template's own.
  r = await runs(5, async () => {
    const { id, ms } = await createToExec({ template: spec });
    await del(id);
    return ms;
  }, 3);
  out({ bench: "pool_compare_create_from_cached_template_to_first_exec", pool, runs: 5, median_ms: r1(median(r.times)),
        runs_ms: r.times.map(r1), pool_hits: r.hits,
        note: "the template's snapshot was used a moment ago, so it gets a pooled VM of its own (with the pool on)" });
  await call("DELETE", `/v1/vms/snapshots/${snapshotId}`);
} finally {
  for (const id of [...mine]) await del(id).catch((e) => console.error(`cleanup: ${e.message}`));
}
