/*
 * topo_bind.c - applies a worker's placement to the calling process.
 */
#include "topo_internal.h"

#include <errno.h>
#include <string.h>

static st_status_t check(const st_topo_t *t, const st_topo_place_t *pl, unsigned i, st_error_t *err)
{
    if (!t || !pl || i >= pl->n)
        return st_error_set(err, ST_ERR_INVALID, "bind: worker %u not in the placement", i);
    /* Binding to the cores of a topology read from a file would bind to
     * another machine's numbering. */
    if (!t->this_system)
        return st_error_set(err, ST_ERR_UNSUPPORTED, "bind: topology of %s is not this machine", t->source);
    return ST_OK;
}

st_status_t st_topo_bind(const st_topo_t *t, const st_topo_place_t *pl, unsigned i, st_error_t *err)
{
    st_status_t s = check(t, pl, i, err);
    if (s != ST_OK) return s;
    if (hwloc_set_cpubind(t->h, pl->cpus[i], HWLOC_CPUBIND_PROCESS) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "bind: worker %u to cpus %s: %s", i, pl->w[i].cpus,
                            strerror(errno));
    /* Linux keeps memory policies per thread (set_mempolicy); threads and
     * children created later inherit the caller's, hence "call it first".
     * STRICT: without it hwloc 2.9 asks for MPOL_PREFERRED_MANY, which lets
     * allocations drift to the other socket once the node fills up; a worker
     * whose memory the planner sized for this node should fail loudly
     * instead of running at remote-memory speed. */
    if (!hwloc_bitmap_iszero(pl->nodes[i]) &&
        hwloc_set_membind(t->h, pl->nodes[i], HWLOC_MEMBIND_BIND,
                          HWLOC_MEMBIND_THREAD | HWLOC_MEMBIND_STRICT | HWLOC_MEMBIND_BYNODESET) < 0)
        return st_error_set(err, ST_ERR_BACKEND, "bind: worker %u memory to NUMA %d: %s", i,
                            pl->w[i].numa, strerror(errno));
    return ST_OK;
}

st_status_t st_topo_bind_thread(const st_topo_t *t, const st_topo_place_t *pl, unsigned i,
                                unsigned thread_index, st_error_t *err)
{
    st_status_t s = check(t, pl, i, err);
    if (s != ST_OK) return s;
    int n_cores = hwloc_get_nbobjs_inside_cpuset_by_type(t->h, pl->cpus[i], HWLOC_OBJ_CORE);
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set) return st_error_set(err, ST_ERR_NOMEM, "bind: out of memory");
    if (n_cores > 0) {
        hwloc_obj_t core = hwloc_get_obj_inside_cpuset_by_type(t->h, pl->cpus[i], HWLOC_OBJ_CORE,
                                                               thread_index % (unsigned)n_cores);
        hwloc_bitmap_and(set, core->cpuset, pl->cpus[i]);
    } else {
        /* Workers sharing PUs: no whole core inside the set, use a PU. */
        int pu = hwloc_bitmap_first(pl->cpus[i]);
        int w = hwloc_bitmap_weight(pl->cpus[i]);
        for (unsigned k = 0; w > 0 && k < thread_index % (unsigned)w; k++)
            pu = hwloc_bitmap_next(pl->cpus[i], pu);
        hwloc_bitmap_only(set, (unsigned)pu);
    }
    int rc = hwloc_set_cpubind(t->h, set, HWLOC_CPUBIND_THREAD);
    int e = errno;
    hwloc_bitmap_free(set);
    if (rc < 0)
        return st_error_set(err, ST_ERR_BACKEND, "bind: thread %u of worker %u: %s", thread_index, i,
                            strerror(e));
    return ST_OK;
}
