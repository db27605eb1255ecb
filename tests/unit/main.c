/*
 * Runs every registered unit test in registration order, or only those whose
 * name contains argv[1], and prints "N passed, N failed".
 */
#include "unit.h"

#include <string.h>

static struct unit_test *unit_head, **unit_tail = &unit_head;

void unit_register(struct unit_test *t)
{
        *unit_tail = t;
        unit_tail = &t->next;
}

int main(int argc, char **argv)
{
        int passed = 0, failed = 0;

        for (struct unit_test *t = unit_head; t; t = t->next) {
                int f = 0;

                if (argc > 1 && !strstr(t->name, argv[1]))
                        continue;
                t->fn(&f);
                printf("%s %s\n", f ? "FAIL" : "ok  ", t->name);
                fflush(stdout);
                if (f)
                        failed++;
                else
                        passed++;
        }
        printf("%d passed, %d failed\n", passed, failed);
        return failed ? 1 : 0;
}
