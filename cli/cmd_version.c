/* strata version - the version and which optional parts this binary has. */
#include <stdio.h>

#include "st_kernels.h"

const char st_cmd_version_help[] = "print the version and the optional parts built in";

int st_cmd_version(int argc, char **argv)
{
    (void)argc; (void)argv;
    printf("strata 0.1.0\nbackends:");
    for (const char *const *n = st_backend_names(); *n; n++)
        printf(" %s", *n);
    printf("\nparts:");
#ifdef STRATA_HAVE_UCX
    printf(" ucx");
#endif
#ifdef STRATA_HAVE_HWLOC
    printf(" hwloc");
#endif
#ifdef STRATA_HAVE_MPI
    printf(" mpi");
#endif
#ifdef STRATA_HAVE_HTTP
    printf(" http");
#endif
#ifdef STRATA_HAVE_CUDA
    printf(" cuda");
#endif
    printf("\n");
    return 0;
}
