#ifndef _GNU_SOURCE
#define _GNU_SOURCE   // pthread_rwlockattr_setkind_np
#endif
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

// The fork guard: every call into OpenBLAS holds it shared, `copenblas_fork_guard_begin` holds it
// exclusively. OpenBLAS's fork handler stops its worker threads, and a call on another thread
// restarts them; when the two overlap, fork() can hang for good (seen in this project's test suite:
// the handler joined a worker that never woke; OpenBLAS issues #2270 and #5520 describe the same
// family). Writers are preferred, so a stream of sgemm calls cannot starve a fork.
static pthread_once_t copenblas_guard_once = PTHREAD_ONCE_INIT;
static pthread_rwlock_t copenblas_guard;

static void copenblas_guard_init(void) {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&copenblas_guard, &attr);
    pthread_rwlockattr_destroy(&attr);
}

static void copenblas_shared(void) {
    (void)pthread_once(&copenblas_guard_once, copenblas_guard_init);
    pthread_rwlock_rdlock(&copenblas_guard);
}

static void copenblas_unshared(void) { pthread_rwlock_unlock(&copenblas_guard); }

void copenblas_fork_guard_begin(void) {
    (void)pthread_once(&copenblas_guard_once, copenblas_guard_init);
    pthread_rwlock_wrlock(&copenblas_guard);
}

void copenblas_fork_guard_end(void) { pthread_rwlock_unlock(&copenblas_guard); }

void copenblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                     blasint m, blasint n, blasint k, float alpha, const float *a, blasint lda,
                     const float *b, blasint ldb, float beta, float *c, blasint ldc) {
    copenblas_require();
    copenblas_shared();
    copenblas_sgemm_fn(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    copenblas_unshared();
}

int copenblas_get_num_threads(void) {
    copenblas_require();
    copenblas_shared();
    int n = copenblas_get_fn();
    copenblas_unshared();
    return n;
}

void copenblas_set_num_threads(int threads) {
    copenblas_require();
    copenblas_shared();
    copenblas_set_fn(threads);
    copenblas_unshared();
}
