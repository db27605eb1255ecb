/*
 * sproutd: the Sprout daemon. Parses flags, opens the store, starts the VM
 * manager and the HTTP server, and waits for SIGTERM or SIGINT. VMs keep
 * running across a daemon restart; the next start re-attaches them.
 */
#include "daemon.h"
#include "build/build.h"
#include "hv/qemu.h"
#include "lib/util.h"
#include "store/store.h"
#include "vmm/vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static void usage(FILE *f)
{
        fprintf(f, "usage: sproutd --listen HOST:PORT --data-dir DIR [options]\n"
                   "  --image DIR            guest image (default $SPROUT_CACHE/images/current)\n"
                   "  --accel auto|kvm|tcg   accelerator (default auto)\n"
                   "  --mem-mb N             guest RAM for new VMs (default 1024)\n"
                   "  --vcpus N              vCPUs for new VMs (default 1)\n"
                   "  --max-vms N            VMs that may exist at once (default 64)\n"
                   "  --warm-pool N          keep N VMs restored and paused from the default snapshot,\n"
                   "                         for creates to claim (default 2; 0: none)\n"
                   "  --warm-pool-memory-mb N  guest memory all pooled VMs may take (0: no pool); snapshots\n"
                   "                         used lately get one each within it (default: N+2 VMs' worth)\n"
                   "  --web-dir DIR          the web console's files, served at / (default: web/ beside\n"
                   "                         this program, which `make web` fills)\n"
                   "  --max-body-bytes N     cap on an HTTP request body (default 100 MiB)\n"
                   "  --max-file-bytes N     cap on one file read or written (default 64 MiB)\n"
                   "  --max-output-bytes N   cap on an exec's output (default 16 MiB)\n"
                   "  --storage-quota-bytes N  past it, sticky VMs are evicted, LRU first (default: none)\n"
                   "  --disk-reserve-bytes N   refuse creates, forks and snapshots while the data dir has\n"
                   "                           less free space (default 1 GiB)\n"
                   "  --max-vm-memory-mb N   cap on one VM's memory (default 16384)\n"
                   "  --max-vm-vcpus N       cap on one VM's vCPUs (default 16)\n"
                   "  --max-vm-disk-gb N     cap on one VM's disk (default 256)\n"
                   "  --max-request-seconds N  cap on an exec's run time, an await and a stream (default 3600)\n"
                   "  --account-max-long-requests N  execs, awaits and streams one account may have\n"
                   "                         open at once (default 32)\n"
                   "  --vm-uid-base N        VMs' QEMUs run as uids N+1, N+2... (default 2100000000)\n"
                   "  --egress allow|deny    guests reach the internet (default), or only --egress-allow\n"
                   "  --egress-allow CIDR    guests always reach it, private ranges and host services bound\n"
                   "                         to an address in it too (repeatable)\n"
                   "  --egress-deny CIDR     guests never reach it (repeatable)\n"
                   "  --registries-conf FILE  container registries for a Dockerfile's FROM (default\n"
                   "                         $CONTAINERS_REGISTRIES_CONF, else the host's)\n"
                   "  --proxy-listen HOST:PORT  serve VMs' ports over HTTP there (default: not at all)\n"
                   "  --domain SUFFIX        VMs' host names: <vmId>.SUFFIX (port 443), <port>-<vmId>.SUFFIX\n"
                   "                         (default vm.localhost, which browsers resolve to loopback)\n"
                   "  --proxy-timeout-seconds N  an idle proxied connection, or a VM that does not\n"
                   "                         answer, ends after N s (default 60)\n"
                   "  --proxy-tls-cert FILE --proxy-tls-key FILE  also serve HTTPS on the proxy port with\n"
                   "                         this PEM certificate chain and key (e.g. for *.SUFFIX)\n"
                   "  --unconfined           run QEMU as this user, without namespaces and with user-mode\n"
                   "                         networking that reaches the host: only where sproutd cannot\n"
                   "                         be root, and never with untrusted guests\n"
                   "every account's limits, unless `sprout keys create` set its own (0: none):\n"
                   "  --account-max-vms N (64)  --account-max-running-vms N (32)  --account-max-snapshots N (256)\n"
                   "  --account-max-memory-mb N (65536)  --account-max-storage-bytes N (none)\n"
                   "environment: SPROUT_BOOTSTRAP_KEY=KEY makes sure an admin key KEY exists (and\n"
                   "revokes the previous one); sproutd drops it from its environment once read;\n"
                   "SPROUT_CRASH_AT=NAME[:N] (tests only) aborts at the Nth passage through a crash point\n");
}

static long long parse_num(const char *s, const char *flag, long long min, long long max)
{
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || *end || v < min || v > max) {
                fprintf(stderr, "sproutd: %s wants a number from %lld to %lld\n", flag, min, max);
                exit(2);
        }
        return v;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                {"listen", required_argument, NULL, 'l'},    {"data-dir", required_argument, NULL, 'd'},
                {"image", required_argument, NULL, 'i'},     {"accel", required_argument, NULL, 'a'},
                {"mem-mb", required_argument, NULL, 'm'},    {"vcpus", required_argument, NULL, 'c'},
                {"max-vms", required_argument, NULL, 'v'},   {"max-body-bytes", required_argument, NULL, 'b'},
                {"max-file-bytes", required_argument, NULL, 'f'},
                {"max-output-bytes", required_argument, NULL, 'o'},
                {"storage-quota-bytes", required_argument, NULL, 'q'},
                {"disk-reserve-bytes", required_argument, NULL, 'R'},
                {"max-vm-memory-mb", required_argument, NULL, 'M'},
                {"max-vm-vcpus", required_argument, NULL, 'C'},
                {"max-vm-disk-gb", required_argument, NULL, 'D'},
                {"max-request-seconds", required_argument, NULL, 'T'},
                {"unconfined", no_argument, NULL, 'U'},
                {"egress", required_argument, NULL, 'E'},
                {"egress-allow", required_argument, NULL, 'A'},
                {"egress-deny", required_argument, NULL, 'N'},
                {"vm-uid-base", required_argument, NULL, 'G'},
                {"account-max-long-requests", required_argument, NULL, 'L'},
                {"account-max-vms", required_argument, NULL, 1},
                {"account-max-running-vms", required_argument, NULL, 2},
                {"account-max-snapshots", required_argument, NULL, 3},
                {"account-max-memory-mb", required_argument, NULL, 4},
                {"account-max-storage-bytes", required_argument, NULL, 5},
                {"registries-conf", required_argument, NULL, 6},
                {"proxy-listen", required_argument, NULL, 7},
                {"domain", required_argument, NULL, 8},
                {"proxy-timeout-seconds", required_argument, NULL, 9},
                {"proxy-tls-cert", required_argument, NULL, 10},
                {"proxy-tls-key", required_argument, NULL, 11},
                {"warm-pool", required_argument, NULL, 12},
                {"warm-pool-memory-mb", required_argument, NULL, 13},
                {"web-dir", required_argument, NULL, 14},
                {"help", no_argument, NULL, 'h'},            {0},
        };
        struct sprout d = {.api = {.max_vm_mem_mb = 16384,
                                   .max_vm_vcpus = 16,
                                   .max_vm_disk_gb = 256,
                                   .max_long_requests = 32,
                                   .max_request_ms = 3600 * 1000}};
        struct http_config hc = {.max_body = 100u << 20, .max_connections = 512};
        struct vmm_config vc = {.mem_mb = 1024,
                                .warm_pool = 2,
                                .warm_pool_mem_mb = -1,
                                .vcpus = 1,
                                .max_vms = 64,
                                .max_file_size = 64u << 20,
                                .max_output = 16u << 20,
                                /* Every resource an account can make has a limit. */
                                .account_limits = {.vms = 64, .running = 32, .snapshots = 256, .mem_mb = 65536,
                                                   .storage = 0},
                                .disk_reserve = 1LL << 30,
                                .max_exec_ms = 3600 * 1000,
                                .uid_base = 2100000000u,
                                .net = {.egress = 1}};
        const char *listen = NULL, *data_dir = NULL, *image = NULL, *accel = "auto", *key;
        const char *registries_conf = getenv("CONTAINERS_REGISTRIES_CONF");
        const char *web_dir = NULL;
        char exe_web[PATH_MAX], web_real[PATH_MAX];
        struct proxy_config pc = {.domain = "vm.localhost", .timeout_s = 60, .max_conns = 4096};
        char image_buf[PATH_MAX], db[PATH_MAX], lock_path[PATH_MAX], host[64];
        sigset_t set;
        const char *egress_allow[64] = {0}, *egress_deny[64] = {0};
        size_t n_allow = 0, n_deny = 0;
        int opt, port, sig, lock_fd, r;
        char *colon;

        while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (opt) {
                case 'l': listen = optarg; break;
                case 'd': data_dir = optarg; break;
                case 'i': image = optarg; break;
                case 'a': accel = optarg; break;
                case 'm': vc.mem_mb = (int)parse_num(optarg, "--mem-mb", 128, 65536); break;
                case 'c': vc.vcpus = (int)parse_num(optarg, "--vcpus", 1, 64); break;
                case 'v': vc.max_vms = (int)parse_num(optarg, "--max-vms", 1, 4096); break;
                case 'b': hc.max_body = (size_t)parse_num(optarg, "--max-body-bytes", 1024, 1LL << 32); break;
                case 'f': vc.max_file_size = (size_t)parse_num(optarg, "--max-file-bytes", 1, 1LL << 32); break;
                case 'o': vc.max_output = (size_t)parse_num(optarg, "--max-output-bytes", 1024, 1LL << 32); break;
                case 'q': vc.storage_quota = parse_num(optarg, "--storage-quota-bytes", 0, 1LL << 50); break;
                case 'R': vc.disk_reserve = parse_num(optarg, "--disk-reserve-bytes", 0, 1LL << 50); break;
                case 'M': d.api.max_vm_mem_mb = (int)parse_num(optarg, "--max-vm-memory-mb", 128, 1 << 20); break;
                case 'C': d.api.max_vm_vcpus = (int)parse_num(optarg, "--max-vm-vcpus", 1, 256); break;
                case 'D': d.api.max_vm_disk_gb = (int)parse_num(optarg, "--max-vm-disk-gb", 1, 1 << 16); break;
                case 'T':
                        d.api.max_request_ms = parse_num(optarg, "--max-request-seconds", 1, 7 * 86400) * 1000;
                        vc.max_exec_ms = d.api.max_request_ms;
                        break;
                case 'U': vc.unconfined = 1; break;
                case 'E':
                        if (strcmp(optarg, "allow") && strcmp(optarg, "deny")) {
                                fprintf(stderr, "sproutd: --egress wants allow or deny\n");
                                return 2;
                        }
                        vc.net.egress = !strcmp(optarg, "allow");
                        break;
                case 'A':
                case 'N': {
                        const char **list = opt == 'A' ? egress_allow : egress_deny;
                        size_t *n = opt == 'A' ? &n_allow : &n_deny;

                        if (*n + 1 >= sizeof(egress_allow) / sizeof(egress_allow[0])) {
                                fprintf(stderr, "sproutd: at most 63 --egress-allow and --egress-deny each\n");
                                return 2;
                        }
                        list[(*n)++] = optarg;
                        break;
                }
                case 'G': vc.uid_base = (unsigned)parse_num(optarg, "--vm-uid-base", 1000, 4000000000LL); break;
                case 'L': d.api.max_long_requests = (int)parse_num(optarg, "--account-max-long-requests", 1, 100000); break;
                case 1: vc.account_limits.vms = parse_num(optarg, "--account-max-vms", 0, 1 << 20); break;
                case 2: vc.account_limits.running = parse_num(optarg, "--account-max-running-vms", 0, 1 << 20); break;
                case 3: vc.account_limits.snapshots = parse_num(optarg, "--account-max-snapshots", 0, 1 << 20); break;
                case 4: vc.account_limits.mem_mb = parse_num(optarg, "--account-max-memory-mb", 0, 1LL << 40); break;
                case 5: vc.account_limits.storage = parse_num(optarg, "--account-max-storage-bytes", 0, 1LL << 60); break;
                case 6: registries_conf = optarg; break;
                case 7: pc.listen = optarg; break;
                case 8: pc.domain = optarg; break;
                case 9: pc.timeout_s = (int)parse_num(optarg, "--proxy-timeout-seconds", 1, 86400); break;
                case 10: pc.tls_cert = optarg; break;
                case 11: pc.tls_key = optarg; break;
                case 12: vc.warm_pool = (int)parse_num(optarg, "--warm-pool", 0, 256); break;
                case 13: vc.warm_pool_mem_mb = parse_num(optarg, "--warm-pool-memory-mb", 0, 1LL << 30); break;
                case 14: web_dir = optarg; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (!listen || !data_dir || optind != argc) {
                usage(stderr);
                return 2;
        }
        if (vc.warm_pool_mem_mb < 0)
                vc.warm_pool_mem_mb = (int64_t)(vc.warm_pool + 2) * vc.mem_mb;
        if ((pc.tls_cert || pc.tls_key) && !pc.listen) {
                fprintf(stderr, "sproutd: --proxy-tls-cert and --proxy-tls-key need --proxy-listen\n");
                return 2;
        }
        colon = strrchr(listen, ':');
        if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof(host)) {
                fprintf(stderr, "sproutd: --listen wants HOST:PORT\n");
                return 2;
        }
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = 0;
        port = (int)parse_num(colon + 1, "--listen port", 1, 65535);
        if (!image) {
                const char *cache = getenv("SPROUT_CACHE"), *home = getenv("HOME");

                if (cache && *cache)
                        r = path_fmt(image_buf, sizeof(image_buf), "%s/images/current", cache);
                else
                        r = path_fmt(image_buf, sizeof(image_buf), "%s/.cache/sprout/images/current",
                                     home ? home : "/root");
                if (r < 0)
                        return 2;
                image = image_buf;
        }
        if (qemu_pick_accel(accel, &vc.accel) < 0) {
                fprintf(stderr, "sproutd: --accel wants auto, kvm or tcg\n");
                return 2;
        }

        r = mkdir_p(data_dir, 0700);
        if (r < 0 || path_fmt(db, sizeof(db), "%s/sprout.db", data_dir) < 0 ||
            path_fmt(lock_path, sizeof(lock_path), "%s/sproutd.lock", data_dir) < 0) {
                log_err("cannot use data dir %s: %s", data_dir, strerror(r < 0 ? -r : ENAMETOOLONG));
                return 1;
        }
        /* One daemon per data dir: two would fight over the same VMs. */
        lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
                log_err("data dir %s is in use by another sproutd", data_dir);
                return 1;
        }

        /* Signals are taken synchronously by the main thread only. */
        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);

        r = store_open(db, &d.store);
        if (r < 0) {
                log_err("cannot open the store %s: %s", db, strerror(-r));
                return 1;
        }
        /* The admin key must not outlive this point in the environment:
         * every child (QEMU, helpers) would inherit it. */
        key = getenv("SPROUT_BOOTSTRAP_KEY");
        if (key && *key) {
                int revoked = 0;

                r = store_ensure_admin_key(d.store, key, "admin", &revoked);
                if (r < 0) {
                        log_err("cannot store the bootstrap key: %s", strerror(-r));
                        return 1;
                }
                if (revoked > 0)
                        log_info("bootstrap key replaced: %d earlier bootstrap key(s) revoked", revoked);
        }
        unsetenv("SPROUT_BOOTSTRAP_KEY");
        crash_init();
        unsetenv("SPROUT_CRASH_AT");
        vc.data_dir = data_dir;
        vc.image_dir = image;
        vc.net.allow = egress_allow;
        vc.net.deny = egress_deny;
        log_info("sproutd starting: data dir %s, image %s, accelerator %s%s", data_dir, image,
                 qemu_accel_name(vc.accel), strcmp(accel, "auto") ? " (forced)" : " (auto-detected)");
        r = vmm_new(&vc, d.store, &d.vmm);
        if (r == 0)
                r = vmm_run(d.vmm);
        if (r < 0) {
                log_err("cannot start the VM manager: %s", strerror(-r));
                return 1;
        }
        r = builder_new(d.vmm, d.store, data_dir, registries_conf, &d.builder);
        if (r < 0) {
                log_err("cannot start the builder: %s", strerror(-r));
                return 1;
        }
        d.api.store = d.store;
        d.api.vmm = d.vmm;
        d.api.builder = d.builder;
        d.api.domain = pc.domain;
        if (api_init(&d.api) < 0) {
                log_err("out of memory");
                return 1;
        }
        hc.host = host;
        hc.port = port;
        /* The web console: --web-dir, else web/ beside the executable
         * (build/web, which `make web` fills). */
        if (!web_dir) {
                ssize_t n = readlink("/proc/self/exe", exe_web, sizeof(exe_web) - 5);
                char *slash = n > 0 ? memrchr(exe_web, '/', (size_t)n) : NULL;

                if (slash) {
                        strcpy(slash, "/web");
                        web_dir = exe_web;
                }
        }
        if (web_dir && realpath(web_dir, web_real)) {
                d.api.web_dir = web_real;
                log_info("web console: files from %s", web_real);
        } else {
                log_info("no web console: %s is missing (make web)", web_dir ? web_dir : "web/");
        }
        r = http_start(&hc, api_handle, &d.api, &d.http);
        if (r < 0) {
                log_err("cannot listen on %s:%d: %s", host, port, strerror(-r));
                return 1;
        }
        log_info("listening on http://%s:%d", host, port);
        if (d.api.web_dir)
                log_info("web console on http://%s:%d/ (sign in with an API key)", host, port);
        if (pc.listen) {
                char msg[1024];

                r = proxy_start(&pc, d.vmm, d.store, &d.proxy, msg, sizeof(msg));
                if (r < 0) {
                        log_err("ingress proxy: %s", msg);
                        return 1;
                }
                log_info("ingress proxy on http%s://%s/ (hosts <vmId>.%s, <port>-<vmId>.%s)",
                         pc.tls_cert ? "(s)" : "", pc.listen, pc.domain, pc.domain);
                /* For links to VMs' domains (the web console). */
                const char *colon = strrchr(pc.listen, ':');

                d.api.proxy_port = colon ? atoi(colon + 1) : 0;
                d.api.proxy_tls = pc.tls_cert != NULL;
        }

        while (sigwait(&set, &sig) != 0)
                ;
        log_info("signal %d: shutting down (VMs keep running)", sig);
        r = http_drain(d.http, 10000);
        if (r > 0) {
                /* A request can wait on a guest that does not answer (an exec
                 * without a timeout); the VMs and the store survive an exit
                 * now, and the next start takes them back. */
                log_warn("%d requests still in flight after 10 s; exiting without them", r);
                store_close(d.store);
                fflush(NULL);
                _exit(0);
        }
        r = builder_busy(d.builder);
        if (r > 0) {
                /* Its next start marks the builds failed and removes their
                 * temporary VMs, as after a crash. */
                log_warn("%d builds in progress; exiting without them", r);
                store_close(d.store);
                fflush(NULL);
                _exit(0);
        }
        proxy_stop(d.proxy);
        http_stop(d.http);
        builder_free(d.builder);
        api_free(&d.api);
        vmm_free(d.vmm);
        store_close(d.store);
        close(lock_fd);
        log_info("stopped");
        return 0;
}
