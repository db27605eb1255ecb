// Sprout's web console. Everything goes through the /v1 API with the key
// the user signed in with (kept in sessionStorage, this tab only), so the
// console sees exactly what that key may. No framework: DOM built with h(),
// server text only ever set as text. Views: #/vms, #/vm/ID, #/snapshots,
// #/build/ID.
"use strict";

const KEY = "sprout-key";
let key = sessionStorage.getItem(KEY);
let cleanup = []; // what the current view must stop when it is left

// ---- helpers ----

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

async function api(method, path, body, opts = {}) {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: opts.signal,
  });
  if (opts.raw) {
    if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
    return res;
  }
  const json = await res.json().catch(() => null);
  if (res.status === 401 && !opts.signingIn) signOut("Your API key was refused; sign in again.");
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

// Runs an action, reporting a failure instead of throwing.
async function act(what, fn) {
  try {
    return await fn();
  } catch (e) {
    toast(`${what}: ${e.message}`);
  }
}

const enc = encodeURIComponent;
// Where the ingress proxy answers VMs' domains (GET /healthz), for links.
let ingress = null;
fetch("/healthz").then((r) => r.json()).then((j) => { ingress = j.ingress ?? null; }).catch(() => {});
const domainLink = (d) => h("a", { href: ingress ? `${ingress.tls ? "https" : "http"}://${d}:${ingress.port}/` : `http://${d}/`, target: "_blank", rel: "noopener" }, d);
const mib = (b) => (b === null || b === undefined ? "-" : `${(b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 1 : 0)} MiB`);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "-");

function every(ms, fn) {
  let stopped = false, timer;
  const loop = async () => {
    if (stopped) return;
    await fn().catch(() => {});
    if (!stopped) timer = setTimeout(loop, ms);
  };
  loop();
  cleanup.push(() => { stopped = true; clearTimeout(timer); });
}

// ---- sign in ----

function signOut(message) {
  key = null;
  sessionStorage.removeItem(KEY);
  show();
  if (message) {
    const e = document.getElementById("signin-error");
    e.textContent = message;
    e.hidden = false;
  }
}

document.getElementById("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("signin-error");
  const candidate = document.getElementById("key").value.trim();
  err.hidden = true;
  key = candidate;
  try {
    await api("GET", "/v1/vms?limit=1", undefined, { signingIn: true });
    sessionStorage.setItem(KEY, candidate);
    if (!location.hash || location.hash === "#/") location.hash = "#/vms";
    show();
  } catch (e) {
    key = null;
    err.textContent = e.status === 401 ? "That API key was refused (401 Unauthorized). Check it and try again."
                                       : `Could not sign in: ${e.message}`;
    err.hidden = false;
  }
});
document.getElementById("signout").addEventListener("click", () => signOut());

// ---- views ----

function show() {
  for (const f of cleanup.splice(0)) f();
  const view = document.getElementById("view");
  view.replaceChildren();
  document.getElementById("signin").hidden = !!key;
  document.getElementById("nav").hidden = !key;
  if (!key) return;
  const [, name, id] = location.hash.split("/");
  if (name === "vm" && id) vmView(view, decodeURIComponent(id));
  else if (name === "snapshots") snapshotsView(view);
  else if (name === "build" && id) buildView(view, decodeURIComponent(id));
  else vmsView(view);
}
window.addEventListener("hashchange", show);

// Buttons for what can be done to a VM in its state; done() refreshes.
function vmActions(vm, done) {
  const post = (verb, body) => act(verb, async () => { await api("POST", `/v1/vms/${enc(vm.id)}/${verb}`, body ?? {}); done(); });
  const s = vm.state;
  return [
    s === "running" && h("button", { "data-action": "suspend", onclick: () => post("suspend") }, "Suspend"),
    (s === "suspended" || s === "stopped") && h("button", { "data-action": "start", onclick: () => post("start") }, "Start"),
    s === "running" && h("button", { "data-action": "stop", onclick: () => confirm(`Stop VM ${vm.id}? Its memory is lost; the disk is kept.`) && post("stop") }, "Stop"),
    s === "running" && h("button", { "data-action": "fork", onclick: () => post("fork", { count: 1 }) }, "Fork"),
    (s === "running" || s === "suspended") && h("button", { "data-action": "snapshot", onclick: () => act("snapshot", async () => {
      const r = await api("POST", `/v1/vms/${enc(vm.id)}/snapshot`, {});
      toast(`Snapshot ${r.snapshotId} made`);
    }) }, "Snapshot"),
    h("button", { class: "danger", "data-action": "delete", onclick: () => confirm(`Delete VM ${vm.id}? This cannot be undone.`) && act("delete", async () => {
      await api("DELETE", `/v1/vms/${enc(vm.id)}`);
      if (location.hash.startsWith("#/vm/")) location.hash = "#/vms"; else done();
    }) }, "Delete"),
  ];
}

function vmsView(view) {
  const body = h("tbody");
  const spec = h("textarea", { id: "spec", placeholder: '{"name": "my-vm", "idleTimeoutSeconds": 600}' });
  const dialog = h("dialog", {},
    h("h2", {}, "Create from a spec"), h("p", { class: "muted" }, "The body of POST /v1/vms, as JSON."), spec,
    h("div", { class: "toolbar" },
      h("button", { class: "primary", onclick: () => create(() => JSON.parse(spec.value || "{}")).then(() => dialog.close()) }, "Create"),
      h("button", { onclick: () => dialog.close() }, "Cancel")));
  const snaps = h("select", { id: "from-snapshot" }, h("option", { value: "" }, "the default snapshot"));
  const status = h("span", { class: "muted", id: "create-status" });
  async function create(bodyOf) {
    let b;
    try { b = bodyOf(); } catch (e) { return toast(`That spec is not JSON: ${e.message}`); }
    status.textContent = "creating...";
    await act("create", async () => {
      const r = await api("POST", "/v1/vms", b);
      status.textContent = `created ${r.id}`;
      refresh();
    });
    if (status.textContent === "creating...") status.textContent = "";
  }
  view.append(
    h("h1", {}, "VMs"),
    h("div", { class: "toolbar" },
      h("button", { class: "primary", id: "create-vm", onclick: () => create(() => (snaps.value ? { snapshotId: snaps.value } : {})) }, "Create VM"),
      h("span", {}, "from"), snaps,
      h("button", { id: "create-spec", onclick: () => dialog.showModal() }, "Create from spec..."), status),
    dialog,
    h("table", {}, h("thead", {}, h("tr", {}, ["ID", "Name", "State", "Created", "Memory", "Disk", "Snapshot", "Domains", ""].map((t) => h("th", {}, t)))), body));
  act("snapshots", async () => {
    for (const s of (await api("GET", "/v1/vms/snapshots")).snapshots)
      snaps.append(h("option", { value: s.snapshotId }, s.name ? `${s.name} (${s.snapshotId})` : s.snapshotId));
  });
  let last;
  async function refresh() {
    const { vms } = await api("GET", "/v1/vms");
    // Rebuilt only when something changed: a button under the pointer stays.
    const now = JSON.stringify(vms);
    if (now === last) return;
    last = now;
    body.replaceChildren(...vms.map((vm) => h("tr", { "data-id": vm.id, "data-state": vm.state },
      h("td", { class: "mono" }, h("a", { href: `#/vm/${enc(vm.id)}` }, vm.id)),
      h("td", {}, vm.name ?? "-"),
      h("td", {}, h("span", { class: `state ${vm.state}` }, vm.state)),
      h("td", {}, when(vm.createdAt)),
      h("td", {}, `${vm.memSizeMb} MiB`),
      h("td", {}, mib(vm.diskUsageBytes)),
      h("td", { class: "mono" }, vm.snapshotId ?? "-"),
      h("td", {}, (vm.domains ?? []).map((d) => h("div", {}, domainLink(d)))),
      h("td", {}, vmActions(vm, refresh)))));
    if (!vms.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No VMs yet.")));
  }
  every(2000, refresh);
}

// ---- one VM ----

function vmView(view, id) {
  const info = h("div");
  const actions = h("div", { class: "toolbar" });
  const plotBox = h("div", { id: "plot" });
  const termBox = h("div", { id: "terminal" });
  const files = h("div", { id: "files" });
  const services = h("div", { id: "services" });
  const build = h("div", { id: "vm-build" });
  view.append(h("h1", {}, "VM ", h("span", { class: "mono" }, id)), info, actions,
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Terminal"), termBox),
      h("div", { class: "panel" }, h("h2", {}, "CPU and memory"), plotBox, h("div", { class: "muted", id: "stats-count" }))),
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Files"), files),
      h("div", { class: "panel" }, h("h2", {}, "Services"), services, h("h2", {}, "Build"), build)));
  let state;
  async function refresh() {
    const vm = await api("GET", `/v1/vms/${enc(id)}`);
    info.replaceChildren(h("table", {}, h("tbody", {},
      [["State", h("span", { class: `state ${vm.state}`, id: "vm-state" }, vm.state)], ["Name", vm.name ?? "-"],
       ["Created", when(vm.createdAt)], ["Memory", `${vm.memSizeMb} MiB, ${vm.vcpuCount} vCPU`], ["Disk", mib(vm.diskUsageBytes)],
       ["Snapshot", vm.snapshotId ?? "-"],
       ["Domains", (vm.domains ?? []).length ? vm.domains.map((d) => [domainLink(d), " "]) : "-"]]
        .map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))))));
    if (vm.state !== state) {
      state = vm.state;
      actions.replaceChildren(...vmActions(vm, refresh).filter(Boolean));
    }
  }
  every(2000, refresh);
  terminal(termBox, id);
  statsPlot(plotBox, id);
  fileBrowser(files, id);
  servicesPanel(services, id);
  act("build", async () => {
    const b = await api("GET", `/v1/vms/${enc(id)}/build`).catch((e) => (e.status === 404 ? null : Promise.reject(e)));
    build.replaceChildren(b ? h("a", { href: `#/build/${enc(b.buildId)}` }, `Build ${b.buildId} (${b.state})`) : h("span", { class: "muted" }, "Not built from a template."));
  });
}

// An xterm.js terminal on the VM's persistent "dashboard" PTY, over the
// WebSocket endpoint; the key goes as the subprotocol "bearer.KEY".
function terminal(box, id) {
  const term = new Terminal({ fontSize: 13, convertEol: false, cursorBlink: true });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  window.sproutTerm = term; // for the browser tests, which read the screen
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/vms/${enc(id)}/terminals/dashboard/ws?rows=${term.rows}&cols=${term.cols}`;
  const ws = new WebSocket(url, ["sprout-terminal", `bearer.${key}`]);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      const msg = JSON.parse(m.data);
      term.write(msg.type === "exit" ? `\r\n[the shell exited with status ${msg.code}]\r\n` : `\r\n[${msg.message}]\r\n`);
    } else {
      term.write(new Uint8Array(m.data));
    }
  };
  ws.onclose = () => term.write("\r\n[disconnected]\r\n");
  const input = term.onData((d) => ws.readyState === 1 && ws.send(encoder.encode(d)));
  const resize = term.onResize(({ rows, cols }) => ws.readyState === 1 && ws.send(JSON.stringify({ type: "resize", rows, cols })));
  const onWin = () => fit.fit();
  window.addEventListener("resize", onWin);
  cleanup.push(() => { input.dispose(); resize.dispose(); window.removeEventListener("resize", onWin); ws.close(); term.dispose(); });
}

// CPU and memory from the stats stream (NDJSON), last 120 samples.
function statsPlot(box, id) {
  const xs = [], cpu = [], mem = [];
  const plot = new uPlot({
    width: 560, height: 220,
    scales: { y: { range: [0, 100] } },
    series: [{}, { label: "CPU %", stroke: "#2f7d32" }, { label: "Memory %", stroke: "#1d4ed8" }],
    axes: [{}, { values: (u, v) => v.map((x) => `${x}%`) }],
  }, [xs, cpu, mem], box);
  window.sproutPlot = plot;
  const ctl = new AbortController();
  cleanup.push(() => { ctl.abort(); plot.destroy(); });
  (async () => {
    const res = await api("GET", `/v1/vms/${enc(id)}/stats/stream?interval_ms=1000`, undefined, { raw: true, signal: ctl.signal });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        const s = JSON.parse(line);
        xs.push(Date.parse(s.timestamp) / 1000);
        cpu.push(s.cpu.usagePercent);
        mem.push(s.memory.usedPercent);
        if (xs.length > 120) { xs.shift(); cpu.shift(); mem.shift(); }
        plot.setData([xs, cpu, mem]);
        document.getElementById("stats-count").textContent = `${xs.length} samples, CPU ${s.cpu.usagePercent.toFixed(1)}%, memory ${s.memory.usedPercent.toFixed(1)}%`;
      }
    }
  })().catch((e) => e.name !== "AbortError" && toast(`stats: ${e.message}`));
}

function fileBrowser(box, id) {
  const path = h("input", { id: "file-path", value: "/root", size: 32 });
  const list = h("tbody");
  const upload = h("input", { type: "file", id: "file-upload" });
  const filesUrl = (p) => `/v1/vms/${enc(id)}/files/${enc(p)}`;
  const join = (dir, name) => `${dir.replace(/\/+$/, "")}/${name}`;
  async function load() {
    const dir = path.value || "/";
    const r = await api("GET", filesUrl(dir));
    if (!r.files) return toast(`${dir} is a file, not a directory`);
    list.replaceChildren(
      dir !== "/" && h("tr", {}, h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); path.value = dir.replace(/\/[^/]+\/?$/, "") || "/"; act("files", load); } }, "..")), h("td", {})),
      ...r.files.sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "directory" ? -1 : 1)).map((f) => h("tr", { "data-name": f.name },
        h("td", { class: "mono" }, f.kind === "directory"
          ? h("a", { href: "#", onclick: (e) => { e.preventDefault(); path.value = join(dir, f.name); act("files", load); } }, `${f.name}/`)
          : f.name),
        h("td", {}, f.kind === "file" && h("button", { onclick: () => act("download", () => download(join(dir, f.name))) }, "Download")))));
  }
  async function download(p) {
    const r = await api("GET", filesUrl(p));
    const bytes = r.encoding === "base64" ? Uint8Array.from(atob(r.content), (c) => c.charCodeAt(0)) : new TextEncoder().encode(r.content);
    const a = h("a", { href: URL.createObjectURL(new Blob([bytes])), download: p.split("/").pop() });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }
  upload.addEventListener("change", () => act("upload", async () => {
    const file = upload.files[0];
    if (!file) return;
    const bytes = new Uint8Array(await file.arrayBuffer());
    let bin = "";
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    const target = join(path.value || "/", file.name);
    await api("PUT", filesUrl(target), { content: btoa(bin), encoding: "base64" });
    toast(`Uploaded ${target}`);
    upload.value = "";
    await load();
  }));
  box.append(h("div", { class: "toolbar" }, path, h("button", { onclick: () => act("files", load) }, "Open"), h("label", {}, "Upload: ", upload)),
    h("table", {}, list));
  act("files", load);
}

function servicesPanel(box, id) {
  const out = h("pre", { hidden: true });
  act("services", async () => {
    const { services } = await api("GET", `/v1/vms/${enc(id)}/systemd/services`);
    const base = (n) => `/v1/vms/${enc(id)}/systemd/services/${enc(n)}`;
    box.replaceChildren(services.length ? h("table", {}, h("tbody", {}, services.map((s) => h("tr", {},
      h("td", { class: "mono" }, s.name),
      h("td", {},
        h("button", { onclick: () => act("status", async () => { out.hidden = false; out.textContent = JSON.stringify(await api("GET", `${base(s.name)}/status`), null, 2); }) }, "Status"), " ",
        h("button", { onclick: () => act("logs", async () => { out.hidden = false; out.textContent = (await api("GET", `${base(s.name)}/logs`)).logs.map((l) => l.message ?? l.line ?? JSON.stringify(l)).join("\n"); }) }, "Logs")))))) : h("p", { class: "muted" }, "No services."), out);
  });
}

// ---- snapshots and builds ----

function snapshotsView(view) {
  const body = h("tbody"), buildRows = h("tbody", { id: "builds" });
  view.append(h("h1", {}, "Snapshots and builds"),
    h("table", {}, h("thead", {}, h("tr", {}, ["ID", "Name", "State", "Created", "Memory", "Disk", "Source VM", "Build", ""].map((t) => h("th", {}, t)))), body),
    h("h2", {}, "Builds"),
    h("table", {}, h("thead", {}, h("tr", {}, ["Build", "State", "Started", "Took", "Snapshot", "Failure"].map((t) => h("th", {}, t)))), buildRows));
  async function refresh() {
    const { snapshots } = await api("GET", "/v1/vms/snapshots");
    body.replaceChildren(...snapshots.map((s) => h("tr", { "data-id": s.snapshotId },
      h("td", { class: "mono" }, s.snapshotId), h("td", {}, s.name ?? "-"), h("td", {}, h("span", { class: `state ${s.state}` }, s.state)),
      h("td", {}, when(s.createdAt)), h("td", {}, `${s.memSizeMib} MiB`), h("td", {}, mib(s.diskUsageBytes)),
      h("td", { class: "mono" }, s.sourceVmId ?? "-"),
      h("td", {}, s.buildId ? h("a", { href: `#/build/${enc(s.buildId)}` }, s.buildId) : "-"),
      h("td", {}, h("button", { class: "danger", onclick: () => confirm(`Delete snapshot ${s.snapshotId}?`) && act("delete", async () => {
        await api("DELETE", `/v1/vms/snapshots/${enc(s.snapshotId)}`);
        refresh();
      }) }, "Delete")))));
    if (!snapshots.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No snapshots yet.")));
    // Builds, failed ones too (they left no snapshot to reach them by).
    const { builds } = await api("GET", "/v1/vms/builds");
    buildRows.replaceChildren(...builds.map((b) => h("tr", { "data-id": b.buildId },
      h("td", {}, h("a", { href: `#/build/${enc(b.buildId)}` }, b.buildId)), h("td", {}, h("span", { class: `state ${b.state}` }, b.state)),
      h("td", {}, when(b.startedAt)), h("td", {}, b.finishedAt ? `${((Date.parse(b.finishedAt) - Date.parse(b.startedAt)) / 1000).toFixed(1)} s` : "-"),
      h("td", { class: "mono" }, b.snapshotId ?? "-"), h("td", { class: "error", title: b.failureReason ?? "" }, (b.failureReason ?? "").length > 120 ? `${b.failureReason.slice(0, 120)}…` : b.failureReason ?? ""))));
    if (!builds.length) buildRows.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No builds yet.")));
  }
  every(5000, refresh);
}

// A build's phases as a timeline: each phase lasts until the next starts,
// the last until the build finished (or now).
function buildView(view, id) {
  act("build", async () => {
    const b = await api("GET", `/v1/vms/builds/${enc(id)}`);
    const { phases } = await api("GET", `/v1/vms/builds/${enc(id)}/phases`);
    const end = b.finishedAt ? Date.parse(b.finishedAt) : Date.now();
    const spans = phases.map((p, i) => ({ name: p.name, start: Date.parse(p.startedAt), end: i + 1 < phases.length ? Date.parse(phases[i + 1].startedAt) : end }));
    const total = Math.max(1, end - (spans[0]?.start ?? end));
    const colors = ["#2f7d32", "#1d4ed8", "#b45309", "#7c3aed", "#0f766e", "#be185d"];
    view.append(h("h1", {}, "Build ", h("span", { class: "mono" }, id)),
      h("p", {}, `State: ${b.state}`, b.failureReason ? h("span", { class: "error" }, ` (${b.failureReason})`) : ""),
      h("div", { class: "timeline", id: "timeline" }, spans.map((s, i) => h("span", { style: `width:${(100 * (s.end - s.start)) / total}%;background:${colors[i % colors.length]}`, title: `${s.name}: ${s.end - s.start} ms` }, s.name))),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Phase"), h("th", {}, "Started"), h("th", {}, "Took"))),
        h("tbody", {}, spans.map((s) => h("tr", { class: "phase" }, h("td", {}, s.name), h("td", {}, when(new Date(s.start).toISOString())), h("td", {}, `${((s.end - s.start) / 1000).toFixed(2)} s`))))));
  });
}

show();
