// End-to-end tests of Dockerfile base images beyond the guest image: FROM
// an image in a container registry (a local one on loopback that
// tests/registry.sh starts and seeds with images it makes itself: Debian
// minbase without systemd, in two layers, the second with a whiteout; and
// one with neither a shell nor systemd), multi-stage builds with COPY
// --from (from a registry image and from the guest image), the layer cache
// keyed by the image's digest, and the failures: an image that does not
// resolve, one that cannot boot.
// Needs SPROUT_TEST_REGISTRY (host:port) and SPROUT_TEST_REGISTRY_DIR, as
// tests/run.sh sets them, and a sproutd started with --registries-conf
// pointing at that registry.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { CREATE_TIMEOUT, VmTracker, api, exec, expectError, ok, rand, show } from "./lib.mjs";

const REG = process.env.SPROUT_TEST_REGISTRY;
const REG_DIR = process.env.SPROUT_TEST_REGISTRY_DIR;
const vms = new VmTracker();
const snapshots = new Set();
const TAG = rand(4);
const T = { timeoutMs: CREATE_TIMEOUT };

after(async () => {
  for (const id of snapshots) await api("DELETE", `/v1/vms/snapshots/${id}`).catch(() => {});
  await vms.cleanup();
});

// The seed (debootstrap and a push) runs beside the earlier test files.
before(async () => {
  assert.ok(REG && REG_DIR, "SPROUT_TEST_REGISTRY and SPROUT_TEST_REGISTRY_DIR are set (tests/run.sh sets them)");
  for (let i = 0; i < 600 && !existsSync(`${REG_DIR}/seeded`); i++) {
    assert.ok(!existsSync(`${REG_DIR}/seed-failed`), `seeding the registry failed:\n${readFileSync(`${REG_DIR}/seed.log`, "utf8").slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.ok(existsSync(`${REG_DIR}/seeded`), "the registry was seeded within 10 minutes");
});

async function build(dockerfileContent) {
  const res = await api("POST", "/v1/vms/snapshots", { body: { spec: { baseImage: { dockerfileContent } } }, ...T });
  if (res.json?.snapshotId) snapshots.add(res.json.snapshotId);
  return res;
}

async function phases(buildId) {
  const p = await ok("GET", `/v1/vms/builds/${buildId}/phases`);
  return p.phases.map((x) => x.name);
}

async function vmFrom(snapshotId) {
  const c = await ok("POST", "/v1/vms", { body: { snapshotId }, ...T });
  vms.track(c.id);
  return c.id;
}

let minbase; // the registry image's build
let minbaseDockerfile;

test("FROM a registry image without systemd: layers and whiteouts, systemd through its apt, COPY --from a stage", async () => {
  const image = `${REG}/sprout-test/minbase:1`;
  const dockerfile = [
    `FROM ${image} AS tools`,
    `RUN echo made-in-stage-${TAG} > /artifact && test -e /etc/motd || echo stage-sees-the-whiteout > /artifact.wh`,
    `FROM ${image}`,
    "COPY --from=tools /artifact /opt/from-tools/",
    "COPY --from=tools /artifact.wh /opt/wh",
    "RUN echo from-registry > /from-registry",
  ].join("\n");
  const res = await build(dockerfile);
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  minbase = res.json;
  minbaseDockerfile = dockerfile;
  const names = await phases(res.json.buildId);
  for (const want of [`base image: fetch ${image}`, `base image: unpack ${image}`, `base image: unpack ${image} for stage tools`,
    `base image: make ${image} bootable`, `base image: boot ${image}`, "base image: COPY --from=tools /artifact /opt/from-tools/",
    "base image: remove the other stages", "snapshot"]) {
    assert.ok(names.includes(want), `phase "${want}" in ${names.join(", ")}`);
  }
  assert.ok(names.some((n) => n.startsWith("base image: [tools] RUN echo made-in-stage")), names.join(", "));
  const b = await ok("GET", `/v1/vms/builds/${res.json.buildId}`);
  assert.equal(b.state ?? b.status, "succeeded");

  const id = await vmFrom(res.json.snapshotId);
  const r = await exec(id, [
    "cat /from-registry /opt/from-tools/artifact /opt/wh /etc/sprout-layer2",
    "test ! -e /etc/motd && echo motd-whited-out",
    "test ! -e /var/lib/sprout-stages && echo stages-removed",
    "cat /proc/1/comm",
    ". /etc/os-release && echo $ID-$VERSION_CODENAME",
    "test -x /usr/local/bin/sprout-agent && echo agent",
  ].join("; "));
  assert.equal(r.stdout, `from-registry\nmade-in-stage-${TAG}\nstage-sees-the-whiteout\nsecond layer\nmotd-whited-out\nstages-removed\nsystemd\ndebian-bookworm\nagent\n`, r.stderr);
  // It runs its own systemd: a service started on it works.
  const s = await exec(id, "systemctl is-active sprout-agent && test -x /lib/systemd/systemd && echo ok");
  assert.match(s.stdout, /active\nok/);
});

test("a VM on a registry image boots again from its disk (stop, start)", async () => {
  assert.ok(minbase, "the registry image was built");
  const id = await vmFrom(minbase.snapshotId);
  await exec(id, "echo kept > /root/kept && sync");
  await ok("POST", `/v1/vms/${id}/stop`, T);
  await ok("POST", `/v1/vms/${id}/start`, T);
  const r = await exec(id, "cat /root/kept /from-registry; cat /proc/1/comm");
  assert.equal(r.stdout, "kept\nfrom-registry\nsystemd\n");
});

test("the same Dockerfile on the same image digest is a cache hit", async () => {
  assert.ok(minbase, "the registry image was built");
  const again = await build(minbaseDockerfile);
  assert.equal(again.status, 200, show("POST", "/v1/vms/snapshots", again));
  assert.equal(again.json.snapshotId, minbase.snapshotId, "a cache hit");
  assert.deepEqual(await phases(again.json.buildId), ["(cached)"]);
});

test("FROM the guest image in several stages: COPY --from copies a folder's contents, --chown and --chmod", async () => {
  const dockerfile = [
    "FROM debian:bookworm-slim AS builder",
    "WORKDIR /src",
    `RUN mkdir -p out/sub && echo built-${TAG} > out/a && echo deep > out/sub/b && useradd -M app`,
    "FROM builder AS checked",
    "RUN test -f /src/out/a && echo checked > /src/out/checked",
    "FROM debian:bookworm-slim",
    "RUN useradd -M app",
    "COPY --from=checked --chown=app:app --chmod=750 /src/out /opt/out",
  ].join("\n");
  const res = await build(dockerfile);
  assert.equal(res.status, 200, show("POST", "/v1/vms/snapshots", res));
  const names = await phases(res.json.buildId);
  assert.ok(names.includes("base image: stage checked from the guest image"), names.join(", "));
  assert.ok(!names.includes("base image: stage builder from the guest image"), "a stage nothing copies from is not made");
  const id = await vmFrom(res.json.snapshotId);
  const r = await exec(id, "cat /opt/out/a /opt/out/sub/b /opt/out/checked; stat -c '%U %a' /opt/out/a; test ! -e /src && echo no-src");
  assert.equal(r.stdout, `built-${TAG}\ndeep\nchecked\napp 750\nno-src\n`, r.stderr);
});

test("an image that does not resolve, and one that cannot boot, fail with errors that say why", async () => {
  const missing = `${REG}/sprout-test/missing-${TAG}:1`;
  const r1 = await build(`FROM ${missing}\nRUN true`);
  expectError(r1, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  assert.ok(r1.json.message.includes(missing), r1.json.message);
  assert.match(r1.json.message, /manifest unknown/);

  const r2 = await build(`FROM ${REG}/sprout-test/nosystemd:1\nRUN true`);
  assert.equal(r2.status, 500, show("POST", "/v1/vms/snapshots", r2));
  assert.match(r2.json.message, /no \/bin\/sh/);
  const b = await ok("GET", `/v1/vms/builds/${r2.json.buildId}`);
  assert.equal(b.state ?? b.status, "failed");
  assert.match(b.failureReason, /bootable/);

  const r3 = await build(`FROM debian:bookworm\nCOPY --from=nowhere-$(id) /x /y`);
  expectError(r3, 400, "CREATE_SNAPSHOT_BAD_REQUEST");
  assert.match(r3.json.message, /neither an earlier stage nor an image/);
});
