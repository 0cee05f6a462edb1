/*
 * st_cpu.h - what the CPU backend knows about the machine it runs on.
 *
 * The CPU backend (kernels/cpu) compiles one variant of each hot kernel per
 * instruction-set level and picks one when a backend is created:
 *
 *   ST_CPU_ISA_SCALAR  portable C, always available
 *   ST_CPU_ISA_AVX2    AVX2 + FMA + F16C (Haswell and later, Zen)
 *   ST_CPU_ISA_AVX512  AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Sapphire Rapids, Zen 4)
 *   ST_CPU_ISA_AMX     AVX512 + AMX-INT8 tiles for prefill (Sapphire Rapids+,
 *                      Linux >= 5.16 grants the tile state on request)
 *
 * The best level the CPU supports is used unless the environment variable
 * STRATA_CPU_ISA=scalar|avx2|avx512|amx forces one (tests compare the levels
 * with it; a forced level the CPU lacks makes backend creation fail).
 *
 *   printf("isa %s\n", st_cpu_isa_name(st_cpu_isa_best()));
 *   double gbps = st_cpu_read_bandwidth_gbps(96u << 20, 2);
 *
 * STRATA_ACT_BITS=16 (default) or 8, also read once at backend creation,
 * sets how activations are quantized for matmuls with Q4_0/Q4_1/Q8_0
 * weights: two 8-bit levels (~15-bit activations; logits within ~1e-3 of
 * a float64 reference) or one (faster prefill; logits off by up to ~0.3).
 * Any other value makes backend creation fail with ST_ERR_INVALID.
 *
 * st_cpu_read_bandwidth_gbps() is the yardstick for decode, which streams
 * every weight once per token: benchmarks report their GB/s against it.
 */
#ifndef ST_CPU_H
#define ST_CPU_H

#include <stddef.h>

#include "st_error.h"
#include "st_status.h"

typedef enum st_cpu_isa {
    ST_CPU_ISA_SCALAR = 0,
    ST_CPU_ISA_AVX2   = 1,
    ST_CPU_ISA_AVX512 = 2,
    ST_CPU_ISA_AMX    = 3,
    ST_CPU_ISA_COUNT_ = 4
} st_cpu_isa_t;

/* The best level this CPU supports. */
st_cpu_isa_t st_cpu_isa_best(void);

/* 1 when the CPU (and the OS, for the register state) supports `isa`. For
 * AMX this asks the kernel for the tile state (arch_prctl), once per call;
 * the grant is per process and idempotent. */
int st_cpu_isa_supported(st_cpu_isa_t isa);

/* "scalar", "avx2", "avx512vnni", "avx512amx"; "unknown" for other values. */
const char *st_cpu_isa_name(st_cpu_isa_t isa);

/* The level a backend created now would use: STRATA_CPU_ISA when set,
 * else st_cpu_isa_best(). Fails with ST_ERR_INVALID for an unknown value
 * and ST_ERR_UNSUPPORTED for a level the CPU lacks. */
st_status_t st_cpu_isa_select(st_cpu_isa_t *out, st_error_t *err);

/* Name of the level st_cpu_isa_select() picks (its error text on failure
 * is not returned; "unknown" then). Handy for logs and benchmark headers. */
const char *st_cpu_isa_string(void);

/* Measured read bandwidth in GB/s (1e9 bytes/s): `threads` threads each sum
 * their share of a `bytes` buffer; the best of a few passes after one warm
 * pass. Returns a negative value when the buffer or threads cannot be
 * created. Takes roughly 20 passes over the buffer. */
double st_cpu_read_bandwidth_gbps(size_t bytes, int threads);

/* Whether a matmul of this weight type at level `isa` quantizes its
 * activations (STRATA_ACT_BITS: 16 or 8 bits per block of 32) rather than
 * reading them as floats: Q4_0, Q4_1 and Q8_0 at every level, Q5_0 and
 * Q5_1 at the levels whose integer kernels read them (AVX-512, AMX). */
int st_cpu_int_activations(st_cpu_isa_t isa, int type);

#endif /* ST_CPU_H */
