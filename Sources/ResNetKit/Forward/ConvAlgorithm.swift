// How one convolution is computed, and the weight layouts each way reads.
//
// A plan keeps each convolution's folded weights once (ConvWeights) and derives the layouts the
// chosen algorithms read — panels for a C matrix kernel, transformed Winograd points — when a schedule
// first needs them. Which algorithm a layer runs is chosen per input shape (KernelChoice.swift).

import Foundation

/// One way to compute a convolution.
enum ConvAlgorithm: Hashable, Sendable, CustomStringConvertible {
    /// im2col (or the activation as it lies, for 1×1 stride-1 layers) times the weights: a C kernel on
    /// packed panels, or OpenBLAS sgemm (`.blas`; one call per group for a grouped layer).
    case gemm(GemmKernel)
    /// Winograd F(m×m, 3×3) for 3×3 stride-1 ungrouped layers: `transform` runs the tile transforms,
    /// `product` the α² matrix products.
    case winograd(m: Int, product: GemmKernel, transform: WinogradKernel)
    /// The direct grouped kernel.
    case direct(GroupedKernel)

    /// The weights this algorithm reads.
    var layout: WeightLayout {
        switch self {
        case .gemm(.blas), .direct: .plain
        case let .gemm(k): .panels(width: k.panelWidth)
        case let .winograd(m, product, _): .winograd(m: m, width: product.panelWidth)
        }
    }

    /// Whether this CPU runs every kernel it names (the cache file may name ones it does not).
    var runsHere: Bool {
        switch self {
        case let .gemm(k): k.available
        case let .winograd(m, p, t): (m == 2 || m == 4) && p.available && t.available
        case let .direct(k): k.available
        }
    }

    /// "gemm avx512", "winograd4 avx512/avx2", "direct avx2": the form `bench --explain` prints and the
    /// cache file stores.
    var description: String {
        switch self {
        case let .gemm(k): "gemm \(k)"
        case let .winograd(m, p, t): "winograd\(m) \(p)/\(t)"
        case let .direct(k): "direct \(k)"
        }
    }

    /// The inverse of `description`; nil for anything else.
    init?(_ text: String) {
        let parts = text.split(separator: " ")
        guard parts.count == 2 else { return nil }
        func named<K: KernelChoice>(_ s: Substring, _: K.Type) -> K? { K.allCases.first { "\($0)" == s } }
        switch parts[0] {
        case "gemm": guard let k = named(parts[1], GemmKernel.self) else { return nil }; self = .gemm(k)
        case "direct": guard let k = named(parts[1], GroupedKernel.self) else { return nil }; self = .direct(k)
        case "winograd2", "winograd4":
            let kernels = parts[1].split(separator: "/")
            guard kernels.count == 2, let p = named(kernels[0], GemmKernel.self), let t = named(kernels[1], WinogradKernel.self)
            else { return nil }
            self = .winograd(m: parts[0] == "winograd2" ? 2 : 4, product: p, transform: t)
        default: return nil
        }
    }
}

/// A layout of one convolution's folded weights.
enum WeightLayout: Hashable, Sendable {
    /// Per group (KH·KW·Cg, Og), concatenated over groups: what OpenBLAS and the direct grouped kernel read.
    case plain
    /// An ungrouped layer's (K, O) in panels of `width` columns.
    case panels(width: Int)
    /// Winograd-transformed points, each (C, O) plain (`width` 0) or in panels of `width`.
    case winograd(m: Int, width: Int)

    /// Whether the original weights can be recovered from it exactly.
    var exact: Bool {
        if case .winograd = self { return false }
        return true
    }
}

/// Weights in one layout.
enum LaidOutWeights {
    case plain([Float])
    case panels(PackedWeights)
    case winograd(WinogradWeights)
}

/// One convolution's folded weights in every layout asked for so far. Thread-safe; the arrays it hands
/// out are immutable, so a schedule keeps using them after `keep` drops them here.
final class ConvWeights: @unchecked Sendable {
    let groups: Int, K: Int, O: Int
    /// Kernel height and width (Winograd layouts need the 3×3 taps back).
    let KH: Int, KW: Int
    /// Threads for deriving a layout.
    let threads: Int
    private let lock = NSLock()
    private var layouts: [WeightLayout: LaidOutWeights]

    /// - plain: per group (KH·KW·Cg, Og), concatenated over groups.
    init(plain: [Float], groups: Int, K: Int, O: Int, KH: Int, KW: Int, threads: Int = 1) {
        precondition(plain.count == K * O, "plain weights are G × K × Og floats")
        (self.groups, self.K, self.O, self.KH, self.KW, self.threads) = (groups, K, O, KH, KW, max(1, threads))
        layouts = [.plain: .plain(plain)]
    }

    /// The weights in `layout`, derived from an exact one the first time.
    func get(_ layout: WeightLayout) -> LaidOutWeights {
        lock.withLock {
            if let w = layouts[layout] { return w }
            let w = derive(layout)
            layouts[layout] = w
            return w
        }
    }

    /// Drops every layout not in `needed`, keeping one exact layout so any other can be derived later.
    func keep(_ needed: Set<WeightLayout>) {
        lock.withLock {
            var keys = Set(layouts.keys.filter { needed.contains($0) })
            if !keys.contains(where: \.exact), let exact = layouts.keys.filter(\.exact).min(by: { rank($0) < rank($1) }) {
                keys.insert(exact)
            }
            layouts = layouts.filter { keys.contains($0.key) }
        }
    }

    /// Layouts held now (tests check that unneeded ones are dropped).
    var held: Set<WeightLayout> { lock.withLock { Set(layouts.keys) } }

    private func rank(_ l: WeightLayout) -> Int { if case .plain = l { return 0 }; return 1 }

    /// The plain layout, from whatever exact layout is held (caller holds the lock).
    private func plainLocked() -> [Float] {
        if case let .plain(p)? = layouts[.plain] { return p }
        for case let .panels(p) in layouts.values { return p.unpacked() }
        preconditionFailure("a convolution's weights always keep one exact layout")
    }

    private func derive(_ layout: WeightLayout) -> LaidOutWeights {
        let plain = plainLocked()
        switch layout {
        case .plain:
            return .plain(plain)
        case let .panels(width):
            precondition(groups == 1, "panels are for ungrouped convolutions")
            return .panels(plain.withUnsafeBufferPointer { PackedWeights($0, K: K, O: O, width: width) })
        case let .winograd(m, width):
            precondition(groups == 1 && KH == 3 && KW == 3, "Winograd layouts are for ungrouped 3×3 convolutions")
            let C = K / 9, O = O
            // plain row (kh·3 + kw)·C + i, column o.
            return .winograd(WinogradWeights(m: m, C: C, O: O, width: width, threads: threads) { o, i, kh, kw in
                Double(plain[((kh * 3 + kw) * C + i) * O + o])
            })
        }
    }
}
