/*
 * fuzz_gguf.c - libFuzzer harness for the GGUF reader and the Llama binding.
 *
 *   CC=clang cmake -S . -B build-fuzz -G Ninja -DSTRATA_FUZZ=ON
 *   ninja -C build-fuzz fuzz_gguf
 *   ./build-fuzz/fuzz/fuzz_gguf -max_total_time=60 fuzz/corpus/gguf
 *
 * Each input is written to a memfd (the reader takes a path and maps it),
 * opened with st_gguf_open, and on success every accessor is exercised: all
 * keys through every typed getter, every string-array element, and the
 * first and last byte of every tensor, so a pointer that escapes the
 * mapping faults here. Then st_model_open and a full prefetch, which reads
 * one byte per page of every bound tensor. The normal test build replays
 * the corpus (tests/model/test_gguf_corpus.c) without libFuzzer.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "st_gguf.h"
#include "st_model.h"

static volatile uint8_t sink;

static void exercise_gguf(const st_gguf_t *g)
{
    char key[256];
    for (int64_t i = 0; i < st_gguf_n_kv(g); i++) {
        st_str_t k = st_gguf_key_name(g, i), s;
        uint32_t u32; uint64_t u64, n; int64_t i64; float f; double d; int b;
        st_gguf_type_t et;
        const void *data;
        if (k.len >= sizeof(key) || memchr(k.ptr, 0, k.len))
            continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        if (st_gguf_find_key(g, key) < 0)
            __builtin_trap();        /* every stored key must be found */
        (void)st_gguf_get_u32(g, key, &u32);
        (void)st_gguf_get_u64(g, key, &u64);
        (void)st_gguf_get_i64(g, key, &i64);
        (void)st_gguf_get_f32(g, key, &f);
        (void)st_gguf_get_bool(g, key, &b);
        if (st_gguf_get_str(g, key, &s) == ST_OK && s.len)
            sink ^= (uint8_t)s.ptr[s.len - 1];
        if (st_gguf_get_arr(g, key, &et, &n, &data) != ST_OK)
            continue;
        for (uint64_t j = 0; j < n && j < 4096; j++) {
            if (st_gguf_arr_str(g, key, j, &s) == ST_OK && s.len)
                sink ^= (uint8_t)(s.ptr[0] ^ s.ptr[s.len - 1]);
            (void)st_gguf_arr_f64(g, key, j, &d);
            (void)st_gguf_arr_i64(g, key, j, &i64);
        }
    }
    for (uint64_t i = 0; i < st_gguf_n_tensors(g); i++) {
        const st_tensor_t *t = st_gguf_tensor(g, i);
        const uint8_t *p = t->data;
        if (st_gguf_find_tensor(g, t->name) != t)
            __builtin_trap();
        sink ^= p[0] ^ p[t->nbytes - 1];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    st_error_t err;
    st_gguf_t *g;
    st_model_t *m;
    int fd = memfd_create("fuzz_gguf", MFD_CLOEXEC);

    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (st_gguf_open(path, &g, &err) == ST_OK) {
        exercise_gguf(g);
        st_gguf_close(g);
    } else if (strchr(err.msg, '\n') || strncmp(err.msg, path, strlen(path)) != 0) {
        __builtin_trap();            /* errors are one line naming the file */
    }
    if (st_model_open(path, NULL, &m, &err) == ST_OK) {
        const st_hparams_t *hp = st_model_hparams(m);
        st_model_prefetch(m, 0, hp->n_layer, 3, NULL, NULL);
        st_model_close(m);
    }
    close(fd);
    return 0;
}
