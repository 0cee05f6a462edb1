/*
 * layer_moe.c - mixture-of-experts FFN (see stage_internal.h).
 *
 * Routing runs on the host: the router's logits (n x n_expert floats) come
 * back from the backend, each token picks its experts, and every expert
 * then runs once over the tokens routed to it (gathered into contiguous
 * rows), so a batch reads each selected expert's weights once. Results are
 * added to each token's output in ascending expert order whatever the
 * batch, which keeps a token's output independent of the batch it ran in.
 *
 * Scores: softmax or sigmoid of the logits; the selection adds the
 * correction bias exp_probs_b (DeepSeek-V3) and, with expert groups, keeps
 * only the n_expert_group_used groups whose two best experts score
 * highest. The mixing weights are the scores without the bias, optionally
 * normalised to sum 1, times expert_weights_scale.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stage_internal.h"
#include "st_util.h"

#define ST_MOE_MAX_GROUPS 256

struct st_moe {
    float   *logits;        /* backend [B][n_expert] */
    float   *xe, *h1, *h2, *ye;   /* one expert's rows: [B][n_embd], [B][n_ff_exp] x2, [B][n_embd] */
    float   *hs1, *hs2, *ys;      /* shared experts */
    float   *host_logits;   /* [B][n_expert] */
    float   *score, *sel_score;   /* [n_expert] scratch */
    int32_t *sel;           /* [B][n_used] chosen experts */
    float   *w;             /* [B][n_used] their weights */
    int32_t *cnt, *start;   /* per expert */
    int32_t *rows_tok;      /* [B * n_used] token of each routed row, grouped by expert */
    float   *rows_w;
    uint8_t *first;         /* [B] output row not yet written */
};

st_status_t st_lo_moe_create(st_stage_t *s, st_moe_t **out, st_error_t *err)
{
    const st_hparams_t *hp = s->hp;
    uint64_t B = s->p.max_batch, E = hp->n_expert, K = hp->n_expert_used;
    st_status_t st = ST_OK;
    st_moe_t *m = calloc(1, sizeof *m);

    if (!m)
        return st_error_set(err, ST_ERR_NOMEM, "stage: out of memory");
    if (hp->n_expert_group > ST_MOE_MAX_GROUPS) {
        free(m);
        return st_error_set(err, ST_ERR_UNSUPPORTED, "stage: %u expert groups (at most %d)",
                            hp->n_expert_group, ST_MOE_MAX_GROUPS);
    }
    m->logits = st_stage_alloc(s, B * E, &st);
    m->xe = st_stage_alloc(s, B * hp->n_embd, &st);
    m->ye = st_stage_alloc(s, B * hp->n_embd, &st);
    m->h1 = st_stage_alloc(s, B * hp->n_ff_exp, &st);
    m->h2 = st_stage_alloc(s, B * hp->n_ff_exp, &st);
    if (hp->n_expert_shared) {
        m->hs1 = st_stage_alloc(s, B * hp->n_ff_shexp, &st);
        m->hs2 = st_stage_alloc(s, B * hp->n_ff_shexp, &st);
        m->ys = st_stage_alloc(s, B * hp->n_embd, &st);
    }
    m->host_logits = malloc(B * E * sizeof(float));
    m->score = malloc(E * sizeof(float));
    m->sel_score = malloc(E * sizeof(float));
    m->sel = malloc(B * K * sizeof(int32_t));
    m->w = malloc(B * K * sizeof(float));
    m->cnt = malloc(E * sizeof(int32_t));
    m->start = malloc(E * sizeof(int32_t));
    m->rows_tok = malloc(B * K * sizeof(int32_t));
    m->rows_w = malloc(B * K * sizeof(float));
    m->first = malloc(B);
    if (st != ST_OK || !m->host_logits || !m->score || !m->sel_score || !m->sel || !m->w || !m->cnt ||
        !m->start || !m->rows_tok || !m->rows_w || !m->first) {
        st_lo_moe_destroy(s, m);
        return st_error_set(err, st != ST_OK ? st : ST_ERR_NOMEM, "stage: cannot allocate the "
                            "expert buffers for batch %u", s->p.max_batch);
    }
    *out = m;
    return ST_OK;
}

void st_lo_moe_destroy(st_stage_t *s, st_moe_t *m)
{
    if (!m)
        return;
    float *bufs[] = {m->logits, m->xe, m->ye, m->h1, m->h2, m->hs1, m->hs2, m->ys};
    for (size_t i = 0; i < ST_ARRAY_SIZE(bufs); i++)
        st_stage_free_buf(s, bufs[i]);
    free(m->host_logits);
    free(m->score);
    free(m->sel_score);
    free(m->sel);
    free(m->w);
    free(m->cnt);
    free(m->start);
    free(m->rows_tok);
    free(m->rows_w);
    free(m->first);
    free(m);
}

/* Index of the largest score (the lowest index among equals); -1 if all
 * are -inf. */
static int argmax(const float *v, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (v[i] != -INFINITY && (best < 0 || v[i] > v[best]))
            best = i;
    return best;
}

/* One token: scores from logits, then its experts and weights. */
static void route_token(const st_hparams_t *hp, const st_layer_t *L, const float *logit,
                        float *score, float *sel_score, int32_t *sel, float *w)
{
    const int E = (int)hp->n_expert, K = (int)hp->n_expert_used;
    const float *bias = L->exp_probs_b ? (const float *)L->exp_probs_b->data : NULL;

    if (hp->expert_gating == ST_GATING_SIGMOID) {
        for (int e = 0; e < E; e++)
            score[e] = 1.0f / (1.0f + expf(-logit[e]));
    } else {
        float mx = logit[0], sum = 0.0f;
        for (int e = 1; e < E; e++)
            mx = fmaxf(mx, logit[e]);
        for (int e = 0; e < E; e++)
            sum += (score[e] = expf(logit[e] - mx));
        for (int e = 0; e < E; e++)
            score[e] /= sum;
    }
    for (int e = 0; e < E; e++)
        sel_score[e] = bias ? score[e] + bias[e] : score[e];

    if (hp->n_expert_group > 1 && hp->n_expert_group_used < hp->n_expert_group) {
        const int G = (int)hp->n_expert_group, per = E / G;
        float gs[ST_MOE_MAX_GROUPS];   /* checked at init */
        for (int gi = 0; gi < G; gi++) {
            const float *v = sel_score + gi * per;
            float a = -INFINITY, b2 = -INFINITY;   /* the group's two best */
            for (int e = 0; e < per; e++) {
                if (v[e] > a) { b2 = a; a = v[e]; }
                else if (v[e] > b2) b2 = v[e];
            }
            gs[gi] = a + b2;
        }
        uint8_t keep[ST_MOE_MAX_GROUPS] = {0};
        for (uint32_t k = 0; k < hp->n_expert_group_used; k++) {
            int gi = argmax(gs, G);
            keep[gi] = 1;
            gs[gi] = -INFINITY;
        }
        for (int gi = 0; gi < G; gi++)
            if (!keep[gi])
                for (int e = 0; e < per; e++)
                    sel_score[gi * per + e] = -INFINITY;
    }

    float sum = 0.0f;
    for (int k = 0; k < K; k++) {
        int e = argmax(sel_score, E);
        sel[k] = e;
        w[k] = score[e];
        sum += w[k];
        sel_score[e] = -INFINITY;
    }
    for (int k = 0; k < K; k++)
        w[k] = (hp->expert_weights_norm ? w[k] / sum : w[k]) * hp->expert_weights_scale;
}

void st_lo_moe_forward(st_stage_t *s, st_moe_t *m, const st_layer_t *L, const float *xn, int n,
                       float *out)
{
    const st_backend_ops_t *o = s->be.ops;
    void *c = s->be.ctx;
    const st_hparams_t *hp = s->hp;
    const int E = (int)hp->n_expert, K = (int)hp->n_expert_used, d = (int)hp->n_embd;

    if (n <= 0)
        return;
    o->matmul(c, L->gate_inp, xn, n, m->logits);
    if (o->to_host(c, m->host_logits, m->logits, (size_t)n * E * sizeof(float)) != ST_OK)
        return;
    memset(m->cnt, 0, (size_t)E * sizeof(int32_t));
    for (int t = 0; t < n; t++) {
        route_token(hp, L, m->host_logits + (size_t)t * E, m->score, m->sel_score,
                    m->sel + (size_t)t * K, m->w + (size_t)t * K);
        for (int k = 0; k < K; k++)
            m->cnt[m->sel[(size_t)t * K + k]]++;
    }
    /* Rows grouped by expert, tokens in batch order within each. */
    for (int e = 0, acc = 0; e < E; e++) {
        m->start[e] = acc;
        acc += m->cnt[e];
        m->cnt[e] = 0;
    }
    for (int t = 0; t < n; t++)
        for (int k = 0; k < K; k++) {
            int e = m->sel[(size_t)t * K + k], r = m->start[e] + m->cnt[e]++;
            m->rows_tok[r] = t;
            m->rows_w[r] = m->w[(size_t)t * K + k];
        }
    memset(m->first, 1, (size_t)n);
    for (int e = 0; e < E; e++) {
        int cnt = m->cnt[e], r0 = m->start[e];
        if (cnt == 0)
            continue;
        for (int j = 0; j < cnt; j++)
            o->copy2d(c, m->xe + (size_t)j * d, d, xn + (size_t)m->rows_tok[r0 + j] * d, d, 1, d);
        st_lo_glu_ffn(s, &L->exp_gate[e], &L->exp_up[e], &L->exp_down[e], m->xe, cnt, ST_ACT_SILU,
                      m->h1, m->h2, m->ye);
        for (int j = 0; j < cnt; j++) {
            int t = m->rows_tok[r0 + j];
            float *dst = out + (size_t)t * d;
            const float *src = m->ye + (size_t)j * d;
            if (m->first[t]) {   /* w * y, rounded once, as axpy into zero would */
                o->copy2d(c, dst, d, src, d, 1, d);
                o->scale(c, dst, m->rows_w[r0 + j], (size_t)d);
                m->first[t] = 0;
            } else {
                o->axpy(c, dst, m->rows_w[r0 + j], src, (size_t)d);
            }
        }
    }
    if (L->gate_shexp) {
        st_lo_glu_ffn(s, L->gate_shexp, L->up_shexp, L->down_shexp, xn, n, ST_ACT_SILU, m->hs1,
                      m->hs2, m->ys);
        o->add(c, out, m->ys, (size_t)n * d);
    }
}

void st_lo_ffn_residual(st_stage_t *s, const st_layer_t *L, st_moe_t *moe, float *h1, float *h2,
                        int n)
{
    const st_backend_ops_t *o = s->be.ops;
    const int d = (int)s->hp->n_embd;

    o->rmsnorm(s->be.ctx, s->x, L->ffn_norm, s->hp->rms_eps, n, d, s->xb);
    if (L->is_moe)
        st_lo_moe_forward(s, moe, L, s->xb, n, s->xb2);
    else
        st_lo_glu_ffn(s, L->w_gate, L->w_up, L->w_down, s->xb, n, ST_ACT_SILU, h1, h2, s->xb2);
    o->add(s->be.ctx, s->x, s->xb2, (size_t)n * d);
}
