#include "COpenBLAS.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_once_t copenblas_once = PTHREAD_ONCE_INIT;
// Written once inside pthread_once, which orders these writes before every later reader's return
// from pthread_once.
static __typeof__(cblas_sgemm) *copenblas_sgemm_fn;
static __typeof__(openblas_get_num_threads) *copenblas_get_fn;
static __typeof__(openblas_set_num_threads) *copenblas_set_fn;
static char copenblas_error[512];

static void copenblas_open(void) {
    // RTLD_LOCAL: nothing else in the process resolves symbols against it. The handle is never
    // closed; OpenBLAS's worker threads live until the process ends, as when it was linked.
    void *lib = dlopen(COPENBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *why = dlerror();
        snprintf(copenblas_error, sizeof copenblas_error, "%s", why != NULL ? why : "dlopen failed");
        return;
    }
    void *sgemm = dlsym(lib, "cblas_sgemm");
    void *get = dlsym(lib, "openblas_get_num_threads");
    void *set = dlsym(lib, "openblas_set_num_threads");
    if (sgemm == NULL || get == NULL || set == NULL) {
        snprintf(copenblas_error, sizeof copenblas_error,
                 "%s lacks cblas_sgemm, openblas_get_num_threads or openblas_set_num_threads", COPENBLAS_SONAME);
        return;
    }
    // POSIX guarantees that dlsym's object pointer converts to a function pointer.
    copenblas_sgemm_fn = (__typeof__(cblas_sgemm) *)sgemm;
    copenblas_get_fn = (__typeof__(openblas_get_num_threads) *)get;
    copenblas_set_fn = (__typeof__(openblas_set_num_threads) *)set;
}

int copenblas_load(void) {
    (void)pthread_once(&copenblas_once, copenblas_open);
    return copenblas_sgemm_fn != NULL ? 0 : -1;
}

const char *copenblas_load_error(void) {
    (void)pthread_once(&copenblas_once, copenblas_open);
    return copenblas_error;
}

/// Reached only by a caller that skipped `copenblas_load`'s check: a programming error.
static void copenblas_require(void) {
    if (copenblas_load() == 0) return;
    fprintf(stderr, "resnet-convert: cannot load OpenBLAS (%s)\n", copenblas_error);
    abort();
}

void copenblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                     blasint m, blasint n, blasint k, float alpha, const float *a, blasint lda,
                     const float *b, blasint ldb, float beta, float *c, blasint ldc) {
    copenblas_require();
    copenblas_sgemm_fn(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int copenblas_get_num_threads(void) {
    copenblas_require();
    return copenblas_get_fn();
}

void copenblas_set_num_threads(int threads) {
    copenblas_require();
    copenblas_set_fn(threads);
}
