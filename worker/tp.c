/*
 * tp.c - tensor-parallel partition arithmetic (st_tp.h, docs/CUDA.md).
 *
 * Pure arithmetic on shapes: nothing here touches a device or a
 * communicator. Each tensor of a layer gets a role (which range it follows
 * and along which dimension); the ranges are computed once per rank from
 * the hyper-parameters and the tensors' shapes and block sizes.
 */
#include <stdlib.h>
#include <string.h>

#include "st_dtype.h"
#include "st_tp.h"
#include "st_util.h"

/* Which of the rank's ranges a tensor follows. */
typedef enum {
    U_WHOLE = 0,    /* replicated */
    U_HEADS,        /* query heads */
    U_KV_HEADS,
    U_FF,           /* dense FFN units */
    U_FF_EXP,       /* routed experts' units */
    U_FF_SHEXP      /* shared experts' units */
} unit_t;

typedef struct {
    unit_t   unit;
    uint32_t axis;
} role_t;

/* The role of t in L, or -1 in *found when the tensor has no rule. */
static role_t role_of(const st_layer_t *L, const st_tensor_t *t, int *found)
{
    const struct { const st_tensor_t *t; unit_t unit; uint32_t axis; } rules[] = {
        /* replicated: norms, router, MLA low-rank projections */
        {L->attn_norm, U_WHOLE, 0}, {L->q_norm, U_WHOLE, 0}, {L->k_norm, U_WHOLE, 0},
        {L->attn_post_norm, U_WHOLE, 0}, {L->ffn_norm, U_WHOLE, 0},
        {L->ffn_post_norm, U_WHOLE, 0}, {L->wq_a, U_WHOLE, 0}, {L->q_a_norm, U_WHOLE, 0},
        {L->wkv_a, U_WHOLE, 0}, {L->kv_a_norm, U_WHOLE, 0}, {L->gate_inp, U_WHOLE, 0},
        {L->exp_probs_b, U_WHOLE, 0},
        /* attention: per-head producers by rows, wo by columns */
        {L->wq, U_HEADS, 1}, {L->wq_b, U_HEADS, 1}, {L->bq, U_HEADS, 0},
        {L->wk, U_KV_HEADS, 1}, {L->wv, U_KV_HEADS, 1},
        {L->bk, U_KV_HEADS, 0}, {L->bv, U_KV_HEADS, 0},
        {L->wk_b, U_HEADS, 2}, {L->wv_b, U_HEADS, 2},
        {L->wo, U_HEADS, 0},
        /* FFNs: gate/up by rows, down by columns */
        {L->w_gate, U_FF, 1}, {L->w_up, U_FF, 1}, {L->w_down, U_FF, 0},
        {L->gate_exps, U_FF_EXP, 1}, {L->up_exps, U_FF_EXP, 1}, {L->down_exps, U_FF_EXP, 0},
        {L->gate_shexp, U_FF_SHEXP, 1}, {L->up_shexp, U_FF_SHEXP, 1},
        {L->down_shexp, U_FF_SHEXP, 0},
    };
    role_t r = {U_WHOLE, 0};

    *found = 0;
    for (size_t i = 0; i < ST_ARRAY_SIZE(rules); i++) {
        if (rules[i].t && rules[i].t == t) {
            r.unit = rules[i].unit;
            r.axis = rules[i].axis;
            *found = 1;
            break;
        }
    }
    return r;
}

static uint32_t block_elems(const st_tensor_t *t)
{
    const st_dtype_traits_t *tr = st_dtype_traits(t->type);
    return tr ? tr->block_elems : 1;
}

/* Rank r's share of `total` units handed out in groups of g: as even as
 * groups allow, the first (groups % n) ranks one group more. */
static st_status_t split_groups(const st_tensor_t *down, uint64_t total, uint32_t g, uint32_t n,
                                uint32_t r, st_tp_range_t *out, st_error_t *err)
{
    uint64_t groups = total / g, base, extra;

    if (total % g)
        return st_error_set(err, ST_ERR_FORMAT, "tp: %s: %llu hidden units are not whole "
                            "blocks of %u", down->name, (unsigned long long)total, g);
    if (groups < n)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: %s (%s, blocks of %u columns): its "
                            "%llu hidden units are %llu blocks, fewer than %u ranks",
                            down->name, st_dtype_name(down->type), g,
                            (unsigned long long)total, (unsigned long long)groups, n);
    base = groups / n;
    extra = groups % n;
    out->first = ((uint64_t)r * base + ST_MIN((uint64_t)r, extra)) * g;
    out->count = (base + (r < extra)) * g;
    return ST_OK;
}

/* FFN units of one (gate, up, down) triple; {0, 0} when the layer has none. */
static st_status_t split_ffn(const st_tensor_t *gate, const st_tensor_t *down, uint32_t n,
                             uint32_t r, st_tp_range_t *out, st_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!down)
        return ST_OK;
    if (gate && gate->ne[1] != down->ne[0])
        return st_error_set(err, ST_ERR_FORMAT, "tp: %s has %llu rows but %s %llu columns",
                            gate->name, (unsigned long long)gate->ne[1], down->name,
                            (unsigned long long)down->ne[0]);
    return split_groups(down, down->ne[0], block_elems(down), n, r, out, err);
}

static uint64_t slice_bytes(const st_tensor_t *t, uint32_t axis, uint64_t count)
{
    uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];

    if (axis == 0)
        return rows * st_dtype_row_bytes(t->type, count);
    if (axis == 1)
        return t->ne[2] * t->ne[3] * count * t->row_bytes;
    return t->ne[3] * count * t->ne[1] * t->row_bytes;
}

st_status_t st_tp_layer_split(const st_hparams_t *hp, st_family_t fam, const st_layer_t *L,
                              uint32_t n_ranks, uint32_t rank, st_tp_layer_t *out,
                              st_error_t *err)
{
    st_tp_layer_t tl;
    st_status_t st;
    uint32_t per;

    if (!hp || !L || !out || n_ranks == 0 || n_ranks > ST_TP_MAX_RANKS || rank >= n_ranks ||
        fam >= ST_FAMILY_COUNT_ || hp->n_head == 0 || hp->n_head_kv == 0)
        return st_error_set(err, ST_ERR_INVALID, "tp: bad arguments (rank %u of %u ranks, at "
                            "most %d)", rank, n_ranks, ST_TP_MAX_RANKS);
    memset(&tl, 0, sizeof tl);
    tl.rank = rank;
    tl.n_ranks = n_ranks;

    /* Heads: whole GQA groups per rank (MLA: one shared latent, heads free). */
    if (fam == ST_FAMILY_DEEPSEEK2) {
        if (hp->n_head % n_ranks)
            return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: %u attention heads do not divide "
                                "over %u ranks", hp->n_head, n_ranks);
        per = hp->n_head / n_ranks;
        tl.heads = (st_tp_range_t){(uint64_t)rank * per, per};
        tl.kv_heads = (st_tp_range_t){0, 1};
        tl.kv_k_dim = hp->kv_k_dim;
        tl.kv_v_dim = hp->kv_v_dim;
    } else {
        if (hp->n_head % hp->n_head_kv)
            return st_error_set(err, ST_ERR_FORMAT, "tp: %u query heads are not groups of %u KV "
                                "heads", hp->n_head, hp->n_head_kv);
        if (hp->n_head_kv % n_ranks)
            return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: %u KV heads do not divide over %u "
                                "ranks (each rank owns whole query groups: %u query heads "
                                "per KV head)", hp->n_head_kv, n_ranks,
                                hp->n_head / hp->n_head_kv);
        per = hp->n_head_kv / n_ranks;
        tl.kv_heads = (st_tp_range_t){(uint64_t)rank * per, per};
        per *= hp->n_head / hp->n_head_kv;
        tl.heads = (st_tp_range_t){(uint64_t)rank * per, per};
        tl.kv_k_dim = (uint32_t)(hp->kv_k_dim / hp->n_head_kv * tl.kv_heads.count);
        tl.kv_v_dim = (uint32_t)(hp->kv_v_dim / hp->n_head_kv * tl.kv_heads.count);
    }

    if ((st = split_ffn(L->w_gate, L->w_down, n_ranks, rank, &tl.ff, err)) != ST_OK ||
        (st = split_ffn(L->gate_exps, L->down_exps, n_ranks, rank, &tl.ff_exp, err)) != ST_OK ||
        (st = split_ffn(L->gate_shexp, L->down_shexp, n_ranks, rank, &tl.ff_shexp, err)) != ST_OK)
        return st;

    if (L->n_all > ST_LAYER_MAX_TENSORS)
        return st_error_set(err, ST_ERR_INVALID, "tp: layer lists %u tensors", L->n_all);
    for (uint32_t i = 0; i < L->n_all; i++) {
        const st_tensor_t *t = L->all[i];
        st_tp_part_t *p = &tl.parts[i];
        int found;
        role_t ro = role_of(L, t, &found);
        const st_tp_range_t *u = NULL;
        uint64_t total = 0, scale;

        if (!found)
            return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: tensor '%s' has no tensor-parallel "
                                "rule", t->name);
        if (t->n_dims > 3)
            return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: tensor '%s' has %u dimensions",
                                t->name, t->n_dims);
        p->t = t;
        switch (ro.unit) {
        case U_HEADS:    u = &tl.heads;    total = hp->n_head;    break;
        case U_KV_HEADS: u = &tl.kv_heads; total = hp->n_head_kv; break;
        case U_FF:       u = &tl.ff;       total = L->w_down->ne[0];     break;
        case U_FF_EXP:   u = &tl.ff_exp;   total = L->down_exps->ne[0];  break;
        case U_FF_SHEXP: u = &tl.ff_shexp; total = L->down_shexp->ne[0]; break;
        case U_WHOLE:    break;
        }
        if (!u || n_ranks == 1) {
            p->split = 0;
            p->axis = 0;
            p->range = (st_tp_range_t){0, t->ne[0]};
            p->bytes = t->nbytes;
            tl.bytes += p->bytes;
            continue;
        }
        /* Heads cover a whole number of rows/columns each (head_dim, or MLA's
         * nope + rope rows); FFN units are one row/column each. */
        if (t->ne[ro.axis] % total)
            return st_error_set(err, ST_ERR_FORMAT, "tp: tensor '%s': dimension %u (%llu) is not "
                                "a multiple of %llu heads", t->name, ro.axis,
                                (unsigned long long)t->ne[ro.axis], (unsigned long long)total);
        scale = t->ne[ro.axis] / total;
        p->split = 1;
        p->axis = ro.axis;
        p->range = (st_tp_range_t){u->first * scale, u->count * scale};
        if (ro.axis == 0) {
            uint32_t be = block_elems(t);
            if (p->range.first % be || p->range.count % be)
                return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: %s (%s, blocks of %u columns): "
                                    "rank %u of %u would own columns %llu..%llu, not whole "
                                    "blocks (%llu %s x %llu columns)", t->name,
                                    st_dtype_name(t->type), be, rank, n_ranks,
                                    (unsigned long long)p->range.first,
                                    (unsigned long long)(p->range.first + p->range.count - 1),
                                    (unsigned long long)u->count,
                                    ro.unit == U_HEADS ? "heads" : "units",
                                    (unsigned long long)scale);
        }
        p->bytes = slice_bytes(t, p->axis, p->range.count);
        tl.bytes += p->bytes;
    }
    tl.n_parts = L->n_all;

    /* All-reduce placement: the two column-split products. */
    tl.reduce[tl.n_reduce++] = (st_tp_reduce_t){ST_TP_REDUCE_ATTN_OUT, L->wo, hp->n_embd};
    tl.reduce[tl.n_reduce++] = (st_tp_reduce_t){ST_TP_REDUCE_FFN_OUT,
                                                L->is_moe ? L->down_exps : L->w_down, hp->n_embd};
    *out = tl;
    return ST_OK;
}

const st_tp_part_t *st_tp_layer_part(const st_tp_layer_t *tl, const st_tensor_t *t)
{
    if (!tl || !t)
        return NULL;
    for (uint32_t i = 0; i < tl->n_parts; i++)
        if (tl->parts[i].t == t)
            return &tl->parts[i];
    return NULL;
}

st_status_t st_tp_part_extract(const st_tp_part_t *p, void *dst, uint64_t dst_bytes,
                               st_tensor_t *view, st_error_t *err)
{
    const st_tensor_t *t;
    const uint8_t *src;
    uint8_t *d = dst;
    st_tensor_t v;

    if (!p || !p->t || !dst || !view)
        return st_error_set(err, ST_ERR_INVALID, "tp: extract: bad arguments");
    t = p->t;
    src = t->data;
    if (dst_bytes < p->bytes)
        return st_error_set(err, ST_ERR_RANGE, "tp: extract %s: %llu bytes needed, %llu given",
                            t->name, (unsigned long long)p->bytes,
                            (unsigned long long)dst_bytes);
    if (t->n_dims > 3 || t->ne[3] != 1)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "tp: extract %s: more than 3 dimensions",
                            t->name);
    v = *t;
    v.data = dst;
    v.nbytes = p->bytes;
    if (!p->split) {
        memcpy(d, src, t->nbytes);
    } else if (p->axis == 0) {
        const st_dtype_traits_t *tr = st_dtype_traits(t->type);
        uint64_t rows = t->ne[1] * t->ne[2];
        uint64_t rb = st_dtype_row_bytes(t->type, p->range.count);
        uint64_t off = p->range.first / tr->block_elems * tr->block_bytes;

        for (uint64_t i = 0; i < rows; i++)
            memcpy(d + i * rb, src + i * t->row_bytes + off, rb);
        v.ne[0] = p->range.count;
        v.row_bytes = rb;
    } else if (p->axis == 1) {
        uint64_t mat = t->ne[1] * t->row_bytes, part = p->range.count * t->row_bytes;

        for (uint64_t m = 0; m < t->ne[2]; m++)
            memcpy(d + m * part, src + m * mat + p->range.first * t->row_bytes, part);
        v.ne[1] = p->range.count;
    } else {
        uint64_t mat = t->ne[1] * t->row_bytes;

        memcpy(d, src + p->range.first * mat, p->range.count * mat);
        v.ne[2] = p->range.count;
    }
    *view = v;
    return ST_OK;
}

void st_tp_rank_hparams(const st_hparams_t *hp, const st_tp_layer_t *tl, st_hparams_t *out)
{
    st_hparams_t h = *hp;

    h.n_head = (uint32_t)tl->heads.count;
    h.n_head_kv = (uint32_t)tl->kv_heads.count;   /* MLA: 1, the latent */
    if (tl->ff.count)
        h.n_ff = (uint32_t)tl->ff.count;
    if (tl->ff_exp.count)
        h.n_ff_exp = (uint32_t)tl->ff_exp.count;
    if (tl->ff_shexp.count)
        h.n_ff_shexp = (uint32_t)tl->ff_shexp.count;
    h.kv_k_dim = tl->kv_k_dim;
    h.kv_v_dim = tl->kv_v_dim;
    *out = h;
}

/* ---- a model's layer range ---------------------------------------------- */

struct st_tp_plan {
    uint32_t       first, last, n_ranks;
    st_tp_layer_t *layers;     /* [(l - first) * n_ranks + r] */
};

st_status_t st_tp_plan_create(const st_model_t *m, uint32_t first, uint32_t last,
                              uint32_t n_ranks, st_tp_plan_t **out, st_error_t *err)
{
    const st_hparams_t *hp;
    st_tp_plan_t *p;
    st_status_t st;

    if (!m || !out || n_ranks == 0 || n_ranks > ST_TP_MAX_RANKS)
        return st_error_set(err, ST_ERR_INVALID, "tp: bad arguments (%u ranks, at most %d)",
                            n_ranks, ST_TP_MAX_RANKS);
    hp = st_model_hparams(m);
    if (first >= last || last > hp->n_layer)
        return st_error_set(err, ST_ERR_RANGE, "tp: layers [%u, %u) outside the model's %u",
                            first, last, hp->n_layer);
    if (!(p = calloc(1, sizeof *p)))
        return st_error_set(err, ST_ERR_NOMEM, "tp: out of memory");
    p->first = first;
    p->last = last;
    p->n_ranks = n_ranks;
    p->layers = calloc((size_t)(last - first) * n_ranks, sizeof *p->layers);
    if (!p->layers) {
        st = st_error_set(err, ST_ERR_NOMEM, "tp: out of memory");
        goto err_plan;
    }
    for (uint32_t l = first; l < last; l++) {
        for (uint32_t r = 0; r < n_ranks; r++) {
            st = st_tp_layer_split(hp, st_model_family(m), st_model_layer(m, l), n_ranks, r,
                                   &p->layers[(size_t)(l - first) * n_ranks + r], err);
            if (st != ST_OK) {
                st_error_prefix(err, "layer %u", l);
                goto err_plan;
            }
        }
    }
    *out = p;
    return ST_OK;

err_plan:
    st_tp_plan_destroy(p);
    return st;
}

void st_tp_plan_destroy(st_tp_plan_t *p)
{
    if (!p)
        return;
    free(p->layers);
    free(p);
}

const st_tp_layer_t *st_tp_plan_layer(const st_tp_plan_t *p, uint32_t l, uint32_t r)
{
    if (!p || l < p->first || l >= p->last || r >= p->n_ranks)
        return NULL;
    return &p->layers[(size_t)(l - p->first) * p->n_ranks + r];
}

uint64_t st_tp_plan_rank_bytes(const st_tp_plan_t *p, uint32_t r)
{
    uint64_t b = 0;

    if (!p || r >= p->n_ranks)
        return 0;
    for (uint32_t l = p->first; l < p->last; l++)
        b += p->layers[(size_t)(l - p->first) * p->n_ranks + r].bytes;
    return b;
}
