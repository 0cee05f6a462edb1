/*
 * st_test.h - a tiny unit-test harness (header only).
 *
 *   ST_TEST(parses_header) { ST_CHECK(x == 1); ST_CHECK_NEAR(a, b, 1e-6); }
 *   int main(void) { return st_test_main(); }
 *
 * Tests register themselves through constructors. Each failed check prints
 * file:line and the expression and marks the test failed; the runner prints
 * "N passed, N failed" and returns non-zero when anything failed.
 */
#ifndef ST_TEST_H
#define ST_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*st_test_fn)(int *failed);
typedef struct { const char *name; st_test_fn fn; } st_test_entry;

#define ST_TEST_MAX 512
static st_test_entry st_test_list[ST_TEST_MAX];
static int st_test_count;

#define ST_TEST(name)                                                        \
    static void st_test_##name(int *st_failed_);                             \
    __attribute__((constructor)) static void st_test_reg_##name(void) {      \
        if (st_test_count < ST_TEST_MAX)                                     \
            st_test_list[st_test_count++] = (st_test_entry){#name, st_test_##name}; \
    }                                                                        \
    static void st_test_##name(int *st_failed_)

#define ST_CHECK(cond) do { if (!(cond)) {                                   \
        fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        *st_failed_ = 1; } } while (0)
#define ST_CHECK_MSG(cond, ...) do { if (!(cond)) {                          \
        fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
        fprintf(stderr, __VA_ARGS__); fputc('\n', stderr);                   \
        *st_failed_ = 1; } } while (0)
#define ST_REQUIRE(cond) do { if (!(cond)) {                                 \
        fprintf(stderr, "  %s:%d: required: %s\n", __FILE__, __LINE__, #cond); \
        *st_failed_ = 1; return; } } while (0)
#define ST_CHECK_NEAR(a, b, tol) do { double st_a_ = (a), st_b_ = (b);       \
        if (!(fabs(st_a_ - st_b_) <= (tol))) {                               \
        fprintf(stderr, "  %s:%d: %s = %g, %s = %g, tol %g\n", __FILE__, __LINE__, \
                #a, st_a_, #b, st_b_, (double)(tol));                        \
        *st_failed_ = 1; } } while (0)
#define ST_SKIP(...) do { fprintf(stderr, "  skipped: "); fprintf(stderr, __VA_ARGS__); \
        fputc('\n', stderr); *st_failed_ = -1; return; } while (0)

static inline int st_test_main(void)
{
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < st_test_count; i++) {
        int f = 0;
        fprintf(stderr, "[ RUN  ] %s\n", st_test_list[i].name);
        st_test_list[i].fn(&f);
        if (f > 0) { failed++;  fprintf(stderr, "[ FAIL ] %s\n", st_test_list[i].name); }
        else if (f < 0) { skipped++; fprintf(stderr, "[ SKIP ] %s\n", st_test_list[i].name); }
        else { passed++; fprintf(stderr, "[  OK  ] %s\n", st_test_list[i].name); }
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

#endif /* ST_TEST_H */
