/*
 * prefix.h - the scheduler's index of the prefix cache (docs/CLUSTER.md,
 * "Prefix reuse"). Not a public header.
 *
 * A sequence's tokens are cut into blocks of `block` tokens; block j is
 * named by its tokens and by block j-1's node, so a node stands for a whole
 * prefix (a radix tree of blocks, as vLLM's automatic prefix caching and
 * SGLang's radix cache do). Node i owns pool block i on every stage of the
 * pipeline (st_kvop_t): the stages hold the rows, this index only knows
 * what they hold, under a tag that changes with every save so that a stage
 * can refuse a load of rows it does not have.
 *
 * Reference counts: a node is held by its children and by the running
 * sequences whose prompt it is part of ("pins"); only a ready node no one
 * holds is evicted, least recently used first, when a new block needs room.
 *
 * States: QUEUED (its save waits for a micro-batch), EMITTING (its save is
 * in the micro-batch being built, ahead of any load of it there: loadable
 * within that one), PENDING (saved by a micro-batch in flight: not
 * loadable, since micro-batches may run out of order on a stage), READY.
 * st_prefix_flush drops everything (a stage failed or the cluster
 * re-planned: pools may be gone).
 */
#ifndef ST_PREFIX_H
#define ST_PREFIX_H

#include <stdint.h>

#include "st_status.h"

typedef struct st_prefix st_prefix_t;

enum { ST_PFX_FREE = 0, ST_PFX_QUEUED, ST_PFX_EMITTING, ST_PFX_PENDING, ST_PFX_READY };

typedef struct st_prefix_stats {
    uint32_t n_blocks, used;   /* nodes in use (any state but FREE) */
    uint64_t evictions, flushes;
} st_prefix_stats_t;

st_status_t st_prefix_create(uint32_t n_blocks, uint32_t block, st_prefix_t **out);
void        st_prefix_free(st_prefix_t *p);
uint32_t    st_prefix_block(const st_prefix_t *p);
/* Incremented by every flush: node ids from before it are meaningless. */
uint64_t    st_prefix_epoch(const st_prefix_t *p);
void        st_prefix_flush(st_prefix_t *p);

/* Walks tokens block by block from the root while a loadable (READY or
 * EMITTING) node matches, up to max_blocks; writes the node ids, pins each
 * and marks it used now. Returns how many matched. */
uint32_t    st_prefix_match(st_prefix_t *p, const int32_t *tokens, uint32_t max_blocks,
                            int32_t *nodes);
/* The node for block `tokens` (block tokens) under `parent` (-1: the
 * first block): an existing one (any state; *is_new 0), or a new one in
 * `state` (QUEUED or PENDING) with a fresh tag, taking a free node or
 * evicting the least recently used evictable one. The result is pinned.
 * -1 when nothing can be evicted. */
int32_t     st_prefix_insert(st_prefix_t *p, int32_t parent, const int32_t *tokens, int state,
                             int *is_new);
void        st_prefix_unpin(st_prefix_t *p, int32_t node);
void        st_prefix_set_state(st_prefix_t *p, int32_t node, int state);
int         st_prefix_state(const st_prefix_t *p, int32_t node);
uint64_t    st_prefix_tag(const st_prefix_t *p, int32_t node);
void        st_prefix_stats(const st_prefix_t *p, st_prefix_stats_t *out);

#endif /* ST_PREFIX_H */
