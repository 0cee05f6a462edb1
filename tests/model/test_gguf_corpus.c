/*
 * test_gguf_corpus.c - replays the malformed-file corpus (tests/data/
 * malformed) and the fuzzing corpus (fuzz/corpus/gguf) through st_gguf_open
 * and st_model_open in a normal build: each file must give a clean result,
 * success or a one-line error naming the file, never a crash (run it in the
 * ASan/UBSan build to catch memory errors). Every malformed file must be
 * refused. The sources are found through STRATA_SOURCE_DIR, which ctest sets.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "st_model.h"
#include "st_test.h"

static int clean_error(const char *path, const st_error_t *err)
{
    return err->msg[0] != '\0' && strchr(err->msg, '\n') == NULL &&
           strncmp(err->msg, path, strlen(path)) == 0;
}

/* Replays every regular file of `dir`; returns the number of files, or -1
 * when the directory is missing. */
static int replay_dir(int *st_failed_, const char *dir, int must_fail)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[1024];
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        st_error_t err;
        st_gguf_t *g = NULL;
        st_model_t *m = NULL;
        st_status_t sg, sm;

        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        n++;
        st_error_clear(&err);
        sg = st_gguf_open(path, &g, &err);
        if (sg == ST_OK)
            st_gguf_close(g);
        else
            ST_CHECK_MSG(clean_error(path, &err), "%s: gguf error '%s'", path, err.msg);
        st_error_clear(&err);
        sm = st_model_open(path, NULL, &m, &err);
        if (sm == ST_OK) {
            ST_CHECK_MSG(st_model_prefetch(m, 0, st_model_hparams(m)->n_layer, 3, NULL, NULL) == ST_OK,
                         "%s: prefetch", path);
            st_model_close(m);
        } else {
            ST_CHECK_MSG(clean_error(path, &err), "%s: model error '%s'", path, err.msg);
        }
        ST_CHECK_MSG(sm != ST_OK || sg == ST_OK, "%s: model opened but gguf did not", path);
        if (must_fail)
            ST_CHECK_MSG(sm != ST_OK, "%s: malformed file accepted", path);
    }
    closedir(d);
    return n;
}

static const char *source_dir(void)
{
    const char *s = getenv("STRATA_SOURCE_DIR");
    return s && *s ? s : NULL;
}

ST_TEST(malformed_corpus)
{
    char dir[512];
    if (!source_dir())
        ST_SKIP("STRATA_SOURCE_DIR not set (run through ctest)");
    snprintf(dir, sizeof(dir), "%s/tests/data/malformed", source_dir());
    int n = replay_dir(st_failed_, dir, 1);
    ST_CHECK_MSG(n > 0, "%s: no files (%d)", dir, n);
    fprintf(stderr, "  %d malformed files replayed\n", n);
}

ST_TEST(fuzz_corpus)
{
    char dir[512];
    if (!source_dir())
        ST_SKIP("STRATA_SOURCE_DIR not set (run through ctest)");
    snprintf(dir, sizeof(dir), "%s/fuzz/corpus/gguf", source_dir());
    int n = replay_dir(st_failed_, dir, 0);
    ST_CHECK_MSG(n > 0, "%s: no files (%d)", dir, n);
    fprintf(stderr, "  %d fuzz corpus files replayed\n", n);
}

int main(void) { return st_test_main(); }
