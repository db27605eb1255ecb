/*
 * vmm_metrics: the VM manager's figures: VMs by state, the warm pool, how
 * long restores, claims, forks, suspends and resumes took, bytes on disk
 * and what the QEMUs hold in memory, for /healthz and /metrics.
 */
#include "lib/metrics.h"
#include "vmm/vmm_int.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vmm_stats(struct vmm *m, struct vmm_stats *ret)
{
        *ret = (struct vmm_stats){0};
        pthread_mutex_lock(&m->lock);
        for (struct vm *vm = m->vms; vm; vm = vm->next) {
                if (vm->state == VM_RUNNING || vm->state == VM_STARTING || vm->state == VM_SUSPENDING)
                        ret->guest_mem_mb += vm->mem_mb;
                if (vm->pooled || vm->hidden)
                        continue;
                if (vm->internal)
                        ret->internal_vms++;
                else if (vm->state < VM_STATE_COUNT)
                        ret->vms_by_state[vm->state]++;
        }
        pool_stats(m, ret);
        pthread_mutex_unlock(&m->lock);
}

/* Resident bytes of the QEMUs running VMs of this data dir (their command
 * lines name it), from /proc. */
static int64_t qemu_rss(struct vmm *m, int *ret_n)
{
        DIR *d = opendir("/proc");
        struct dirent *de;
        int64_t total = 0;

        *ret_n = 0;
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                char path[300], comm[32] = "", *cmd = NULL, *status = NULL, *rss;
                size_t len = 0;

                if (de->d_name[0] < '1' || de->d_name[0] > '9')
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
                {
                        FILE *f = fopen(path, "r");

                        if (!f)
                                continue;
                        if (!fgets(comm, sizeof(comm), f))
                                comm[0] = 0;
                        fclose(f);
                }
                if (strncmp(comm, "qemu-system", 11))
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
                if (read_file(path, 1 << 16, &cmd, &len) == 0 &&
                    memmem(cmd, len, m->data_dir, strlen(m->data_dir))) {
                        snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
                        if (read_file(path, 1 << 16, &status, &len) == 0 &&
                            (rss = strstr(status, "VmRSS:"))) {
                                total += strtoll(rss + 6, NULL, 10) * 1024;
                                (*ret_n)++;
                        }
                }
                free(cmd);
                free(status);
        }
        closedir(d);
        return total;
}

void vmm_metrics(struct vmm *m, struct strbuf *b)
{
        static const struct {
                const char *name, *help;
                size_t off;
        } histos[] = {
            {"sprout_vm_restore_seconds", "A create's restore of its snapshot (not from the warm pool).",
             offsetof(struct vmm, h_restore)},
            {"sprout_vm_pool_claim_seconds", "A create's resume of a VM from the warm pool.",
             offsetof(struct vmm, h_claim)},
            {"sprout_vm_fork_seconds", "A fork, all its copies.", offsetof(struct vmm, h_fork)},
            {"sprout_vm_suspend_seconds", "A suspend.", offsetof(struct vmm, h_suspend)},
            {"sprout_vm_resume_seconds", "A resume of a suspended VM.", offsetof(struct vmm, h_resume)},
            {"sprout_vm_cold_boot_seconds", "A start of a stopped VM.", offsetof(struct vmm, h_cold_boot)},
        };
        struct vmm_stats s;
        int nqemu;
        int64_t rss = qemu_rss(m, &nqemu);

        vmm_stats(m, &s);
        strbuf_printf(b, "# HELP sprout_vms Clients' VMs by state.\n# TYPE sprout_vms gauge\n");
        for (int i = 0; i < VM_STATE_COUNT; i++)
                strbuf_printf(b, "sprout_vms{state=\"%s\"} %d\n", vm_state_name((enum vm_state)i),
                              s.vms_by_state[i]);
        strbuf_printf(b,
                      "# HELP sprout_build_vms Builds' temporary VMs.\n# TYPE sprout_build_vms gauge\n"
                      "sprout_build_vms %d\n",
                      s.internal_vms);
        strbuf_printf(b,
                      "# HELP sprout_warm_pool_vms VMs restored and paused, waiting for a create.\n"
                      "# TYPE sprout_warm_pool_vms gauge\nsprout_warm_pool_vms %d\n",
                      s.pool_vms);
        strbuf_printf(b,
                      "# HELP sprout_warm_pool_memory_bytes Guest memory of the pooled VMs.\n"
                      "# TYPE sprout_warm_pool_memory_bytes gauge\nsprout_warm_pool_memory_bytes %lld\n",
                      (long long)s.pool_mem_mb << 20);
        strbuf_printf(b,
                      "# HELP sprout_warm_pool_hits_total Creates served from the warm pool.\n"
                      "# TYPE sprout_warm_pool_hits_total counter\nsprout_warm_pool_hits_total %lld\n",
                      (long long)s.pool_hits);
        strbuf_printf(b,
                      "# HELP sprout_warm_pool_misses_total Creates the warm pool had no VM for.\n"
                      "# TYPE sprout_warm_pool_misses_total counter\nsprout_warm_pool_misses_total %lld\n",
                      (long long)s.pool_misses);
        strbuf_printf(b,
                      "# HELP sprout_guest_memory_bytes Guest memory of the VMs whose QEMU runs.\n"
                      "# TYPE sprout_guest_memory_bytes gauge\nsprout_guest_memory_bytes %lld\n",
                      (long long)s.guest_mem_mb << 20);
        strbuf_printf(b,
                      "# HELP sprout_qemu_processes QEMU processes of this server.\n"
                      "# TYPE sprout_qemu_processes gauge\nsprout_qemu_processes %d\n",
                      nqemu);
        strbuf_printf(b,
                      "# HELP sprout_qemu_resident_bytes What those QEMUs hold in memory (RSS).\n"
                      "# TYPE sprout_qemu_resident_bytes gauge\nsprout_qemu_resident_bytes %lld\n",
                      (long long)rss);
        strbuf_printf(b,
                      "# HELP sprout_storage_bytes Bytes of VMs and snapshots on disk (the storage quota's "
                      "count).\n# TYPE sprout_storage_bytes gauge\nsprout_storage_bytes %lld\n",
                      (long long)storage_used(m));
        strbuf_printf(b,
                      "# HELP sprout_data_free_bytes Free bytes where the data dir is.\n"
                      "# TYPE sprout_data_free_bytes gauge\nsprout_data_free_bytes %lld\n",
                      (long long)data_free(m));
        for (size_t i = 0; i < sizeof(histos) / sizeof(histos[0]); i++) {
                strbuf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", histos[i].name, histos[i].help,
                              histos[i].name);
                histo_format(b, histos[i].name, "", (const struct histo *)((const char *)m + histos[i].off));
        }
}
