import CKernels

/// Which of the C vector kernels (Sources/CKernels) this CPU and OS can run, checked once.
/// Swift code is compiled for baseline x86-64; anything wider goes through these flags.
enum CPUFeatures {
    /// AVX2 and FMA, with the YMM state saved by the OS.
    static let avx2FMA = ckernels_has_avx2_fma() != 0
    /// AVX-512 F/DQ/BW/VL, with the ZMM and mask state saved by the OS.
    static let avx512 = ckernels_has_avx512() != 0
}

/// A choice among one kernel's builds, ordered from the portable Swift or library fallback (raw value
/// 0, which always runs) up to the widest vectors.
protocol KernelChoice: RawRepresentable, CaseIterable where RawValue == Int {
    /// Whether this CPU and OS can run it.
    var available: Bool { get }
}

extension KernelChoice {
    /// `self` if this CPU runs it, else the best one below it.
    var resolved: Self {
        var kernel = self
        while !kernel.available { kernel = Self(rawValue: kernel.rawValue - 1)! }
        return kernel
    }
}
