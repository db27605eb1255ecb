/*
 * unit: a minimal in-tree test runner. Each test file defines tests with
 * TEST(name) { ... } and checks with CHECK(cond); tests register themselves
 * at load time and tests/unit/main.c runs them all, one line each, and
 * closes with "N passed, N failed". A CHECK failure ends only its test.
 */
#ifndef SPROUT_UNIT_H
#define SPROUT_UNIT_H

#include <stdio.h>

struct unit_test {
        const char *name;
        void (*fn)(int *failed);
        struct unit_test *next;
};

void unit_register(struct unit_test *t);

#define TEST(name)                                                                                           \
        static void test_##name(int *unit_failed_);                                                          \
        static struct unit_test unit_##name = {#name, test_##name, NULL};                                    \
        __attribute__((constructor)) static void unit_reg_##name(void)                                       \
        {                                                                                                    \
                unit_register(&unit_##name);                                                                 \
        }                                                                                                    \
        static void test_##name(int *unit_failed_)

#define CHECK(cond)                                                                                          \
        do {                                                                                                 \
                if (!(cond)) {                                                                               \
                        fprintf(stderr, "    %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
                        *unit_failed_ = 1;                                                                   \
                        return;                                                                              \
                }                                                                                            \
        } while (0)

#endif
