/*
 * net: each VM's network. A VM gets a network namespace of its own that
 * holds a TAP device for the guest and one end of a veth pair whose other
 * end is in the host's namespace. Every guest sees the same addresses
 * (itself 10.0.2.15, its gateway 10.0.2.2, DNS 10.0.2.3, as QEMU's
 * user-mode networking gives them), so snapshots and forks need no
 * renumbering: the namespace translates the guest to its veth address,
 * the host translates that to its own. The host's nftables table
 * "inet sprout" decides what guests reach: by default the internet and
 * the host's DNS resolvers, never the host itself, other VMs, link-local
 * or private ranges. Commands run are ip(8) and nft(8). Never logs.
 */
#ifndef SPROUT_NET_H
#define SPROUT_NET_H

#include <limits.h>
#include <stddef.h>

struct net_policy {
        int egress;               /* 1: guests reach the internet (what is not denied); 0: only allow */
        /* IPv4 CIDRs guests always reach, the host's own addresses in them
         * too (a service on the host that guests are meant to use);
         * NULL-terminated, may be NULL */
        const char *const *allow;
        const char *const *deny;  /* IPv4 CIDRs guests never reach; likewise */
};

struct net;

/* Checks the host can do this (root with CAP_NET_ADMIN, ip and nft),
 * turns on IPv4 forwarding, finds the host's DNS resolvers and writes the
 * host's rules (replacing those of an earlier run in one transaction; the
 * namespaces of running VMs are kept). -errno with what is missing in
 * msg. */
int net_new(const struct net_policy *p, struct net **ret, char *msg, size_t size);
void net_free(struct net *n);

/* The DNS resolver guests' queries go to, or "" when the host has none
 * they can reach. */
const char *net_resolver(const struct net *n);

/* Makes (again) the namespace of the VM id, numbered k (1..65535, unique
 * among running VMs), with its veth and TAP ("tap0"); *ret_path is the
 * namespace's file to join. */
int net_create(struct net *n, const char *id, unsigned k, char ret_path[PATH_MAX]);

/* Removes the VM's namespace (its veth pair goes with it once nothing
 * runs in it). */
void net_destroy(struct net *n, const char *id, unsigned k);

#endif
