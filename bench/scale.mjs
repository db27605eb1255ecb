// Cost at scale, for `make bench`: creates (create -> first exec, 4 clients
// at once) on an empty host, then with 24 VMs running; the CPU an idle VM
// costs (its QEMU's user+system time over 30 s, and the host's) and what
// the creates wrote (dirty page cache, sectors written). Prints one JSON
// line per measurement. Needs $SPROUT_URL, $SPROUT_API_KEY, $SPROUT_DATA;
// $SCALE_VMS sets the VMs running (default 24). Every VM made is deleted.
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { client, median, out, pct, r1, r2, sleep } from "./lib.mjs";

const url = process.env.SPROUT_URL;
const key = process.env.SPROUT_API_KEY;
const data = process.env.SPROUT_DATA;
const running = Number(process.env.SCALE_VMS || 24);
const CLIENTS = 4;
const HZ = 100; // USER_HZ: the unit of /proc/PID/stat's times

const call = client(url, key);
const pool = async () => (await (await fetch(`${url}/healthz`)).json()).warmPool;

const mine = new Set();
async function del(id) {
  await call("DELETE", `/v1/vms/${id}`);
  mine.delete(id);
}
async function createToExec() {
  const t0 = performance.now();
  const { id } = await call("POST", "/v1/vms", {});
  mine.add(id);
  const r = await call("POST", `/v1/vms/${id}/exec-await`, { command: "true" });
  if (r.statusCode !== 0) throw new Error(`exec true on ${id}: ${JSON.stringify(r)}`);
  return { id, ms: performance.now() - t0 };
}
// n creates by CLIENTS clients at once; keep: leave the VMs running.
async function creates(n, keep) {
  const times = [];
  let next = 0;
  const h = (await pool()).hits;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (next < n) {
      next++;
      const { id, ms } = await createToExec();
      times.push(ms);
      if (!keep) await del(id);
    }
  }));
  return { times, hits: (await pool()).hits - h };
}

// The QEMU processes of the VMs in data/vms (pooled ones included), by pid.
function qemus() {
  const pids = [];
  for (const d of existsSync(`${data}/vms`) ? readdirSync(`${data}/vms`) : []) {
    try {
      const pid = Number(readFileSync(`${data}/vms/${d}/qemu.pid`, "utf8").trim());
      if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`${data}/vms/${d}`)) pids.push(pid);
    } catch {}
  }
  return pids;
}
const ticks = (pid) => {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]); // utime + stime
  } catch { return null; }
};
const hostCpu = () => readFileSync("/proc/stat", "utf8").split("\n")[0].split(/\s+/).slice(1).map(Number);
const meminfo = (f) => Number(readFileSync("/proc/meminfo", "utf8").match(new RegExp(`^${f}:\\s+(\\d+)`, "m"))[1]) / 1024;
// Sectors written to the block devices (whole disks, not partitions).
function sectorsWritten() {
  let s = 0;
  for (const l of readFileSync("/proc/diskstats", "utf8").trim().split("\n")) {
    const f = l.trim().split(/\s+/);
    if (existsSync(`/sys/block/${f[2]}`) && !f[2].startsWith("loop")) s += Number(f[9]);
  }
  return s;
}

try {
  // Empty host (the pool's own VMs aside).
  const w0 = sectorsWritten();
  const empty = await creates(8, false);
  const emptyWritten = (sectorsWritten() - w0) * 512;
  out({ bench: "creates_empty_host", clients: CLIENTS, creates: 8, pool_hits: empty.hits, median_ms: r1(median(empty.times)),
        p90_ms: r1(pct(empty.times, 90)), runs_ms: empty.times.map(r1), disk_written_mib_per_create: r1(emptyWritten / 8 / 2 ** 20) });

  // Fill the host, then let everything settle.
  const dirty0 = meminfo("Dirty");
  const w1 = sectorsWritten();
  const fill = await creates(running, true);
  const fillWritten = (sectorsWritten() - w1) * 512;
  out({ bench: `creates_to_${running}_running`, clients: CLIENTS, creates: running, pool_hits: fill.hits,
        median_ms: r1(median(fill.times)), p90_ms: r1(pct(fill.times, 90)), max_ms: r1(Math.max(...fill.times)),
        dirty_mib_after: r1(meminfo("Dirty")), dirty_mib_before: r1(dirty0),
        disk_written_mib_per_create: r1(fillWritten / running / 2 ** 20) });
  await sleep(10_000);

  // Idle: 30 s with nothing asked of the VMs.
  const pids = qemus();
  const t0 = pids.map(ticks), h0 = hostCpu(), w2 = sectorsWritten();
  const s0 = performance.now();
  await sleep(30_000);
  const secs = (performance.now() - s0) / 1000;
  const t1 = pids.map(ticks), h1 = hostCpu(), w3 = sectorsWritten();
  const perVm = pids.map((_, i) => (t0[i] === null || t1[i] === null ? null : (t1[i] - t0[i]) / HZ / secs * 100))
    .filter((x) => x !== null);
  const dh = h1.map((x, i) => x - h0[i]);
  const total = dh.reduce((a, b) => a + b, 0);
  out({ bench: "idle_cpu_per_vm", vms: perVm.length, seconds: r1(secs), median_pct_of_core: r2(median(perVm)),
        max_pct_of_core: r2(Math.max(...perVm)), sum_pct_of_core: r1(perVm.reduce((a, b) => a + b, 0)), target_pct: 1,
        host_user_pct: r1((dh[0] + dh[1]) / total * 100), host_system_pct: r1(dh[2] / total * 100),
        host_iowait_pct: r1(dh[4] / total * 100), disk_written_mib: r1((w3 - w2) * 512 / 2 ** 20),
        dirty_mib: r1(meminfo("Dirty")), note: "percent of one core; the host has 2" });

  // Creates with the host full.
  const full = await creates(8, false);
  out({ bench: `creates_with_${running}_running`, clients: CLIENTS, creates: 8, pool_hits: full.hits,
        median_ms: r1(median(full.times)), p90_ms: r1(pct(full.times, 90)), runs_ms: full.times.map(r1),
        empty_host_median_ms: r1(median(empty.times)), ratio_vs_empty: r2(median(full.times) / median(empty.times)),
        target_ratio: 2 });
} finally {
  await Promise.all([...mine].map((id) => del(id).catch((e) => console.error(`cleanup: ${e.message}`))));
}
