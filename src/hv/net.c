/*
 * net: see net.h. Depends on util. Nothing from a request reaches a
 * command here: names are made from VM ids (checked [a-z0-9]) and
 * numbers, and CIDRs from the daemon's flags are parsed before use.
 */
#include "hv/net.h"
#include "lib/util.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The veth pairs' addresses: a /30 per VM, k * 4 into 100.64.0.0/10
 * (shared address space, never routed on the internet). */
#define VETH_NET 0x64400000u /* 100.64.0.0 */

struct net {
        char resolver[INET_ADDRSTRLEN];
};

/* Ranges a guest never reaches unless allowed: "this" network, private,
 * shared, loopback, link-local (cloud metadata), IETF, benchmarking,
 * multicast and reserved. */
static const char blocked[] = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, 169.254.0.0/16, 172.16.0.0/12,"
                              " 192.0.0.0/24, 192.168.0.0/16, 198.18.0.0/15, 224.0.0.0/3";

const char *net_resolver(const struct net *n)
{
        return n->resolver;
}

/* Runs argv (found in PATH) with input on its stdin, in the namespace at
 * netns when not NULL (with IPv4 forwarding turned on there). Its stderr
 * goes into msg. 0, or -EIO when it failed, or -errno. */
static int run(const char *netns, char *const argv[], const char *input, char *msg, size_t size)
{
        int in[2], err[2], status;
        size_t got = 0;
        ssize_t n;
        pid_t pid;

        if (pipe2(in, O_CLOEXEC) < 0)
                return -errno;
        if (pipe2(err, O_CLOEXEC) < 0) {
                close(in[0]);
                close(in[1]);
                return -errno;
        }
        pid = fork();
        if (pid == 0) {
                int null = open("/dev/null", O_WRONLY | O_CLOEXEC), fd;

                if (netns) {
                        fd = open(netns, O_RDONLY | O_CLOEXEC);
                        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                                _exit(126);
                        /* /proc/sys/net follows the opener's namespace. */
                        fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
                        if (fd < 0 || write(fd, "1", 1) != 1)
                                _exit(126);
                        close(fd);
                }
                if (dup2(in[0], 0) < 0 || dup2(null, 1) < 0 || dup2(err[1], 2) < 0)
                        _exit(126);
                execvp(argv[0], argv);
                _exit(127);
        }
        close(in[0]);
        close(err[1]);
        if (pid < 0) {
                close(in[1]);
                close(err[0]);
                return -errno;
        }
        /* A child that failed early does not read; its status says why. */
        if (input && write(in[1], input, strlen(input)) < 0)
                input = NULL;
        close(in[1]);
        if (size)
                msg[0] = 0;
        while (size && got + 1 < size && (n = read(err[0], msg + got, size - got - 1)) > 0)
                got += (size_t)n;
        if (size)
                msg[got] = 0;
        close(err[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                if (size && !got)
                        snprintf(msg, size, "%s exited with status %d", argv[0],
                                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
                return -EIO;
        }
        return 0;
}

/* The first IPv4 resolver of a resolv.conf that is not on loopback
 * (guests cannot reach the host's loopback), into out. */
static int find_resolver(const char *path, char *out, size_t size)
{
        char *text = NULL, *line, *save = NULL;
        struct in_addr a;
        int found = 0;

        if (read_file(path, 1 << 16, &text, NULL) < 0)
                return 0;
        for (line = strtok_r(text, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
                char addr[64];

                if (sscanf(line, " nameserver %63s", addr) != 1 || inet_pton(AF_INET, addr, &a) != 1 ||
                    (ntohl(a.s_addr) >> 24) == 127)
                        continue;
                found = inet_ntop(AF_INET, &a, out, (socklen_t)size) != NULL;
        }
        free(text);
        return found;
}

/* Appends CIDRs (checked) to a set's elements. */
static int add_cidrs(struct strbuf *b, const char *const *cidrs, char *msg, size_t size)
{
        for (size_t i = 0; cidrs && cidrs[i]; i++) {
                char addr[64];
                struct in_addr a;
                unsigned prefix = 32;
                const char *slash = strchr(cidrs[i], '/');
                size_t len = slash ? (size_t)(slash - cidrs[i]) : strlen(cidrs[i]);
                char text[96];

                if (len >= sizeof(addr) || (slash && (sscanf(slash + 1, "%u", &prefix) != 1 || prefix > 32))) {
                        snprintf(msg, size, "'%s' is not an IPv4 CIDR", cidrs[i]);
                        return -EINVAL;
                }
                memcpy(addr, cidrs[i], len);
                addr[len] = 0;
                if (inet_pton(AF_INET, addr, &a) != 1) {
                        snprintf(msg, size, "'%s' is not an IPv4 CIDR", cidrs[i]);
                        return -EINVAL;
                }
                snprintf(text, sizeof(text), "%s%s/%u", b->len ? ", " : "", addr, prefix);
                strbuf_add(b, text, strlen(text));
        }
        return 0;
}

/* The host's rules. Guests' packets come in on spv* interfaces. */
static int host_rules(const struct net *n, const struct net_policy *p, char *msg, size_t size)
{
        struct strbuf allow = {0}, deny = {0}, rules = {0};
        char *argv[] = {"nft", "-f", "-", NULL};
        char head[1024];
        int r = add_cidrs(&allow, p->allow, msg, size);

        if (r == 0)
                r = add_cidrs(&deny, p->deny, msg, size);
        if (r < 0)
                goto out;
        /* Added, then deleted, then made anew: one transaction whether or
         * not an earlier run left the table. */
        snprintf(head, sizeof(head),
                 "add table inet sprout\n"
                 "delete table inet sprout\n"
                 "table inet sprout {\n"
                 "  set blocked { type ipv4_addr; flags interval; elements = { %s } }\n",
                 blocked);
        strbuf_add(&rules, head, strlen(head));
#define ADD_SET(name, b)                                                                                              \
        do {                                                                                                          \
                char line_[256];                                                                                      \
                snprintf(line_, sizeof(line_), "  set %s { type ipv4_addr; flags interval;%s", name,                  \
                         (b).len ? " elements = { " : " }\n");                                                        \
                strbuf_add(&rules, line_, strlen(line_));                                                             \
                if ((b).len) {                                                                                        \
                        strbuf_add(&rules, (b).s, (b).len);                                                           \
                        strbuf_add(&rules, " } }\n", 5);                                                              \
                }                                                                                                     \
        } while (0)
        ADD_SET("allowed", allow);
        ADD_SET("denied", deny);
#undef ADD_SET
        snprintf(head, sizeof(head),
                 "  chain input { type filter hook input priority 0; policy accept;\n"
                 "    iifname \"spv*\" ip daddr @denied drop\n"
                 "    iifname \"spv*\" ip daddr @allowed accept\n"
                 "    iifname \"spv*\" drop\n"
                 "  }\n"
                 "  chain forward { type filter hook forward priority 0; policy accept;\n"
                 "%s%s%s"
                 "    iifname \"spv*\" ip daddr @denied drop\n"
                 "    iifname \"spv*\" ip daddr @allowed accept\n"
                 "    iifname \"spv*\" ip daddr @blocked drop\n"
                 "    iifname \"spv*\" meta nfproto ipv6 drop\n"
                 "    iifname \"spv*\" %s\n"
                 "    oifname \"spv*\" ct state established,related accept\n"
                 "    oifname \"spv*\" drop\n"
                 "  }\n"
                 "  chain postrouting { type nat hook postrouting priority 100;\n"
                 "    ip saddr 100.64.0.0/10 oifname != \"spv*\" masquerade\n"
                 "  }\n"
                 "}\n",
                 n->resolver[0] ? "    iifname \"spv*\" ip daddr " : "", n->resolver,
                 n->resolver[0] ? " meta l4proto { tcp, udp } th dport 53 accept\n" : "",
                 p->egress ? "accept" : "drop");
        strbuf_add(&rules, head, strlen(head));
        r = rules.oom ? -ENOMEM : run(NULL, argv, rules.s, msg, size);
out:
        free(allow.s);
        free(deny.s);
        free(rules.s);
        return r;
}

int net_new(const struct net_policy *p, struct net **ret, char *msg, size_t size)
{
        struct net *n;
        int r;

        if (geteuid() != 0) {
                snprintf(msg, size, "sproutd does not run as root (CAP_NET_ADMIN)");
                return -EPERM;
        }
        n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        if (!find_resolver("/etc/resolv.conf", n->resolver, sizeof(n->resolver)))
                find_resolver("/run/systemd/resolve/resolv.conf", n->resolver, sizeof(n->resolver));
        r = write_existing("/proc/sys/net/ipv4/ip_forward", "1");
        if (r < 0)
                snprintf(msg, size, "cannot turn on IPv4 forwarding: %s", strerror(-r));
        if (r == 0)
                r = host_rules(n, p, msg, size);
        if (r < 0) {
                free(n);
                return r;
        }
        *ret = n;
        return 0;
}

void net_free(struct net *n)
{
        free(n);
}

static void names(const char *id, unsigned k, char ns[64], char veth[16])
{
        snprintf(ns, 64, "sprout-%s", id);
        snprintf(veth, 16, "spv%u", k);
}

/* The veth's address in the host (side 1) or the namespace (side 2). */
static void veth_addr(unsigned k, int side, char out[INET_ADDRSTRLEN])
{
        struct in_addr a = {.s_addr = htonl(VETH_NET + k * 4 + (unsigned)side)};

        inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

int net_create(struct net *n, const char *id, unsigned k, char ret_path[PATH_MAX])
{
        char ns[64], veth[16], host[INET_ADDRSTRLEN], guest_side[INET_ADDRSTRLEN], script[2048], msg[512];
        char *ip_root[] = {"ip", "-batch", "-", NULL};
        char *ip_ns[] = {"ip", "-n", ns, "-batch", "-", NULL};
        char *nft[] = {"nft", "-f", "-", NULL};
        int r;

        if (k == 0 || k >= 65536)
                return -ERANGE;
        msg[0] = 0;
        names(id, k, ns, veth);
        veth_addr(k, 1, host);
        veth_addr(k, 2, guest_side);
        if (path_fmt(ret_path, PATH_MAX, "/run/netns/%s", ns) < 0)
                return -ENAMETOOLONG;
        /* What a crash may have left (a namespace file, or a veth whose
         * namespace went): only then is there anything to remove. */
        if (access(ret_path, F_OK) == 0 || if_nametoindex(veth) != 0)
                net_destroy(n, id, k);
        snprintf(script, sizeof(script),
                 "netns add %s\n"
                 "link add %s type veth peer name eth0 netns %s\n"
                 "addr add %s/30 dev %s\n"
                 "link set %s up\n",
                 ns, veth, ns, host, veth, veth);
        r = run(NULL, ip_root, script, msg, sizeof(msg));
        if (r == 0) {
                snprintf(script, sizeof(script),
                         "link set lo up\n"
                         "addr add %s/30 dev eth0\n"
                         "link set eth0 up\n"
                         "route add default via %s\n"
                         "tuntap add dev tap0 mode tap vnet_hdr\n"
                         "addr add 10.0.2.2/24 dev tap0\n"
                         "addr add 10.0.2.3/32 dev tap0\n"
                         "link set tap0 up\n",
                         guest_side, host);
                r = run(NULL, ip_ns, script, msg, sizeof(msg));
        }
        /* 10.0.2.3 is there only to answer the guest's ARP for its DNS
         * server. In the namespace: the guest's DNS queries go to the host's
         * resolver, everything else leaves as the namespace's address,
         * and nothing from the guest reaches the namespace itself. */
        if (r == 0) {
                char dns[256] = "";

                if (n->resolver[0])
                        snprintf(dns, sizeof(dns),
                                 "    iifname \"tap0\" ip daddr 10.0.2.3 meta l4proto { tcp, udp } th dport 53"
                                 " dnat to %s\n",
                                 n->resolver);
                snprintf(script, sizeof(script),
                         "table ip sprout {\n"
                         "  chain pre { type nat hook prerouting priority -100;\n%s  }\n"
                         "  chain post { type nat hook postrouting priority 100; oifname \"eth0\" masquerade; }\n"
                         /* The guest reaches nothing of the namespace but the
                          * answers to connections made from it (the ingress
                          * proxy's, see vmm_ingress.c). */
                         "  chain input { type filter hook input priority 0;\n"
                         "    iifname \"tap0\" ct state established,related accept; iifname \"tap0\" drop; }\n"
                         "}\n",
                         dns);
                r = run(ret_path, nft, script, msg, sizeof(msg));
        }
        if (r < 0) {
                log_err("network namespace %s: %s (%s)", ns, strerror(-r), msg);
                net_destroy(n, id, k);
        }
        return r;
}

void net_destroy(struct net *n, const char *id, unsigned k)
{
        char ns[64], veth[16], script[256];
        char *ip_force[] = {"ip", "-force", "-batch", "-", NULL};

        (void)n;
        names(id, k, ns, veth);
        snprintf(script, sizeof(script), "netns del %s\nlink del %s\n", ns, veth);
        run(NULL, ip_force, script, NULL, 0);
}
