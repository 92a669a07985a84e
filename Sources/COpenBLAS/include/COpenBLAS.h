#ifndef RESNETKIT_COPENBLAS_H
#define RESNETKIT_COPENBLAS_H

// OpenBLAS, loaded on first use. Its library constructor starts a worker thread per core, which
// cost 2-4 ms at the start of every command, although most never run a forward pass (`convert
// --no-verify`, `inspect`, `--help`). So nothing links OpenBLAS: `copenblas_load` opens it with
// dlopen and looks up the three functions the forward pass calls, which Swift reaches through the
// wrappers below. cblas.h (Debian libopenblas-dev) is included for its types and constants only;
// calling its functions directly would fail to link, by design.

#include <stddef.h>
#include <cblas.h>

/// The shared library opened (Debian's libopenblas0 provides it, through alternatives).
#define COPENBLAS_SONAME "libopenblas.so.0"

/// Opens OpenBLAS once per process (later calls return the first outcome). Returns 0 when the
/// three functions are available, otherwise -1 with the reason in `copenblas_load_error()`.
int copenblas_load(void);

/// Why `copenblas_load` failed (dlopen's or dlsym's message); empty after a success.
const char *copenblas_load_error(void);

/// `cblas_sgemm`. Loads OpenBLAS when needed; aborts with a message when it cannot be loaded,
/// so callers check `copenblas_load` first (the Swift entry points do, and throw).
void copenblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                     blasint m, blasint n, blasint k, float alpha, const float *a, blasint lda,
                     const float *b, blasint ldb, float beta, float *c, blasint ldc);

/// `openblas_get_num_threads`, loading as `copenblas_sgemm` does.
int copenblas_get_num_threads(void);

/// `openblas_set_num_threads`, loading as `copenblas_sgemm` does.
void copenblas_set_num_threads(int threads);

/// Held around every fork() of this process (the HDF5 pre-flight): waits for OpenBLAS calls in
/// flight and keeps new ones out until `copenblas_fork_guard_end`, so OpenBLAS's fork handler never
/// races a call that restarts its threads. Works whether or not OpenBLAS was loaded.
void copenblas_fork_guard_begin(void);
void copenblas_fork_guard_end(void);

#endif
