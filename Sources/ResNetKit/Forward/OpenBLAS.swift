import COpenBLAS

/// Makes sure OpenBLAS is loaded (it is opened on first use, see Sources/COpenBLAS), so that the
/// sgemm calls after it cannot fail. Every entry point into code that calls `copenblas_sgemm` or
/// OpenBLAS's thread count calls this first; after the first call it costs one `pthread_once`.
/// - Throws: `ResNetError.io` naming the library and the loader's message when it cannot be opened.
func requireOpenBLAS() throws {
    guard copenblas_load() != 0 else { return }
    throw ResNetError.io(file: COPENBLAS_SONAME,
                         reason: "cannot load OpenBLAS, which the forward pass needs (\(String(cString: copenblas_load_error()))); "
                             + "on Debian/Ubuntu it comes with libopenblas0 (libopenblas-dev)")
}
