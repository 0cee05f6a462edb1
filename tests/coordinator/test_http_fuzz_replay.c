/*
 * test_http_fuzz_replay.c - runs the libFuzzer harness fuzz/fuzz_http.c in
 * a normal build: every file of fuzz/corpus/http, then a fixed number of
 * seeded random byte strings and random mutations of the corpus (bit
 * flips, truncations, splices, inserted JSON tokens). The harness aborts
 * on any broken invariant; the sanitizer build catches memory errors.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "st_test.h"
#include "st_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 64
#define MAX_LEN 4096

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS];
static int n_seeds;

static void load_corpus(void)
{
    const char *src = getenv("STRATA_SOURCE_DIR");
    char dir[1024], path[1400];
    DIR *d;
    struct dirent *de;
    snprintf(dir, sizeof(dir), "%s/fuzz/corpus/http", src ? src : ".");
    d = opendir(dir);
    if (!d)
        return;
    while ((de = readdir(d)) && n_seeds < MAX_SEEDS) {
        FILE *f;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        f = fopen(path, "rb");
        if (!f)
            continue;
        seeds[n_seeds] = malloc(MAX_LEN);
        seed_len[n_seeds] = fread(seeds[n_seeds], 1, MAX_LEN, f);
        fclose(f);
        n_seeds++;
    }
    closedir(d);
}

ST_TEST(corpus)
{
    load_corpus();
    if (n_seeds == 0)
        ST_SKIP("fuzz/corpus/http not found (STRATA_SOURCE_DIR unset?)");
    for (int i = 0; i < n_seeds; i++)
        ST_CHECK(LLVMFuzzerTestOneInput(seeds[i], seed_len[i]) == 0);
}

ST_TEST(random_bytes)
{
    uint8_t buf[512];
    for (int it = 0; it < 20000; it++) {
        size_t n = next() % sizeof(buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)next();
        LLVMFuzzerTestOneInput(buf, n);
    }
    ST_CHECK(1);
}

ST_TEST(mutations)
{
    static const char *const tokens[] = {"{", "}", "[", "]", ",", ":", "\"", "null", "true",
                                         "-1", "1e309", "0.0", "\"\\u0000\"", "\"\\ud800\"",
                                         "\xc3", "\xff", "{\"role\":1}", "[[[[[[[["};
    uint8_t buf[MAX_LEN + 64];
    uint64_t t0 = st_now_ns();
    if (n_seeds == 0)
        ST_SKIP("no corpus");
    for (int it = 0; it < 50000 && st_now_ns() - t0 < 5000000000ull; it++) {
        int s = (int)(next() % (uint64_t)n_seeds);
        size_t n = seed_len[s];
        memcpy(buf, seeds[s], n);
        for (int m = 0, k = 1 + (int)(next() % 4); m < k && n > 1; m++) {
            size_t at = 1 + next() % (n - 1);
            switch (next() % 4) {
            case 0: buf[at] ^= (uint8_t)(1u << (next() % 8)); break;
            case 1: n = at; break;
            case 2: {
                const char *t = tokens[next() % ST_ARRAY_SIZE(tokens)];
                size_t tl = strlen(t);
                if (n + tl < sizeof(buf)) {
                    memmove(buf + at + tl, buf + at, n - at);
                    memcpy(buf + at, t, tl);
                    n += tl;
                }
                break;
            }
            default: {
                int o = (int)(next() % (uint64_t)n_seeds);
                size_t from = next() % (seed_len[o] ? seed_len[o] : 1);
                size_t len = ST_MIN(seed_len[o] - from, sizeof(buf) - at);
                memcpy(buf + at, seeds[o] + from, len);
                n = at + len;
            }
            }
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    ST_CHECK(1);
}

int main(void) { return st_test_main(); }
