/*
 * test_ctrl_fuzz.c - the random-bytes harness for the cluster's wire
 * parsers, run in every build (libFuzzer needs clang; this does not):
 * replays fuzz/corpus/ctrl, then for a fixed time feeds random frames and
 * mutations of valid ones (bit flips, truncations, length and count fields
 * overwritten) to fuzz/fuzz_ctrl.c. Failures show up as crashes or
 * sanitizer reports (run it in the ASan build). STRATA_FUZZ_SECONDS sets
 * the time (default 3).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_ctrl.h"
#include "st_test.h"
#include "st_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

ST_TEST(corpus_replay)
{
    char dir[1024], path[1200];
    const char *src = getenv("STRATA_SOURCE_DIR");
    struct dirent *de;
    DIR *d;
    int n = 0;

    snprintf(dir, sizeof(dir), "%s/fuzz/corpus/ctrl", src ? src : ".");
    d = opendir(dir);
    if (!d)
        ST_SKIP("no corpus at %s", dir);
    while ((de = readdir(d))) {
        static uint8_t buf[1 << 20];
        FILE *f;
        size_t len;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        f = fopen(path, "rb");
        if (!f)
            continue;
        len = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, len);
        n++;
    }
    closedir(d);
    ST_CHECK(n > 0);
}

/* Valid frames to mutate: one of each control type and a token frame. */
static size_t seed(int which, uint8_t *out, size_t cap)
{
    st_ctrl_msg_t m;
    size_t len = 0;
    memset(&m, 0, sizeof(m));
    switch (which % 6) {
    case 0:
        m.type = ST_CTRL_HELLO;
        strcpy(m.u.hello.name, "w");
        m.u.hello.n_cpus = 2;
        break;
    case 1:
        m.type = ST_CTRL_PLAN;
        m.u.plan.n_stages = 2; m.u.plan.stage = 1; m.u.plan.first_layer = 3;
        m.u.plan.last_layer = 6; m.u.plan.n_layer = 6; m.u.plan.n_ctx = 64;
        m.u.plan.n_slots = 2; m.u.plan.max_batch = 8; m.u.plan.host_workers = 1;
        strcpy(m.u.plan.model_path, "/m.gguf");
        break;
    case 2:
        m.type = ST_CTRL_MANIFEST;
        m.u.manifest.n = 2;
        strcpy(m.u.manifest.e[0].name, "a");
        strcpy(m.u.manifest.e[1].name, "b");
        break;
    case 3:
        m.type = ST_CTRL_LOADED;
        strcpy(m.u.loaded.data_addr, "1.2.3.4:5");
        break;
    case 4:
        m.type = ST_CTRL_LEAVE;
        strcpy(m.u.leave.text, "bye");
        break;
    default: {
        st_ctrl_mb_layout_t l;
        st_ctrl_mb_hdr_t h;
        if (st_ctrl_mb_layout(ST_CTRL_MB_TOKENS, 3, 0, 0, 0, 0, 0, &l) != ST_OK || l.total > cap)
            return 0;
        memset(out, 0, l.total);
        memset(&h, 0, sizeof(h));
        h.magic = ST_CTRL_MB_MAGIC; h.version = ST_CTRL_VERSION; h.kind = ST_CTRL_MB_TOKENS;
        h.epoch = 1; h.n = 3;
        memcpy(out, &h, sizeof(h));
        return l.total;
    }
    }
    if (st_ctrl_encode(&m, out, cap, &len, NULL) != ST_OK)
        return 0;
    return len;
}

ST_TEST(random_and_mutated_frames)
{
    static uint8_t buf[8192];
    const char *s = getenv("STRATA_FUZZ_SECONDS");
    double seconds = s ? atof(s) : 3.0;
    uint64_t deadline = st_now_ns() + (uint64_t)(seconds * 1e9), iters = 0;

    while (st_now_ns() < deadline) {
        for (int k = 0; k < 256; k++, iters++) {
            size_t len;
            if (next() % 4 == 0) {
                len = next() % 600;
                for (size_t i = 0; i < len; i++)
                    buf[i] = (uint8_t)next();
                if (len >= 8 && next() % 2) {      /* plausible magic and version */
                    uint32_t magic = next() % 2 ? ST_CTRL_MAGIC : ST_CTRL_MB_MAGIC;
                    memcpy(buf, &magic, 4);
                    buf[4] = 1; buf[5] = 0;
                }
            } else {
                len = seed((int)(next() % 6), buf, sizeof(buf));
                for (int f = (int)(next() % 4); f >= 0 && len; f--) {
                    size_t at = next() % len;
                    switch (next() % 4) {
                    case 0: buf[at] ^= (uint8_t)(1u << (next() % 8)); break;
                    case 1: len = at; break;                                  /* truncate */
                    case 2: if (at + 4 <= len) memset(buf + at, 0xff, 4); break; /* big count */
                    default: if (len + 16 < sizeof(buf)) { memset(buf + len, 0, 16); len += 16; }
                    }
                }
            }
            LLVMFuzzerTestOneInput(buf, len);
        }
    }
    fprintf(stderr, "  %llu frames in %.1f s\n", (unsigned long long)iters, seconds);
    ST_CHECK(iters > 0);
}

int main(void)
{
    return st_test_main();
}
