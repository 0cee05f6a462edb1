/*
 * prefix.c - the prefix cache's index (see prefix.h).
 *
 * Nodes live in one array (node i = pool block i) and in a chained hash
 * table keyed by (parent, block tokens); each node keeps its block's tokens
 * so a hash collision is never taken for a match. The victim search is a
 * scan of the nodes: it runs only when no node is free, once per block
 * saved, and a pool holds thousands of blocks at most (the stages' pools
 * are budgeted in MiB), which is microseconds next to the prefill of the
 * block that needs it.
 */
#include "prefix.h"

#include <stdlib.h>
#include <string.h>

typedef struct pnode {
    int32_t  parent;
    int32_t  hnext;        /* hash chain; free list when FREE */
    uint32_t children, pins;
    uint64_t hash, tag, used;
    int      state;
} pnode_t;

struct st_prefix {
    uint32_t  n, block, n_buckets;
    pnode_t  *nodes;
    int32_t  *tokens;      /* n x block */
    int32_t  *buckets;
    int32_t   free_head;
    uint32_t  used;
    uint64_t  clock, next_tag, epoch, evictions, flushes;
};

static uint64_t hash_block(int32_t parent, const int32_t *t, uint32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(uint32_t)parent;
    for (uint32_t i = 0; i < n; i++) {
        h ^= (uint32_t)t[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

static void reset(st_prefix_t *p)
{
    for (uint32_t i = 0; i < p->n_buckets; i++)
        p->buckets[i] = -1;
    for (uint32_t i = 0; i < p->n; i++) {
        memset(&p->nodes[i], 0, sizeof(pnode_t));
        p->nodes[i].hnext = i + 1 < p->n ? (int32_t)(i + 1) : -1;
    }
    p->free_head = p->n ? 0 : -1;
    p->used = 0;
}

st_status_t st_prefix_create(uint32_t n_blocks, uint32_t block, st_prefix_t **out)
{
    st_prefix_t *p;

    if (n_blocks == 0 || n_blocks > (1u << 24) || block == 0 || block > 4096)
        return ST_ERR_RANGE;
    if (!(p = calloc(1, sizeof(*p))))
        return ST_ERR_NOMEM;
    p->n = n_blocks;
    p->block = block;
    for (p->n_buckets = 64; p->n_buckets < 2 * n_blocks; p->n_buckets *= 2)
        ;
    p->nodes = calloc(n_blocks, sizeof(pnode_t));
    p->tokens = calloc((size_t)n_blocks * block, sizeof(int32_t));
    p->buckets = calloc(p->n_buckets, sizeof(int32_t));
    if (!p->nodes || !p->tokens || !p->buckets) {
        st_prefix_free(p);
        return ST_ERR_NOMEM;
    }
    p->next_tag = 1;
    reset(p);
    *out = p;
    return ST_OK;
}

void st_prefix_free(st_prefix_t *p)
{
    if (!p)
        return;
    free(p->nodes);
    free(p->tokens);
    free(p->buckets);
    free(p);
}

uint32_t st_prefix_block(const st_prefix_t *p) { return p->block; }
uint64_t st_prefix_epoch(const st_prefix_t *p) { return p->epoch; }

void st_prefix_flush(st_prefix_t *p)
{
    reset(p);
    p->epoch++;
    p->flushes++;
}

static int32_t find(const st_prefix_t *p, int32_t parent, const int32_t *t, uint64_t h)
{
    for (int32_t i = p->buckets[h & (p->n_buckets - 1)]; i >= 0; i = p->nodes[i].hnext) {
        const pnode_t *nd = &p->nodes[i];
        if (nd->hash == h && nd->parent == parent &&
            !memcmp(p->tokens + (size_t)i * p->block, t, p->block * sizeof(int32_t)))
            return i;
    }
    return -1;
}

static int loadable(int state) { return state == ST_PFX_READY || state == ST_PFX_EMITTING; }

uint32_t st_prefix_match(st_prefix_t *p, const int32_t *tokens, uint32_t max_blocks,
                         int32_t *nodes)
{
    int32_t parent = -1;
    uint32_t k = 0;

    for (; k < max_blocks; k++) {
        const int32_t *t = tokens + (size_t)k * p->block;
        int32_t i = find(p, parent, t, hash_block(parent, t, p->block));
        if (i < 0 || !loadable(p->nodes[i].state))
            break;
        p->nodes[i].pins++;
        p->nodes[i].used = ++p->clock;
        nodes[k] = parent = i;
    }
    return k;
}

static void unlink_hash(st_prefix_t *p, int32_t i)
{
    int32_t *pp = &p->buckets[p->nodes[i].hash & (p->n_buckets - 1)];
    for (; *pp >= 0; pp = &p->nodes[*pp].hnext)
        if (*pp == i) {
            *pp = p->nodes[i].hnext;
            return;
        }
}

/* The least recently used node no child and no sequence holds. */
static int32_t evict(st_prefix_t *p)
{
    int32_t best = -1;
    for (uint32_t i = 0; i < p->n; i++) {
        const pnode_t *nd = &p->nodes[i];
        if (nd->state == ST_PFX_READY && !nd->children && !nd->pins &&
            (best < 0 || nd->used < p->nodes[best].used))
            best = (int32_t)i;
    }
    if (best < 0)
        return -1;
    unlink_hash(p, best);
    if (p->nodes[best].parent >= 0)
        p->nodes[p->nodes[best].parent].children--;
    p->evictions++;
    return best;
}

int32_t st_prefix_insert(st_prefix_t *p, int32_t parent, const int32_t *tokens, int state,
                         int *is_new)
{
    uint64_t h = hash_block(parent, tokens, p->block);
    int32_t i = find(p, parent, tokens, h);
    pnode_t *nd;

    *is_new = 0;
    if (i >= 0) {
        p->nodes[i].pins++;
        p->nodes[i].used = ++p->clock;
        return i;
    }
    if (parent >= 0 && (parent >= (int32_t)p->n || p->nodes[parent].state == ST_PFX_FREE))
        return -1;
    if (p->free_head >= 0) {
        i = p->free_head;
        p->free_head = p->nodes[i].hnext;
        p->used++;
    } else {
        /* held while the victim is chosen: a block is never evicted to
         * make room for its own child */
        if (parent >= 0)
            p->nodes[parent].pins++;
        i = evict(p);
        if (parent >= 0)
            p->nodes[parent].pins--;
        if (i < 0)
            return -1;
    }
    nd = &p->nodes[i];
    memset(nd, 0, sizeof(*nd));
    nd->parent = parent;
    nd->hash = h;
    nd->tag = p->next_tag++;
    nd->state = state;
    nd->pins = 1;
    nd->used = ++p->clock;
    memcpy(p->tokens + (size_t)i * p->block, tokens, p->block * sizeof(int32_t));
    nd->hnext = p->buckets[h & (p->n_buckets - 1)];
    p->buckets[h & (p->n_buckets - 1)] = i;
    if (parent >= 0)
        p->nodes[parent].children++;
    *is_new = 1;
    return i;
}

void st_prefix_unpin(st_prefix_t *p, int32_t i)
{
    if (i >= 0 && (uint32_t)i < p->n && p->nodes[i].pins)
        p->nodes[i].pins--;
}

void st_prefix_set_state(st_prefix_t *p, int32_t i, int state)
{
    if (i >= 0 && (uint32_t)i < p->n && p->nodes[i].state != ST_PFX_FREE)
        p->nodes[i].state = state;
}

int st_prefix_state(const st_prefix_t *p, int32_t i)
{
    return i >= 0 && (uint32_t)i < p->n ? p->nodes[i].state : ST_PFX_FREE;
}

uint64_t st_prefix_tag(const st_prefix_t *p, int32_t i)
{
    return i >= 0 && (uint32_t)i < p->n ? p->nodes[i].tag : 0;
}

void st_prefix_stats(const st_prefix_t *p, st_prefix_stats_t *out)
{
    out->n_blocks = p->n;
    out->used = p->used;
    out->evictions = p->evictions;
    out->flushes = p->flushes;
}
