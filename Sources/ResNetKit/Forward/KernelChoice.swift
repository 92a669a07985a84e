// Per-layer choice of convolution algorithm and kernel build, by measurement on the CPU at hand.
//
// Which way of computing a layer is fastest depends on the CPU (vector width, how many FMA units,
// caches), on the layer's shape and on the batch: the same AVX-512 tiles that win on one machine lose
// on another, and Winograd pays at 56×56 but not at 7×7. A constant tuned on one machine is wrong on the
// next, so the first time a plan runs at an input shape it times every candidate this CPU can run on
// each distinct layer shape, on the layer's real input, and keeps the fastest. The choice is recorded in
// a small cache file keyed by CPU and build (KernelCache), so later processes skip the measurement.
// `RESNET_PLAN_TUNING` still pins any dimension (tests and debugging); pinned plans neither read nor
// write the cache.

import Foundation

/// The parts of a layer's algorithm a plan may choose by measurement.
enum TunedDimension: Hashable, Sendable, CaseIterable {
    /// Which matrix kernel (OpenBLAS, each C build) multiplies ungrouped layers and Winograd points.
    case gemm
    /// Winograd F(2×2) or F(4×4), or none, for 3×3 stride-1 layers.
    case winograd
    /// Which build runs Winograd's tile transforms.
    case transform
    /// Direct grouped kernel (each build) or im2col with OpenBLAS per group.
    case grouped
    /// For a batch, whether the early blocks run a few images at a time.
    case split
}

extension PlanTuning {
    /// What the fixed rules pick for a layer, without measuring: the choice tests pin and the tie-break
    /// reference of a measurement.
    func fixedAlgorithm(_ g: WindowGeometry) -> ConvAlgorithm {
        if g.G > 1 {
            let kernel = GroupedConv.kernel(groupedKernel, for: g)
            let limit = kernel != .swift ? groupedDirectMaxWidthVector : groupedDirectMaxWidth
            return groupedDirect && (g.C / g.G) * (g.O / g.G) <= limit ? .direct(kernel) : .gemm(.blas)
        }
        let gemm = gemmKernel.resolved
        guard winogradTile != 0, winogradEligible(g), g.C * g.O <= winogradMaxWeights else { return .gemm(gemm) }
        let m = g.C * g.O >= winogradWideLayer ? min(winogradTile, 2) : winogradTile
        let tiles = g.N * ((g.OH + m - 1) / m) * ((g.OW + m - 1) / m)
        return tiles >= winogradMinTiles ? .winograd(m: m, product: gemm, transform: winogradKernel.resolved) : .gemm(gemm)
    }

    /// Whether Winograd F(m×m, 3×3) computes this layer: 3×3, stride 1, undilated, ungrouped.
    func winogradEligible(_ g: WindowGeometry) -> Bool {
        g.G == 1 && g.KH == 3 && g.KW == 3 && g.SH == 1 && g.SW == 1 && g.DH == 1 && g.DW == 1
    }

    /// Every algorithm worth timing for this layer: the fixed choice first, then each combination of
    /// the measured dimensions this CPU runs. Winograd stays bounded by `winogradMaxWeights` (its
    /// transformed weights are (m+2)²/9 times larger).
    func candidates(_ g: WindowGeometry) -> [ConvAlgorithm] {
        let fixed = fixedAlgorithm(g)
        guard !measured.isEmpty else { return [fixed] }
        var list = [fixed]
        func add(_ a: ConvAlgorithm) { if !list.contains(a) { list.append(a) } }
        if g.G > 1 {
            if measured.contains(.grouped) {
                add(.gemm(.blas))
                if groupedDirect { for k in GroupedKernel.allCases where k.available { add(.direct(GroupedConv.kernel(k, for: g))) } }
            }
            return list
        }
        let gemms = measured.contains(.gemm) ? GemmKernel.allCases.filter(\.available) : [gemmKernel.resolved]
        let transforms = measured.contains(.transform) ? WinogradKernel.allCases.filter(\.available) : [winogradKernel.resolved]
        var tiles: [Int]
        if measured.contains(.winograd) {
            tiles = winogradEligible(g) && g.C * g.O <= winogradMaxWeights ? [0, 2, 4] : [0]
        } else if case let .winograd(m, _, _) = fixed {
            tiles = [m]
        } else {
            tiles = [0]
        }
        for m in tiles {
            if m == 0 { for k in gemms { add(.gemm(k)) } } else {
                for k in gemms { for t in transforms { add(.winograd(m: m, product: k, transform: t)) } }
            }
        }
        return list
    }

    /// Whether choices may come from and go to the cache file: only when nothing is pinned.
    var usesCache: Bool { measured == Set(TunedDimension.allCases) }
}

/// How a layer's algorithm was settled.
enum ChoiceSource: String, Sendable {
    /// Only one candidate (pinned, or nothing else runs here).
    case fixed
    /// Timed in this process.
    case measured
    /// Read from the cache file.
    case cached
}

/// The settled algorithm for one layer shape, with what was timed.
struct LayerDecision: Sendable {
    let algorithm: ConvAlgorithm
    /// Each candidate's best time in milliseconds, in the order timed (empty when fixed).
    let times: [(ConvAlgorithm, Double)]
    let source: ChoiceSource
}

/// What a plan chose for one convolution at one input shape (`ForwardPlan.explain`).
public struct LayerChoice: Sendable, Codable {
    /// One candidate timed.
    public struct Candidate: Sendable, Codable {
        public let name: String
        /// Its fastest run, in milliseconds.
        public let milliseconds: Double
    }
    /// The convolution's place in the model (as error messages name it).
    public let place: String
    /// Input channels → output channels, kernel, stride and output size, e.g. "64->256 1x1/1 56x56".
    public let shape: String
    /// The algorithm chosen, e.g. "gemm avx512" or "winograd4 avx2/avx2".
    public let choice: String
    /// Each candidate timed and its best time (empty when only one could run).
    public let candidates: [Candidate]
    /// "measured", "cached" or "fixed".
    public let source: String
}

/// Times candidates for the layers of one input shape, reusing one decision for every layer of the
/// same shape and threads.
final class KernelTuner {
    let tuning: PlanTuning
    let threads: Int
    let cache: KernelCache?
    private(set) var decided: [String: LayerDecision] = [:]
    /// Per convolution, in the order the executor meets them.
    private(set) var sequence: [(key: String, decision: LayerDecision)] = []
    /// Wall time spent timing candidates, in seconds.
    private(set) var measuringSeconds = 0.0
    /// Per convolution, the layouts other schedules of the plan read: a layer's candidates' layouts are
    /// dropped as soon as it is settled, except these and the chosen one, so the peak stays near one
    /// extra layer's worth.
    var otherLayouts: [Set<WeightLayout>] = []

    /// Tests: picks the candidate instead of timing (each candidate then runs once).
    let forced: (([ConvAlgorithm]) -> ConvAlgorithm)?

    init(tuning: PlanTuning, threads: Int, cache: KernelCache?, forced: (([ConvAlgorithm]) -> ConvAlgorithm)? = nil) {
        (self.tuning, self.threads, self.cache, self.forced) = (tuning, threads, cache, forced)
    }

    /// The cache key of a layer shape: everything the kernels' speed depends on.
    static func key(_ g: WindowGeometry, threads: Int, shortcut: Bool, relu: Bool) -> String {
        "n\(g.N) c\(g.C) h\(g.H) w\(g.W) o\(g.O) g\(g.G) k\(g.KH)x\(g.KW) s\(g.SH)x\(g.SW) d\(g.DH)x\(g.DW) "
            + "p\(g.PT),\(g.PB),\(g.PL),\(g.PR) t\(threads)\(shortcut ? " add" : "")\(relu ? " relu" : "")"
    }

    /// The decision for a layer that needs no timing: its only candidate, or the cache file's choice
    /// when that is one of its candidates; nil when it must be measured.
    func settledWithoutTiming(_ g: WindowGeometry, shortcut: Bool, relu: Bool) -> LayerDecision? {
        let candidates = tuning.candidates(g)
        if candidates.count == 1 { return LayerDecision(algorithm: candidates[0], times: [], source: .fixed) }
        if forced == nil, let c = cache?.lookup(Self.key(g, threads: threads, shortcut: shortcut, relu: relu)),
           candidates.contains(c.algorithm) {
            return LayerDecision(algorithm: c.algorithm, times: c.times, source: .cached)
        }
        return nil
    }

    /// Settles one convolution. `run` computes the layer once with an algorithm and returns its wall
    /// time in seconds; the layer's input stays as it was, so each candidate sees the same data.
    func decide(_ g: WindowGeometry, shortcut: Bool, relu: Bool, run: (ConvAlgorithm) -> Double) -> LayerDecision {
        let key = Self.key(g, threads: threads, shortcut: shortcut, relu: relu)
        if let d = decided[key] { sequence.append((key, d)); return d }
        let decision: LayerDecision
        if let settled = settledWithoutTiming(g, shortcut: shortcut, relu: relu) {
            decision = settled
        } else if let forced {
            let a = forced(tuning.candidates(g))
            _ = run(a)
            decision = LayerDecision(algorithm: a, times: [(a, 0)], source: .measured)
        } else {
            let started = ContinuousClock.now
            decision = measure(tuning.candidates(g), run: run)
            measuringSeconds += seconds(ContinuousClock.now - started)
            cache?.record(key, decision)
        }
        decided[key] = decision
        sequence.append((key, decision))
        return decision
    }

    /// Times the candidates worth timing and returns the fastest. A Winograd layer has up to
    /// 2 tiles × kernels × transforms candidates, so they are searched one dimension at a time: every
    /// plain product first; then each tile with the fastest product kernel so far; then, for the best
    /// tile (when it is within 30% of the best so far), every product kernel and every transform.
    private func measure(_ candidates: [ConvAlgorithm], run: (ConvAlgorithm) -> Double) -> LayerDecision {
        var times: [(ConvAlgorithm, Double)] = []
        var best = Double.infinity
        func time(_ c: ConvAlgorithm) {
            guard candidates.contains(c), !times.contains(where: { $0.0 == c }) else { return }
            let t = fastestRun(best: best) { run(c) }
            times.append((c, t * 1000))
            best = min(best, t)
        }
        func fastest(_ keep: (ConvAlgorithm) -> Bool) -> (ConvAlgorithm, Double)? {
            times.filter { keep($0.0) }.min { $0.1 < $1.1 }
        }
        time(candidates[0])
        for c in candidates { if case .winograd = c { continue }; time(c) }
        let winograd = candidates.compactMap { c -> (m: Int, product: GemmKernel, transform: WinogradKernel)? in
            if case let .winograd(m, p, t) = c { return (m, p, t) }
            return nil
        }
        if !winograd.isEmpty {
            var product = tuning.gemmKernel.resolved
            if let (a, _) = fastest({ if case .gemm = $0 { return true }; return false }), case let .gemm(k) = a { product = k }
            let transform = tuning.winogradKernel.resolved
            for m in Set(winograd.map(\.m)).sorted() {
                let first = winograd.first { $0.m == m && $0.product == product && $0.transform == transform }
                    ?? winograd.first { $0.m == m }!
                time(.winograd(m: first.m, product: first.product, transform: first.transform))
            }
            let bestWinograd = fastest { if case .winograd = $0 { return true }; return false }
            if let (a, ms) = bestWinograd, ms < 1.3 * best * 1000, case let .winograd(m, _, t) = a {
                for w in winograd where w.m == m && w.transform == t { time(.winograd(m: m, product: w.product, transform: t)) }
                if let (b, _) = fastest({ if case .winograd(m, _, _) = $0 { return true }; return false }), case let .winograd(_, p, _) = b {
                    for w in winograd where w.m == m && w.product == p { time(.winograd(m: m, product: p, transform: w.transform)) }
                }
            }
        }
        return LayerDecision(algorithm: pickFastest(times), times: times, source: .measured)
    }
}

/// The candidate to keep from timed ones (milliseconds, the reference choice first): the first unless
/// another is at least 2% faster, so that noise does not flip choices between runs.
func pickFastest<C>(_ times: [(C, Double)]) -> C {
    let top = times.min { $0.1 < $1.1 }!
    return times[0].1 <= top.1 * 1.02 ? times[0].0 : top.0
}

/// One candidate's time in seconds: one untimed run (it pages in the candidate's weights and scratch
/// and warms the caches), then one timed run; a candidate within 25% of `best` gets one more, four for
/// runs under 0.3 ms, whose single times are noisier. Counts the fastest run. Few repeats keep a cold
/// plan build short; the early cut keeps clear losers from costing more.
func fastestRun(best: Double, _ run: () throws -> Double) rethrows -> Double {
    _ = try run()
    var t = try run()
    if t < 1.25 * best {
        for _ in 0..<(t < 3e-4 ? 4 : 1) { t = min(t, try run()) }
    }
    return t
}

/// A short hex digest of `text` (the project's xxHash64), for cache keys.
func hashText(_ text: String) -> String {
    let bytes = Array(text.utf8)
    return String(bytes.withUnsafeBytes { xxHash64($0) }, radix: 16)
}

/// A duration in seconds.
func seconds(_ d: Duration) -> Double {
    let c = d.components
    return Double(c.seconds) + Double(c.attoseconds) / 1e18
}

/// A deterministic input of `count` floats: a smooth pattern in [-1, 1], not all zeros (which could hide
/// work), shared by benchmarks and kernel measurement.
func syntheticInput(count: Int) -> [Float] {
    (0..<count).map { Float(sin(Double($0) * 0.001)) }
}

/// Choices measured earlier, in a small JSON file in the user's cache directory, keyed by CPU model and
/// build: a different CPU or a rebuilt binary starts a fresh file. Deleting it only costs one measurement.
/// `RESNET_KERNEL_CACHE` names another file, or `off`. The file is read with a size bound, and an entry
/// is used only when it names a candidate this CPU runs for that very layer; anything unreadable is ignored.
final class KernelCache: @unchecked Sendable {
    static let format = "resnet-convert kernel choices 1"
    /// The file is ours, but anyone may write there: it is never trusted beyond this size or entry count.
    static let maxBytes = 1 << 20
    static let maxEntries = 4096

    let path: String
    let machine: String
    private let lock = NSLock()
    private var entries: [String: (algorithm: ConvAlgorithm, times: [(ConvAlgorithm, Double)])] = [:]
    private var splits: [String: (choice: String, times: [(String, Double)])] = [:]
    private var dirty = false

    /// The process's cache, or nil when turned off or no directory is known.
    static let shared: KernelCache? = {
        let env = ProcessInfo.processInfo.environment
        let path: String
        if let p = env["RESNET_KERNEL_CACHE"] {
            if p == "off" || p.isEmpty { return nil }
            path = p
        } else if let x = env["XDG_CACHE_HOME"], x.hasPrefix("/") {
            path = x + "/resnet-convert/kernel-choices.json"
        } else if let h = env["HOME"], h.hasPrefix("/") {
            path = h + "/.cache/resnet-convert/kernel-choices.json"
        } else {
            return nil
        }
        return KernelCache(path: path, machine: machineIdentity())
    }()

    init(path: String, machine: String) {
        (self.path, self.machine) = (path, machine)
        load()
    }

    /// The CPU (model name and feature flags, as the kernel reports them) and this build (the running
    /// executable's size and modification time): choices are only valid for both.
    static func machineIdentity() -> String {
        var cpu = "unknown cpu"
        if let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) {
            let first = text.components(separatedBy: "\n\n").first ?? ""
            let fields = first.split(separator: "\n").filter { $0.hasPrefix("model name") || $0.hasPrefix("flags") }
            cpu = fields.map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "" }
                .joined(separator: " | ")
        }
        var build = "unknown build"
        if let a = try? FileManager.default.attributesOfItem(atPath: "/proc/self/exe"),
           let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"),
           let b = try? FileManager.default.attributesOfItem(atPath: target) {
            _ = a
            build = "\(b[.size] as? Int ?? 0) \((b[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"
        }
        return hashText(cpu + " / " + build)
    }

    func lookup(_ key: String) -> (algorithm: ConvAlgorithm, times: [(ConvAlgorithm, Double)])? {
        lock.withLock { entries[key] }
    }

    func lookupSplit(_ key: String) -> (choice: String, times: [(String, Double)])? {
        lock.withLock { splits[key] }
    }

    func recordSplit(_ key: String, choice: String, times: [(String, Double)]) {
        lock.withLock {
            if splits.count >= Self.maxEntries { splits.removeAll() }
            splits[key] = (choice, times)
            dirty = true
        }
    }

    func record(_ key: String, _ d: LayerDecision) {
        lock.withLock {
            if entries.count >= Self.maxEntries { entries.removeAll() }
            entries[key] = (d.algorithm, d.times)
            dirty = true
        }
    }

    private func load() {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: Self.maxBytes + 1), data.count <= Self.maxBytes,
              case let .object(root)? = try? parseJSON(data, file: path, place: "kernel cache", allowsNonFinite: false),
              case .string(Self.format)? = root["format"], case .string(machine)? = root["machine"],
              case let .object(list)? = root["entries"] else { return }
        for (key, value) in list.prefix(Self.maxEntries) {
            guard case let .object(e) = value, case let .string(name)? = e["choice"], let algorithm = ConvAlgorithm(name),
                  algorithm.runsHere else { continue }
            var times: [(ConvAlgorithm, Double)] = []
            if case let .array(ts)? = e["times"] {
                for t in ts.prefix(64) {
                    if case let .array(pair) = t, pair.count == 2, case let .string(n) = pair[0], let a = ConvAlgorithm(n),
                       case let .number(ms) = pair[1], ms.isFinite { times.append((a, ms)) }
                }
            }
            entries[key] = (algorithm, times)
        }
        if case let .object(list)? = root["splits"] {
            for (key, value) in list.prefix(Self.maxEntries) {
                guard case let .object(e) = value, case let .string(choice)? = e["choice"], choice.utf8.count <= 64 else { continue }
                var times: [(String, Double)] = []
                if case let .array(ts)? = e["times"] {
                    for t in ts.prefix(16) {
                        if case let .array(pair) = t, pair.count == 2, case let .string(n) = pair[0], n.utf8.count <= 64,
                           case let .number(ms) = pair[1], ms.isFinite { times.append((n, ms)) }
                    }
                }
                splits[key] = (choice, times)
            }
        }
    }

    /// Writes the file when something new was measured (atomically; failures are ignored: it is a cache).
    func save() {
        let text: String? = lock.withLock {
            guard dirty else { return nil }
            dirty = false
            var out = "{\"format\": \(jsonString(Self.format)), \"machine\": \(jsonString(machine)), \"entries\": {"
            out += entries.sorted { $0.key < $1.key }.map { key, e in
                let times = e.times.map { "[\(jsonString($0.0.description)), \(String(format: "%.4f", $0.1))]" }.joined(separator: ", ")
                return "\n  \(jsonString(key)): {\"choice\": \(jsonString(e.algorithm.description)), \"times\": [\(times)]}"
            }.joined(separator: ",")
            out += "\n}, \"splits\": {"
            out += splits.sorted { $0.key < $1.key }.map { key, e in
                let times = e.times.map { "[\(jsonString($0.0)), \(String(format: "%.4f", $0.1))]" }.joined(separator: ", ")
                return "\n  \(jsonString(key)): {\"choice\": \(jsonString(e.choice)), \"times\": [\(times)]}"
            }.joined(separator: ",")
            return out + "\n}}\n"
        }
        guard let text else { return }
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? AtomicOutput.write(Data(text.utf8), to: path)
    }

    private func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
