// HTTP-side benchmarks for `make bench`: create-to-first-exec (median of
// 5), exec `true` round trip (median and p90 of 50), 1 MiB file put and get,
// suspend and resume-to-first-exec (median of 5), fork into 1 and into 4
// until every fork has answered `true`, and the memory of a VM alone vs the
// VM plus 4 forks. Compares against the raw restore baseline passed in $RAW
// (JSON from sprout-bench-raw) and prints one JSON line per measurement.
// $SPROUT_DATA is the daemon's data directory (for qemu.pid and the memory
// files); $SPROUT_RAW_BIN, $SPROUT_IMAGE, $SPROUT_MEM_MB, $SPROUT_VCPUS and
// $SPROUT_RAW_TMP let it rerun the raw baseline on a fork's layer. Every VM made here is deleted before exiting, failure or not.
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import http from "node:http";
import { readFileSync, readdirSync, existsSync, realpathSync, statSync } from "node:fs";
import { client, median, out, pct, r1, r2, sleep } from "./lib.mjs";

const url = process.env.SPROUT_URL;
const key = process.env.SPROUT_API_KEY;
const raw = JSON.parse(process.env.RAW);
const data = process.env.SPROUT_DATA;

const call = client(url, key);

// Every VM this script made and has not deleted yet.
const mine = new Set();
async function del(id) {
  await call("DELETE", `/v1/vms/${id}`);
  mine.delete(id);
}
const exec = async (id) => {
  const r = await call("POST", `/v1/vms/${id}/exec-await`, { command: "true" });
  if (r.statusCode !== 0) throw new Error(`exec true on ${id}: ${JSON.stringify(r)}`);
};

// Memory of one VM's QEMU: PSS (smaps_rollup), the part of it that maps
// the VM's memory file, and how much of that file sits in the page cache
// (mapped or not).
const MiB = 1024 * 1024;
const kb = (text, field) => { const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m")); return m ? Number(m[1]) * 1024 : 0; };
const cached = (path) => existsSync(path) ? Number(execFileSync("fincore", ["--bytes", "--noheadings", "--output", "RES", path]).toString().trim() || 0) : 0;
function vmMemory(id) {
  const dir = `${data}/vms/${id}`;
  const pid = Number(readFileSync(`${dir}/qemu.pid`, "utf8").trim());
  if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)) throw new Error(`pid ${pid} is not the QEMU of ${id}`);
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  // Its RAM file: on its own tmpfs (ram/mem), or in its directory.
  const mem = existsSync(`${dir}/ram/mem`) ? `${dir}/ram/mem` : `${dir}/mem`;
  let memPss = 0, inMem = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const h = line.match(/^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/);
    if (h) inMem = h[1] === realpathSync(mem);
    else if (inMem && line.startsWith("Pss:")) memPss += kb(line, "Pss");
  }
  return { pid, pss: kb(rollup, "Pss"), pssAnon: kb(rollup, "Pss_Anon"), memPss, memCached: cached(mem) };
}
// The memory-file page cache a VM costs, counted once whether mapped or
// not: PSS without the mapped part of its memory file, plus all of that
// file's cached pages.
const withCache = (m) => m.pss - m.memPss + m.memCached;
const mib = (b) => r1(b / MiB);

// The warm pool's figures (GET /healthz), and the pool hits so far (/metrics).
const pool = async () => (await (await fetch(`${url}/healthz`)).json()).warmPool;
async function poolReady(n = 1, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if ((await pool()).vms >= n) return true;
    await sleep(200);
  }
  return false;
}

try {
  // create -> first exec, back to back: the pool (2 VMs) serves the first
  // ones, then creates restore as they come while it refills.
  const hits0 = (await pool()).hits;
  const createTimes = [];
  let vm;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const { id } = await call("POST", "/v1/vms", {});
    mine.add(id);
    const r = await call("POST", `/v1/vms/${id}/exec-await`, { command: "true" });
    if (r.statusCode !== 0) throw new Error("exec true failed");
    createTimes.push(performance.now() - t0);
    if (i < 4) await del(id);
    else vm = id;
  }
  const c2e = median(createTimes);
  out({ bench: "create_to_first_exec", runs: 5, median_ms: r1(c2e), runs_ms: createTimes.map(r1),
        warm_pool_hits: (await pool()).hits - hits0, raw_restore_to_first_exec_ms: raw.restore_to_first_exec_ms,
        raw_restore_to_first_answer_ms: raw.restore_to_first_answer_ms, ratio_vs_raw: r2(c2e / raw.restore_to_first_exec_ms),
        target_ratio: 1.2 });

  // create -> first exec from the warm pool: each create waits for a
  // pooled VM (the pool refills in the background between them).
  const pooledTimes = [];
  let pooledHits = 0;
  for (let i = 0; i < 5; i++) {
    if (!(await poolReady())) break;
    await sleep(500);
    const h = (await pool()).hits;
    const t0 = performance.now();
    const { id } = await call("POST", "/v1/vms", {});
    mine.add(id);
    await exec(id);
    pooledTimes.push(performance.now() - t0);
    pooledHits += (await pool()).hits - h;
    await del(id);
  }
  if (pooledTimes.length) {
    const pm = median(pooledTimes);
    out({ bench: "create_to_first_exec_from_pool", runs: pooledTimes.length, pool_hits: pooledHits, median_ms: r1(pm),
          runs_ms: pooledTimes.map(r1), raw_restore_to_first_exec_ms: raw.restore_to_first_exec_ms,
          ratio_vs_raw: r2(pm / raw.restore_to_first_exec_ms), target_ratio: 0.25, moonshot_ratio: 0.1 });
  } else {
    out({ bench: "create_to_first_exec_from_pool", error: "the warm pool never filled (is --warm-pool 0?)" });
  }

  // Creates per second, sustained for 60 s, one client: create, exec,
  // delete; the pool refills when it can.
  {
    const h = (await pool()).hits;
    const end = performance.now() + 60_000;
    const times = [];
    while (performance.now() < end) {
      const t0 = performance.now();
      const { id } = await call("POST", "/v1/vms", {});
      mine.add(id);
      await exec(id);
      times.push(performance.now() - t0);
      await del(id);
    }
    out({ bench: "creates_sustained_60s", creates: times.length, per_second: r2(times.length / 60),
          median_ms: r1(median(times)), p90_ms: r1(pct(times, 90)), pool_hits: (await pool()).hits - h });
  }

  // What a pooled VM costs: its QEMU's memory (PSS) and its files on disk.
  if (await poolReady()) {
    await sleep(1000);
    const listed = new Set((await call("GET", "/v1/vms")).vms.map((v) => v.id));
    const pooledIds = readdirSync(`${data}/vms`).filter((d) => !listed.has(d) && existsSync(`${data}/vms/${d}/qemu.pid`));
    const costs = pooledIds.map((id) => {
      const m = vmMemory(id);
      const disk = readdirSync(`${data}/vms/${id}`).reduce((a, f) => a + statSync(`${data}/vms/${id}/${f}`).blocks * 512, 0);
      return { pss_mib: mib(m.pss), mem_file_cached_mib: mib(m.memCached), disk_mib: mib(disk) };
    });
    out({ bench: "warm_pool_vm_cost", pooled: costs.length, vms: costs });
  }

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
  const blob = randomBytes(1 << 20);
  const puts = [], gets = [];
  for (let i = 0; i < 5; i++) {
    let t0 = performance.now();
    await call("PUT", `/v1/vms/${vm}/files/${encodeURIComponent("/tmp/bench.bin")}`, { content: blob.toString("base64"), encoding: "base64" });
    puts.push(performance.now() - t0);
    t0 = performance.now();
    const r = await call("GET", `/v1/vms/${vm}/files/${encodeURIComponent("/tmp/bench.bin")}`);
    gets.push(performance.now() - t0);
    if (!Buffer.from(r.content, r.encoding === "base64" ? "base64" : "utf8").equals(blob)) throw new Error("file mismatch");
  }
  out({ bench: "file_put_1mib", runs: 5, median_ms: r1(median(puts)) });
  out({ bench: "file_get_1mib", runs: 5, median_ms: r1(median(gets)) });

  // suspend, then resume to first exec (explicit start, then exec)
  const suspends = [], resumes = [], transparent = [];
  for (let i = 0; i < 5; i++) {
    let t0 = performance.now();
    await call("POST", `/v1/vms/${vm}/suspend`, {});
    suspends.push(performance.now() - t0);
    await sleep(200);
    t0 = performance.now();
    await call("POST", `/v1/vms/${vm}/start`, {});
    await exec(vm);
    resumes.push(performance.now() - t0);
  }
  // exec on a suspended VM, which resumes it on the way
  for (let i = 0; i < 3; i++) {
    await call("POST", `/v1/vms/${vm}/suspend`, {});
    await sleep(200);
    const t0 = performance.now();
    await exec(vm);
    transparent.push(performance.now() - t0);
  }
  const sm = median(suspends), rm = median(resumes);
  out({ bench: "suspend", runs: 5, mem_mb: 1024, median_ms: r1(sm), max_ms: r1(Math.max(...suspends)), target_ms: 200 });
  out({ bench: "resume_to_first_exec", runs: 5, median_ms: r1(rm), max_ms: r1(Math.max(...resumes)),
        exec_on_suspended_median_ms: r1(median(transparent)), exec_on_suspended_runs: 3,
        raw_restore_to_first_exec_ms: raw.restore_to_first_exec_ms, ratio_vs_raw: r2(rm / raw.restore_to_first_exec_ms) });

  // Forks of vm until every fork has answered `true`; the forks are deleted
  // afterwards. measure(forkIds) runs before the deletion, outside the time.
  async function forkRun(count, measure) {
    const t0 = performance.now();
    const r = await call("POST", `/v1/vms/${vm}/fork`, { count });
    const ids = r.forks.map((f) => f.id);
    ids.forEach((id) => mine.add(id));
    if (ids.length !== count) throw new Error(`fork ${count}: got ${JSON.stringify(r)}`);
    await Promise.all(ids.map(exec));
    const ms = performance.now() - t0;
    const m = measure ? measure(ids) : undefined;
    for (const id of ids) await del(id);
    return { ms, m };
  }

  // memory: vm alone, then vm plus 4 forks (on the first fork-into-4 run,
  // while the layer it made is the only one)
  await exec(vm);
  const alone = vmMemory(vm);
  const fork4 = [];
  let group;
  for (let i = 0; i < 3; i++) {
    const { ms, m } = await forkRun(4, i === 0 ? (ids) => {
      const vms = [vm, ...ids].map(vmMemory);
      const layers = existsSync(`${data}/layers`) ? readdirSync(`${data}/layers`) : [];
      return { vms, layers: layers.length, layerCached: layers.reduce((a, l) => a + cached(`${data}/layers/${l}/mem`), 0) };
    } : undefined);
    fork4.push(ms);
    if (m) group = m;
  }
  const fork1 = [];
  for (let i = 0; i < 3; i++) fork1.push((await forkRun(1)).ms);

  // The like-for-like baseline for forks: raw restores (one at a time and
  // 4 in parallel) of the same warm guest the forks copy (unlike the
  // default snapshot). A fork's own layer keeps only its disk once the forks
  // exist, so take a snapshot of the parent: its layer has the full layout.
  const snap = await call("POST", `/v1/vms/${vm}/snapshot`, {});
  const layer = readFileSync(`${data}/vms/${vm}/disk.current`, "utf8").trim().replace(/^disk-(.*)\.qcow2$/, "$1");
  const rawLayer = JSON.parse(execFileSync(process.env.SPROUT_RAW_BIN,
    [`${data}/layers/${layer}`, process.env.SPROUT_IMAGE, "3", process.env.SPROUT_MEM_MB, process.env.SPROUT_VCPUS, "3"],
    { env: { ...process.env, TMPDIR: process.env.SPROUT_RAW_TMP }, stdio: ["ignore", "pipe", "inherit"] }).toString());

  await call("DELETE", `/v1/vms/snapshots/${snap.snapshotId}`);
  // What the fork runs left on disk: each made a layer under the parent,
  // kept while the parent lives (only the snapshot's keeps a memory file).
  const layerDirs = readdirSync(`${data}/layers`);
  const layerMemDisk = layerDirs.reduce((a, l) => a + (existsSync(`${data}/layers/${l}/mem`) ? statSync(`${data}/layers/${l}/mem`).blocks * 512 : 0), 0);

  const f1 = median(fork1), f4 = median(fork4);
  out({ bench: "fork_into_1_to_exec", runs: 3, median_ms: r1(f1), runs_ms: fork1.map(r1),
        raw_from_fork_layer_restore_to_first_exec_ms: rawLayer.restore_to_first_exec_ms,
        ratio_vs_raw_from_fork_layer: r2(f1 / rawLayer.restore_to_first_exec_ms),
        raw_restore_to_first_exec_ms: raw.restore_to_first_exec_ms, ratio_vs_raw: r2(f1 / raw.restore_to_first_exec_ms) });
  out({ bench: "fork_into_4_to_all_exec", runs: 3, median_ms: r1(f4), runs_ms: fork4.map(r1),
        raw_from_fork_layer_parallel4_restore_to_all_exec_ms: rawLayer.parallel4_restore_to_all_exec_ms,
        ratio_vs_raw_from_fork_layer_parallel4: r2(f4 / rawLayer.parallel4_restore_to_all_exec_ms),
        raw_parallel4_restore_to_all_exec_ms: raw.parallel4_restore_to_all_exec_ms,
        ratio_vs_raw_parallel4: r2(f4 / raw.parallel4_restore_to_all_exec_ms), target_ratio: 1.2,
        layers_after_6_forks: layerDirs.length, layer_mem_files_on_disk_mib: mib(layerMemDisk),
        note: "fork time includes saving the parent into a new layer (device state + memory file copy); " +
              "raw_from_fork_layer_* restore from such a layer (same warm guest), raw_* from the default snapshot" });

  const groupPss = group.vms.reduce((a, m) => a + m.pss, 0);
  const groupCache = group.vms.reduce((a, m) => a + withCache(m), 0) + group.layerCached;
  out({ bench: "memory_vm_plus_4_forks", mem_mb: 1024,
        alone_pss_mib: mib(alone.pss), parent_plus_4_forks_pss_mib: mib(groupPss), ratio: r2(groupPss / alone.pss), target_ratio: 2,
        per_vm_pss_mib: group.vms.map((m) => mib(m.pss)), per_vm_anon_pss_mib: group.vms.map((m) => mib(m.pssAnon)),
        per_vm_mem_file_mapped_mib: group.vms.map((m) => mib(m.memPss)), per_vm_mem_file_cached_mib: group.vms.map((m) => mib(m.memCached)),
        fork_layer_mem_cached_mib: mib(group.layerCached), layers: group.layers,
        alone_with_page_cache_mib: mib(withCache(alone)), parent_plus_4_forks_with_page_cache_mib: mib(groupCache),
        ratio_with_page_cache: r2(groupCache / withCache(alone)),
        // The floor for any sharing scheme: every QEMU's own memory (JIT
        // cache, device and heap state: not guest RAM) plus the largest
        // VM's guest pages counted once, as if all guest RAM were shared.
        ratio_if_guest_ram_fully_shared: r2((group.vms.reduce((a, m) => a + m.pss - m.memPss, 0) +
                                             Math.max(...group.vms.map((m) => m.memPss))) / alone.pss),
        per_vm_qemu_own_pss_mib: group.vms.map((m) => mib(m.pss - m.memPss)),
        note: "PSS counts only the pages of each VM's memory file that its QEMU has mapped (touched since the restore); " +
              "*_with_page_cache adds every cached page of the VMs' memory files and of the fork's layer memory file " +
              "(not counting the default snapshot's, a fixed cost)" });

  // watch-files: events per second for a burst of file creations, and the
  // latency from a write in the guest to its event at the client. The
  // guest's clock is set from the host's at every restore, so the time the
  // guest puts in a file's name can be compared with the host's clock.
  {
    const ctl = new AbortController();
    const res = await fetch(`${url}/v1/vms/${vm}/watch-files`, { method: "POST", headers: { authorization: `Bearer ${key}` }, signal: ctl.signal });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    const events = [];
    let buf = "";
    const pump = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          const now = Date.now();
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, i).trim();
            buf = buf.slice(i + 1);
            if (line) events.push({ at: now, ev: JSON.parse(line) });
          }
        }
      } catch {}
    })();
    await sleep(1000);
    const N = 2000;
    const t0 = Date.now();
    await call("POST", `/v1/vms/${vm}/exec-await`, { command: `mkdir -p /root/wb && cd /root/wb && for i in $(seq ${N}); do : > f$i; done` });
    while (events.filter((e) => e.ev.path?.startsWith("/root/wb/f")).length < N && Date.now() - t0 < 60000) await sleep(50);
    const burst = events.filter((e) => e.ev.path?.startsWith("/root/wb/f"));
    const span = (burst.at(-1)?.at ?? t0) - (burst[0]?.at ?? t0);
    const lat = [];
    for (let i = 0; i < 10; i++) {
      await call("POST", `/v1/vms/${vm}/exec-await`, { command: "touch /root/wb/lat-$(date +%s%3N)" });
      await sleep(200);
    }
    for (const e of events) {
      const m = e.ev.path?.match(/\/lat-(\d+)$/);
      if (m && e.ev.kind === "created") lat.push(e.at - Number(m[1]));
    }
    ctl.abort();
    await pump;
    out({ bench: "watch_files_events_per_second", files: N, events_received: burst.length,
          events_per_second: span > 0 ? Math.round(burst.length / (span / 1000)) : null,
          seconds_from_first_to_last_event: r2(span / 1000), note: "rate at which the guest's burst of creations reached the client" });
    out({ bench: "watch_files_write_to_event", runs: lat.length, median_ms: lat.length ? r1(median(lat)) : null,
          max_ms: lat.length ? r1(Math.max(...lat)) : null, note: "guest write time (guest clock, set from the host at restore) to client receipt" });
  }

  // Ingress: a request through the proxy against the same request made
  // inside the guest (curl to localhost), 100 MiB through the proxy, and a
  // request that wakes a suspended VM against resume-to-first-exec.
  {
    const proxy = new URL(process.env.SPROUT_PROXY_URL);
    const server = readFileSync(new URL("../tests/e2e/httpd.pl", import.meta.url), "utf8");
    const vm = await call("POST", "/v1/vms", {
      idleTimeoutSeconds: 0, additionalFiles: { "/srv/app.pl": { content: server } },
      systemd: { services: [{ name: "app", mode: "service", exec: ["/usr/bin/perl /srv/app.pl 3000 bench"], enable: true }] },
    });
    mine.add(vm.id);
    const host = `${vm.id}.vm.localhost`;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path, a = agent) => new Promise((resolve, reject) => {
      const t = performance.now();
      http.get({ host: proxy.hostname, port: proxy.port, path, agent: a, headers: { host } }, (res) => {
        let n = 0;
        res.on("data", (d) => { n += d.length; });
        res.on("end", () => resolve({ status: res.statusCode, bytes: n, ms: performance.now() - t }));
      }).on("error", reject);
    });
    for (let i = 0; i < 600 && (await get("/").catch(() => ({ status: 0 }))).status !== 200; i++) await sleep(200);
    const via = [];
    for (let i = 0; i < 50; i++) via.push((await get("/")).ms);
    const inside = await call("POST", `/v1/vms/${vm.id}/exec-await`, {
      command: "for i in $(seq 50); do curl -s -o /dev/null -w '%{time_total}\\n' http://127.0.0.1:3000/; done",
    });
    const guest = inside.stdout.trim().split("\n").map((x) => Number(x) * 1000);
    const pm = median(via), gm = median(guest);
    out({ bench: "ingress_request_latency", runs: 50, proxy_median_ms: r2(pm), proxy_p90_ms: r2(pct(via, 90)),
          in_guest_curl_median_ms: r2(gm), ratio: r2(pm / gm), target: "at most 1.2x + 1 ms",
          within_target: pm <= 1.2 * gm + 1, note: "keep-alive client on the host; the guest's curl opens a connection each time" });
    const big = 100 * MiB;
    const t = performance.now();
    const d = await get(`/bytes/${big}`);
    if (d.bytes !== big) throw new Error(`100 MiB download gave ${d.bytes} bytes`);
    out({ bench: "ingress_download_100mib", seconds: r2((performance.now() - t) / 1000),
          mib_per_second: r1(100 / ((performance.now() - t) / 1000)) });
    agent.destroy();
    const wake = [], resume = [];
    for (let i = 0; i < 3; i++) {
      await call("POST", `/v1/vms/${vm.id}/suspend`);
      const w = await get("/", new http.Agent());
      if (w.status !== 200) throw new Error(`wake-on-request answered ${w.status}`);
      wake.push(w.ms);
      await call("POST", `/v1/vms/${vm.id}/suspend`);
      const t1 = performance.now();
      await exec(vm.id);
      resume.push(performance.now() - t1);
    }
    out({ bench: "ingress_wake_on_request", runs: 3, median_ms: r1(median(wake)),
          resume_to_first_exec_median_ms: r1(median(resume)), ratio: r2(median(wake) / median(resume)) });
    await del(vm.id);
  }

  // Templates: the first build of a one-layer runCommands spec (a VM from
  // the default snapshot, the oneshot run, a snapshot with memory), then VMs
  // from the cached spec against VMs from its snapshot, alternating.
  {
    const spec = {
      discriminator: `bench-${Date.now()}`,
      systemd: { services: [{ name: "freestyle-run-command-1", mode: "oneshot", deleteAfterSuccess: true,
                              exec: ["/bin/sh -c 'echo built > /root/built'"] }] },
    };
    let t0 = performance.now();
    const { snapshotId, buildId } = await call("POST", "/v1/vms/snapshots", { spec });
    const first = performance.now() - t0;
    const phases = (await call("GET", `/v1/vms/builds/${buildId}/phases`)).phases;
    out({ bench: "build_one_layer_run_commands", first_build_ms: r1(first),
          phases: phases.map((p) => p.name).join(", ") });
    const fromSpec = [], fromSnap = [];
    for (let i = 0; i < 5; i++) {
      t0 = performance.now();
      const a = await call("POST", "/v1/vms", { template: spec });
      mine.add(a.id);
      await exec(a.id);
      fromSpec.push(performance.now() - t0);
      if (a.snapshotId !== snapshotId) throw new Error(`create from the spec used ${a.snapshotId}, not ${snapshotId}`);
      await del(a.id);
      t0 = performance.now();
      const b = await call("POST", "/v1/vms", { snapshotId });
      mine.add(b.id);
      await exec(b.id);
      fromSnap.push(performance.now() - t0);
      await del(b.id);
    }
    const ms = median(fromSpec), ss = median(fromSnap);
    out({ bench: "create_from_cached_spec_to_first_exec", runs: 5, median_ms: r1(ms),
          create_from_snapshot_median_ms: r1(ss), ratio_vs_snapshot: r2(ms / ss), target_ratio: 1.2 });
    await call("DELETE", `/v1/vms/snapshots/${snapshotId}`);
    const dockerfile = `FROM debian:bookworm-slim\nENV STAMP=${Date.now()}\nRUN echo "$STAMP" > /root/stamp\nRUN <<'EOF'\nmkdir -p /opt/x && cp /root/stamp /opt/x/\nEOF`;
    t0 = performance.now();
    const d = await call("POST", "/v1/vms/snapshots", { spec: { baseImage: { dockerfileContent: dockerfile } } });
    out({ bench: "dockerfile_base_image_build", first_build_ms: r1(performance.now() - t0), run_steps: 2,
          note: "FROM debian:bookworm-slim is the guest image itself; each RUN runs in the build VM" });
    await call("DELETE", `/v1/vms/snapshots/${d.snapshotId}`);
  }
} finally {
  for (const id of [...mine]) await del(id).catch((e) => console.error(`cleanup: ${e.message}`));
}
