/*
 * What UCX offers on this host, for `strata doctor`.
 *
 * Two views: every transport/device UCT can open here (what the hardware and
 * the UCX build provide), and the subset the UCP context selects under
 * UCX_TLS / UCX_NET_DEVICES (what strata will actually use). UCP has no API
 * that lists its resources, so the second view is read back from
 * ucp_context_print_info(), whose resource lines end in "-- tl/dev".
 */
#include "st_transport_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uct/api/uct.h>
#include <ucp/api/ucp_version.h>

st_status_t st_tp_ucx_init(const st_transport_config_t *c, uint64_t features,
                           st_error_t *err, ucp_context_h *out);

/* Verbs transports: rc_verbs, rc_mlx5, dc_mlx5, ud_verbs, ud_mlx5. */
static int is_rdma_tl(const char *tl)
{
    return !strncmp(tl, "rc_", 3) || !strncmp(tl, "dc_", 3) || !strncmp(tl, "ud_", 3);
}

static const char *dev_kind(uct_device_type_t t)
{
    switch (t) {
    case UCT_DEVICE_TYPE_NET:  return "net";
    case UCT_DEVICE_TYPE_SHM:  return "shm";
    case UCT_DEVICE_TYPE_ACC:  return "acc";
    case UCT_DEVICE_TYPE_SELF: return "self";
    default:                   return "?";
    }
}

static void add_res(st_transport_info_t *out, const char *tl, const char *dev, const char *kind)
{
    st_transport_resource_t *r;

    for (uint32_t i = 0; i < out->n_res; i++)
        if (!strcmp(out->res[i].tl, tl) && !strcmp(out->res[i].dev, dev))
            return;
    if (out->n_res >= ST_TRANSPORT_INFO_MAX_RES)
        return;
    r = &out->res[out->n_res++];
    memset(r, 0, sizeof(*r));
    snprintf(r->tl, sizeof(r->tl), "%s", tl);
    snprintf(r->dev, sizeof(r->dev), "%s", dev);
    snprintf(r->kind, sizeof(r->kind), "%s", kind);
    r->rdma = is_rdma_tl(tl);
}

/* Every transport of every memory domain UCT can open. */
static void probe_uct(st_transport_info_t *out)
{
    uct_component_h *comps;
    unsigned n_comps;

    if (uct_query_components(&comps, &n_comps) != UCS_OK)
        return;
    for (unsigned c = 0; c < n_comps; c++) {
        uct_component_attr_t ca;
        memset(&ca, 0, sizeof(ca));
        ca.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT;
        if (uct_component_query(comps[c], &ca) != UCS_OK || ca.md_resource_count == 0)
            continue;
        ca.md_resources = calloc(ca.md_resource_count, sizeof(*ca.md_resources));
        if (!ca.md_resources)
            continue;
        ca.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCES;
        if (uct_component_query(comps[c], &ca) != UCS_OK)
            goto next;
        for (unsigned m = 0; m < ca.md_resource_count; m++) {
            uct_md_config_t *mdc;
            uct_md_h md;
            uct_md_attr_t ma;
            uct_tl_resource_desc_t *tls;
            unsigned n_tls;

            if (uct_md_config_read(comps[c], NULL, NULL, &mdc) != UCS_OK)
                continue;
            if (uct_md_open(comps[c], ca.md_resources[m].md_name, mdc, &md) != UCS_OK) {
                uct_config_release(mdc);
                continue;
            }
            uct_config_release(mdc);
            int md_cuda = uct_md_query(md, &ma) == UCS_OK &&
                          (ma.cap.reg_mem_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA));
            if (uct_md_query_tl_resources(md, &tls, &n_tls) == UCS_OK) {
                for (unsigned i = 0; i < n_tls; i++) {
                    add_res(out, tls[i].tl_name, tls[i].dev_name, dev_kind(tls[i].dev_type));
                    if (is_rdma_tl(tls[i].tl_name) && md_cuda)
                        out->cuda_reg = 1;
                }
                uct_release_tl_resource_list(tls);
            }
            uct_md_close(md);
        }
next:
        free(ca.md_resources);
    }
    uct_release_component_list(comps);
}

/* Marks the resources the UCP context selected. */
static st_status_t probe_ucp(const st_transport_config_t *cfg, st_error_t *err,
                             st_transport_info_t *out)
{
    ucp_context_h ctx;
    ucp_context_attr_t ca;
    char *text = NULL, *line, *save = NULL;
    size_t text_len = 0;
    FILE *f;
    st_status_t st;

    if ((st = st_tp_ucx_init(cfg, UCP_FEATURE_AM, err, &ctx)) != ST_OK)
        return st;
    ca.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES;
    if (ucp_context_query(ctx, &ca) == UCS_OK) {
        out->mem_host         = !!(ca.memory_types & UCS_BIT(UCS_MEMORY_TYPE_HOST));
        out->mem_cuda         = !!(ca.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA));
        out->mem_cuda_managed = !!(ca.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA_MANAGED));
        out->mem_rocm         = !!(ca.memory_types & UCS_BIT(UCS_MEMORY_TYPE_ROCM));
    }
    f = open_memstream(&text, &text_len);
    if (!f) {
        ucp_cleanup(ctx);
        return st_error_set(err, ST_ERR_NOMEM, "open_memstream failed");
    }
    ucp_context_print_info(ctx, f);
    fclose(f);
    ucp_cleanup(ctx);

    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char tl[64], dev[64], *arrow, *slash;
        if (!strstr(line, "resource") || !(arrow = strstr(line, "-- ")))
            continue;
        arrow += 3;
        slash = strchr(arrow, '/');
        if (!slash || (size_t)(slash - arrow) >= sizeof(tl))
            continue;
        memcpy(tl, arrow, (size_t)(slash - arrow));
        tl[slash - arrow] = '\0';
        snprintf(dev, sizeof(dev), "%s", slash + 1);
        dev[strcspn(dev, " \t")] = '\0';
        int found = 0;
        for (uint32_t i = 0; i < out->n_res; i++)
            if (!strcmp(out->res[i].tl, tl) && !strcmp(out->res[i].dev, dev)) {
                out->res[i].enabled = 1;
                found = 1;
            }
        if (!found) {
            add_res(out, tl, dev, "?");
            if (out->n_res && !strcmp(out->res[out->n_res - 1].tl, tl))
                out->res[out->n_res - 1].enabled = 1;
        }
    }
    free(text);
    return ST_OK;
}

st_status_t st_transport_probe(const st_transport_config_t *cfg, st_error_t *err,
                               st_transport_info_t *out)
{
    st_transport_config_t def;
    int net_other = 0, net_tcp = 0;
    st_status_t st;

    if (!out)
        return ST_ERR_INVALID;
    if (!cfg) {
        st_transport_config_init(&def);
        cfg = &def;
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->ucx_version, sizeof(out->ucx_version), "%s", ucp_get_version_string());
    snprintf(out->ucx_built, sizeof(out->ucx_built), "%d.%d", UCP_API_MAJOR, UCP_API_MINOR);
    probe_uct(out);
    if ((st = probe_ucp(cfg, err, out)) != ST_OK)
        return st;
    for (uint32_t i = 0; i < out->n_res; i++) {
        const st_transport_resource_t *r = &out->res[i];
        if (!r->enabled || strcmp(r->kind, "net") != 0)
            continue;
        if (r->rdma)
            out->rdma = 1;
        if (!strcmp(r->tl, "tcp"))
            net_tcp = 1;
        else
            net_other = 1;
    }
    out->gpudirect    = out->rdma && out->mem_cuda && out->cuda_reg;
    out->net_tcp_only = net_tcp && !net_other;
    out->net_none     = !net_tcp && !net_other;
    return ST_OK;
}
