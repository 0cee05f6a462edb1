/*
 * cluster_plan.c - what the coordinator decides before a plan is sent: its
 * copy of the model (decrypted when a key file is given), the per-tensor
 * SHA-256 manifest of that copy, which tensors each stage reads, and the
 * layer split (an explicit --split, or the topology planner
 * for memory feasibility followed by a time balance that counts the output
 * head, which the last stage computes for every token).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_internal.h"
#include "st_crypt.h"
#include "st_log.h"
#include "st_util.h"
#ifdef ST_CLUSTER_HAVE_PLAN
#include "st_plan.h"
#endif

#define MOD "cluster"

/* ---- the model and its manifest ------------------------------------------ */

/* The coordinator's copy of the model. With a key file the whole file is
 * decrypted (the tokenizer, the planner's sizes and the manifest need every
 * tensor); a plain GGUF opens as usual, key or not, as `strata generate`
 * does. The key is on the stack only while the model is opened. */
st_status_t cl_open_model(st_cluster_t *c, st_error_t *err)
{
    uint8_t key[ST_CRYPT_KEY_BYTES];
    st_model_open_params_t mp = {.size = sizeof(mp)};
    st_status_t st;

    if (!c->p.key_file)
        return st_model_open(c->p.model_path, NULL, &c->model, err);
    if ((st = st_crypt_key_load(c->p.key_file, key, err)) != ST_OK)
        return st;
    mp.key = key;
    st = st_model_open(c->p.model_path, &mp, &c->model, err);
    explicit_bzero(key, sizeof(key));
    if (st != ST_OK)
        return st;
    /* Only an encrypted file decrypts anything (its metadata at least). */
    c->encrypted = st_model_decrypted_bytes(c->model) > 0;
    if (c->encrypted)
        st_info(MOD, "%s: decrypted %.1f MB into memory (workers need the encrypted file "
                "and the key; shards are not streamed)", c->p.model_path,
                (double)st_model_decrypted_bytes(c->model) / 1e6);
    return ST_OK;
}

/* A plain file is hashed with pread at each tensor's offset (not through
 * the mapping, so the pages are not kept resident). An encrypted model has
 * no plaintext on disk: its decrypted tensors, already in memory, are
 * hashed, the same bytes a worker decrypts and verifies against this. */
st_status_t cl_compute_manifest(st_cluster_t *c, st_error_t *err)
{
    const st_gguf_t *g = st_model_gguf(c->model);
    uint64_t t0 = st_now_ns(), bytes = 0;
    int fd = -1;
    st_status_t st = ST_OK;

    if (!c->encrypted) {
        fd = open(c->p.model_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return st_error_set(err, ST_ERR_IO, "%s: %s", c->p.model_path, strerror(errno));
    }
    c->n_tensors = st_gguf_n_tensors(g);
    c->manifest = calloc(c->n_tensors ? c->n_tensors : 1, sizeof(*c->manifest));
    if (!c->manifest) {
        st = st_error_set(err, ST_ERR_NOMEM, "out of memory for the manifest");
        goto out;
    }
    for (uint64_t i = 0; i < c->n_tensors; i++) {
        const st_tensor_t *t = st_gguf_tensor(g, i);
        st_ctrl_tensor_hash_t *h = &c->manifest[i];
        if (strlen(t->name) >= sizeof(h->name)) {
            st = st_error_set(err, ST_ERR_RANGE, "tensor name '%s' too long for the manifest",
                              t->name);
            goto out;
        }
        snprintf(h->name, sizeof(h->name), "%s", t->name);
        h->nbytes = t->nbytes;
        if (c->encrypted) {
            if (!t->data && t->nbytes) {
                st = st_error_set(err, ST_ERR_RANGE, "%s: tensor '%s' is not in memory for "
                                  "its SHA-256", c->p.model_path, t->name);
                goto out;
            }
            st_ctrl_sha256(t->data, (size_t)t->nbytes, h->sha256);
            bytes += t->nbytes;
            continue;
        }
        st = st_ctrl_sha256_file(fd, t->file_offset, t->nbytes, h->sha256);
        if (st != ST_OK) {
            st_error_set(err, st, "%s: cannot read tensor '%s' for its SHA-256",
                         c->p.model_path, t->name);
            goto out;
        }
        bytes += t->nbytes;
    }
    st_info(MOD, "SHA-256 manifest of %" PRIu64 " tensors (%.1f MB%s) in %.2f s",
            c->n_tensors, (double)bytes / 1e6, c->encrypted ? ", decrypted in memory" : "",
            (double)(st_now_ns() - t0) / 1e9);
out:
    if (fd >= 0)
        close(fd);
    return st;
}

static const st_ctrl_tensor_hash_t *hash_of(const st_cluster_t *c, const st_tensor_t *t)
{
    const st_gguf_t *g = st_model_gguf(c->model);
    for (uint64_t i = 0; i < c->n_tensors; i++)
        if (st_gguf_tensor(g, i) == t)
            return &c->manifest[i];
    return NULL;
}

/* The tensors a stage reads, deduplicated (a tied head is the embedding). */
uint32_t cl_stage_tensors(const st_cluster_t *c, uint32_t first, uint32_t last,
                              const st_ctrl_tensor_hash_t **out, uint32_t cap)
{
    uint32_t n = 0;
    const st_tensor_t *extra[3] = {NULL, NULL, NULL};

    for (uint32_t l = first; l < last; l++) {
        const st_layer_t *ly = st_model_layer(c->model, l);
        for (uint32_t i = 0; i < ly->n_all && n < cap; i++)
            if ((out[n] = hash_of(c, ly->all[i])))
                n++;
    }
    if (first == 0)
        extra[0] = st_model_tok_embd(c->model);
    if (last == c->n_layer) {
        extra[1] = st_model_output_norm(c->model);
        extra[2] = st_model_output(c->model);
    }
    for (int k = 0; k < 3; k++) {
        const st_ctrl_tensor_hash_t *h;
        int dup = 0;
        if (!extra[k] || !(h = hash_of(c, extra[k])))
            continue;
        for (uint32_t j = 0; j < n; j++)
            dup |= out[j] == h;
        if (!dup && n < cap)
            out[n++] = h;
    }
    return n;
}

#ifdef ST_CLUSTER_HAVE_PLAN
/* Activation scratch of one sequence in one stage, as the planner counts it
 * (rebalance() must count the same, or it keeps splits the planner refused). */
static uint64_t act_bytes_per_seq(const st_cluster_t *c)
{
    const st_hparams_t *hp = st_model_hparams(c->model);
    return 4ull * (6ull * hp->n_embd + 2ull * hp->n_ff + hp->n_vocab);
}

/* The planner balances layer weight bytes, but the last stage also runs the
 * output head for every sampled token (on SmolLM2-135M the tied 49152-row
 * head is about as much work as five layers: measured 14.7 ms for layers
 * 15-29 + head against 6.8 ms for layers 0-14). With equally fast workers
 * the pipeline is only as fast as its slowest stage, so the split is
 * re-balanced over the planner's workers with the head counted, by an
 * exact min-max dynamic programme, and kept only if every stage still
 * fits its worker's memory. */
static void rebalance(st_cluster_t *c)
{
    uint32_t L = c->n_layer, K = c->n_stages;
    uint64_t *pre = NULL, *best = NULL, head = st_model_output_bytes(c->model);
    uint32_t *cut = NULL, bounds[ST_CTRL_MAX_STAGES + 1];
    uint64_t kv_layer = st_model_kv_bytes_per_token_layer(c->model, c->p.kv_type) *
                        ((uint64_t)c->p.n_ctx * c->p.n_slots +
                         (uint64_t)c->prefix_blocks * ST_PREFIX_BLOCK);
    uint64_t act = act_bytes_per_seq(c) * c->p.n_slots;

    if (K < 2 || L > 1024)
        return;
    pre = calloc(L + 1, sizeof(uint64_t));
    best = calloc((size_t)(K + 1) * (L + 1), sizeof(uint64_t));
    cut = calloc((size_t)(K + 1) * (L + 1), sizeof(uint32_t));
    if (!pre || !best || !cut)
        goto out;
    for (uint32_t i = 0; i < L; i++)
        pre[i + 1] = pre[i] + st_model_layer_bytes(c->model, i);
#define B(k, j) best[(size_t)(k) * (L + 1) + (j)]
#define C(k, j) cut[(size_t)(k) * (L + 1) + (j)]
    for (uint32_t j = 0; j <= L; j++)
        B(0, j) = j == 0 ? 0 : UINT64_MAX;
    for (uint32_t k = 1; k <= K; k++)
        for (uint32_t j = 0; j <= L; j++) {
            B(k, j) = UINT64_MAX;
            for (uint32_t i = k - 1; i < j; i++) {
                uint64_t cost = pre[j] - pre[i] + (j == L ? head : 0), m;
                if (B(k - 1, i) == UINT64_MAX)
                    continue;
                m = ST_MAX(B(k - 1, i), cost);
                if (m < B(k, j)) {
                    B(k, j) = m;
                    C(k, j) = i;
                }
            }
        }
    if (B(K, L) == UINT64_MAX)
        goto out;
    bounds[K] = L;
    for (uint32_t k = K; k >= 1; k--)
        bounds[k - 1] = C(k, bounds[k]);
#undef B
#undef C
    for (uint32_t s = 0; s < K; s++) {
        const wrec_t *w = &c->workers[c->stages[s].worker];
        uint32_t n = bounds[s + 1] - bounds[s];
        uint64_t need = pre[bounds[s + 1]] - pre[bounds[s]] + kv_layer * n + act +
                        (s == 0 ? st_model_embd_bytes(c->model) : 0) + (s == K - 1 ? head : 0);
        if (need > w->mem_bytes)
            goto out;   /* the planner's split stays: it knows memory */
    }
    for (uint32_t s = 0; s < K; s++) {
        c->stages[s].first = bounds[s];
        c->stages[s].last = bounds[s + 1];
    }
out:
    free(pre);
    free(best);
    free(cut);
}
#endif

/* Splits [0, n_layer) over the candidate workers; fills c->stages. */
st_status_t cl_compute_split(st_cluster_t *c, wrec_t **cand, uint32_t n_cand,
                                 st_error_t *err)
{
    uint32_t n_layer = c->n_layer;

    if (c->p.split && c->p.split[0]) {
        uint32_t counts[ST_CTRL_MAX_STAGES], k = 0, sum = 0;
        const char *s = c->p.split;
        while (*s) {
            char *end;
            unsigned long v = strtoul(s, &end, 10);
            if (end == s || v == 0 || k == ST_CTRL_MAX_STAGES)
                return st_error_set(err, ST_ERR_INVALID, "split '%s': expected up to %d "
                                    "positive layer counts separated by commas", c->p.split,
                                    ST_CTRL_MAX_STAGES);
            counts[k++] = (uint32_t)v;
            sum += (uint32_t)v;
            s = *end == ',' ? end + 1 : end;
            if (*end && *end != ',')
                return st_error_set(err, ST_ERR_INVALID, "split '%s': bad character", c->p.split);
        }
        if (sum != n_layer)
            return st_error_set(err, ST_ERR_INVALID, "split '%s' covers %u layers, the model "
                                "has %u", c->p.split, sum, n_layer);
        if (k > n_cand)
            return st_error_set(err, ST_ERR_RANGE, "split '%s' needs %u workers, %u are "
                                "available", c->p.split, k, n_cand);
        for (uint32_t i = 0, first = 0; i < k; i++) {
            c->stages[i].worker = (int)(cand[i] - c->workers);
            c->stages[i].first = first;
            c->stages[i].last = first + counts[i];
            first += counts[i];
        }
        c->n_stages = k;
        return ST_OK;
    }
#ifdef ST_CLUSTER_HAVE_PLAN
    {
        st_plan_worker_t pw[ST_CTRL_MAX_STAGES];
        uint64_t *lb = calloc(2ull * n_layer, sizeof(uint64_t));  /* bytes, then work */
        st_plan_params_t pp;
        st_plan_t *plan = NULL;
        uint32_t n = ST_MIN(n_cand, (uint32_t)ST_CTRL_MAX_STAGES);
        st_status_t st;

        if (!lb)
            return st_error_set(err, ST_ERR_NOMEM, "out of memory");
        for (uint32_t i = 0; i < n_layer; i++) {
            lb[i] = st_model_layer_bytes(c->model, i);
            lb[n_layer + i] = st_model_layer_active_bytes(c->model, i);
        }
        memset(pw, 0, sizeof(pw));
        for (uint32_t i = 0; i < n; i++) {
            snprintf(pw[i].name, sizeof(pw[i].name), "%s", cand[i]->name);
            snprintf(pw[i].host, sizeof(pw[i].host), "%s", cand[i]->host);
            pw[i].mem_bytes = cand[i]->mem_bytes;
            pw[i].speed = 1.0;
        }
        memset(&pp, 0, sizeof(pp));
        pp.size = sizeof(pp);
        pp.model.n_layer = n_layer;
        pp.model.layer_bytes = lb;
        pp.model.layer_work = lb + n_layer;
        pp.model.embd_bytes = st_model_embd_bytes(c->model);
        pp.model.output_bytes = st_model_output_bytes(c->model);
        /* A tied head is the embedding's tensor: a single stage maps it once. */
        if (st_model_output(c->model) == st_model_tok_embd(c->model))
            pp.model.shared_bytes = pp.model.embd_bytes;
        pp.model.kv_bytes_per_token_layer = st_model_kv_bytes_per_token_layer(c->model, c->p.kv_type);
        pp.model.act_bytes_per_seq = act_bytes_per_seq(c);
        pp.n_ctx = c->p.n_ctx;
        pp.n_seq = c->p.n_slots;
        pp.pool_tokens = (uint64_t)c->prefix_blocks * ST_PREFIX_BLOCK;
        pp.n_workers = n;
        pp.workers = pw;
        st = st_plan_compute(&pp, &plan, err);
        free(lb);
        if (st != ST_OK)
            return st;
        c->n_stages = st_plan_n_stages(plan);
        for (uint32_t s = 0; s < c->n_stages; s++) {
            const st_plan_stage_t *ps = st_plan_stage(plan, s);
            c->stages[s].worker = (int)(cand[ps->worker] - c->workers);
            c->stages[s].first = ps->first_layer;
            c->stages[s].last = ps->first_layer + ps->n_layers;
        }
        st_plan_free(plan);
        rebalance(c);
        return ST_OK;
    }
#else
    {
        /* No planner in this build: contiguous ranges of about equal bytes. */
        uint64_t total = 0, acc = 0;
        uint32_t n = ST_MIN(ST_MIN(n_cand, n_layer), (uint32_t)ST_CTRL_MAX_STAGES), s = 0;
        for (uint32_t i = 0; i < n_layer; i++)
            total += st_model_layer_bytes(c->model, i);
        c->stages[0].first = 0;
        for (uint32_t i = 0; i < n_layer; i++) {
            acc += st_model_layer_bytes(c->model, i);
            if (s + 1 < n && acc * n >= total * (s + 1) && n_layer - i - 1 >= n - s - 1) {
                c->stages[s].last = i + 1;
                c->stages[s].worker = (int)(cand[s] - c->workers);
                s++;
                c->stages[s].first = i + 1;
            }
        }
        c->stages[s].last = n_layer;
        c->stages[s].worker = (int)(cand[s] - c->workers);
        c->n_stages = s + 1;
        return ST_OK;
    }
#endif
}

