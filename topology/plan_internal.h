/*
 * plan_internal.h - the planner's private structures and the small JSON
 * writer shared by the planner and the topology printers. Not installed.
 */
#ifndef ST_PLAN_INTERNAL_H
#define ST_PLAN_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "st_plan.h"

struct st_plan {
    uint32_t          n_workers;
    st_plan_worker_t *workers;     /* copy of params.workers */
    uint32_t          n_stages;
    st_plan_stage_t  *stages;      /* pipeline order */
    uint32_t          n_unused;
    st_plan_unused_t *unused;
    uint32_t          n_layer, n_ctx, n_seq;
    double            ideal, bottleneck, latency_us;
};

/* Writes s as a JSON string literal (with quotes); NULL writes null. */
void st_json_str(FILE *f, const char *s);

/* "12.3 MiB" / "1.50 GiB" into buf, for people. */
const char *st_fmt_bytes(uint64_t bytes, char *buf, size_t size);

#endif /* ST_PLAN_INTERNAL_H */
