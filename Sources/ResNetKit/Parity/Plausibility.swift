// The goldens-free plausibility check: does a structure make the model's BatchNorm layers see the
// activations their running statistics were trained on?
//
// A trained BatchNorm keeps the mean and variance of its input over the training data. Fed natural
// images, a correctly wired model produces BN inputs close to those statistics; a wrong wiring (a
// stride in the wrong place, a missing ReLU, a max pool too many, zero channels on the wrong side)
// changes the activations that reach every later BN, and their batch statistics drift by many running
// standard deviations. Synthetic images stand in for the training data: they share the low-order
// statistics of photographs (1/f spectrum, correlated colour channels, edges and blobs), which is all
// a BN's first two moments see.

import Foundation

/// The value range the model was trained on. The check does not know a model's preprocessing, so it
/// tries each and keeps the one whose statistics best fit the first BatchNorm.
public enum InputScale: String, Sendable, Codable, CaseIterable {
    /// `(x - mean) / std` per channel with the ImageNet constants (torchvision `Normalize`, Keras
    /// `torch` mode): roughly mean 0, std 1 per channel.
    case standardized
    /// `2x - 1`, values in [-1, 1] (Keras `tf` mode).
    case symmetric
    /// Values in [0, 1] (`ToTensor` alone, Keras `Rescaling(1/255)`).
    case unit
    /// Values in [0, 255] (raw pixels).
    case byte
    /// BGR order, [0, 255] minus the ImageNet mean per channel (Keras `caffe` mode); 3-channel models only.
    case caffe
}

/// How one BatchNorm's batch statistics compare with its running statistics.
public struct BatchNormFit: Sendable, Codable {
    /// Canonical module name (`bn1`, `layer2.0.bn1`, `layer2.0.downsample.1`, `post_bn`).
    public var name: String
    public var channels: Int
    /// Mean over channels of |batch mean − running mean| / sqrt(running var + eps).
    public var meanShift: Double
    /// Mean over channels of |ln(batch std / running std)| (variances with eps added).
    public var spreadRatio: Double
    /// The BN's score: mean over channels of the per-channel distance, each capped (see ``Plausibility``).
    /// 0 is a perfect fit.
    public var score: Double
    /// False when this BN's running statistics are those of an untrained layer (mean 0, variance 1);
    /// it then does not count towards the model score.
    public var evidence: Bool
}

/// The plausibility of one model: how well its BatchNorm running statistics fit synthetic natural images.
public struct PlausibilityResult: Sendable, Codable {
    /// False when the model carries no trained BatchNorm statistics (no BN at all, or every BN has
    /// mean 0 and variance 1): then nothing can be concluded and ``score`` is NaN.
    public var evidence: Bool
    /// Why there is no evidence, when there is none.
    public var reason: String?
    /// The input scale that best fitted the first BatchNorm; nil without evidence.
    public var inputScale: InputScale?
    /// First-BN score for each input scale tried, in ``InputScale`` order.
    public var scaleScores: [String: Double]
    /// Mean of the per-BN scores over the BNs with evidence; lower is more plausible.
    public var score: Double
    /// Every BN in execution order (stem, blocks with pre-activation and shortcut BNs, head).
    public var batchNorms: [BatchNormFit]
    /// The BN with the highest score.
    public var worst: BatchNormFit?
    /// The synthetic batch used, (N, C, H, W).
    public var imageShape: [Int]
}

/// Several candidate structures of one file, ranked by plausibility.
public struct PlausibilityRanking: Sendable, Codable {
    /// One result per candidate, in the order given.
    public var results: [PlausibilityResult]
    /// Candidate indices from most to least plausible (candidates without evidence last).
    public var order: [Int]
    /// The most plausible candidate; nil without evidence.
    public var winner: Int?
    /// Second-best score / best score (≥ 1); infinity for a single candidate, 1 when the two best
    /// have identical BatchNorm statistics (they differ only after the last BN, e.g. a softmax).
    public var margin: Double
    /// True when there is evidence and ``margin`` is at least ``Plausibility/decisiveMargin``.
    public var decisive: Bool
    /// False when no candidate carries trained BatchNorm statistics.
    public var evidence: Bool

    /// The verdict in words, one line per candidate.
    public var text: String {
        guard evidence else {
            return "plausibility: no evidence (\(results.first?.reason ?? "no trained BatchNorm statistics")); the candidates cannot be ranked without goldens"
        }
        var lines: [String] = []
        if let w = winner {
            let m = margin.isFinite ? String(format: "%.2fx", margin) : "only candidate"
            lines.append("plausibility: candidate \(w + 1) fits the BatchNorm statistics best (margin \(m), \(decisive ? "decisive" : "NOT decisive"))")
        }
        for i in order {
            let r = results[i]
            let worst = r.worst.map { ", worst \($0.name) \(String(format: "%.2f", $0.score))" } ?? ""
            lines.append("  candidate \(i + 1): score \(r.evidence ? String(format: "%.3f", r.score) : "-")"
                         + " (input \(r.inputScale?.rawValue ?? "-")\(worst))")
        }
        return lines.joined(separator: "\n")
    }
}

/// The goldens-free plausibility check (BatchNorm batch statistics on synthetic natural images
/// against the running statistics).
public enum Plausibility {
    /// A ranking is decisive when the second-best candidate scores at least this many times worse
    /// than the best (over the BNs where they differ). It lies between the ratios of wrong readings
    /// the statistics can tell apart and those they cannot, measured on real checkpoints
    /// (docs/plausibility-margins.md).
    public static let decisiveMargin = 1.12

    /// A per-channel distance above this counts as this much: a channel that is dead in training
    /// (running variance near 0) can give an arbitrarily large ratio, and one such channel must not
    /// outweigh all the others. A wrong wiring moves most channels, so capping loses no evidence.
    static let channelCap = 10.0

    /// Options of a check.
    public struct Options: Sendable {
        /// Images in the synthetic batch.
        public var images: Int = 8
        /// Image size; nil tries each of ``Plausibility/imageSizes(for:)`` and keeps the best fit.
        public var size: [Int]? = nil
        /// Input scales to try; the one fitting the first BatchNorm best is used.
        public var scales: [InputScale] = InputScale.allCases
        /// Seed of the synthetic images.
        public var seed: UInt64 = 20240601
        /// Engine for the forward pass; both run unfused ops here.
        public var engine: ForwardEngine = .fast

        public init(images: Int = 8, size: [Int]? = nil, scales: [InputScale] = InputScale.allCases,
                    seed: UInt64 = 20240601, engine: ForwardEngine = .fast) {
            self.images = images; self.size = size; self.scales = scales; self.seed = seed; self.engine = engine
        }
    }

    /// The image sizes the check tries for `spec`: the declared input size when known (scaled down
    /// to at most 128 per side, keeping the aspect: BN statistics of natural images barely depend on
    /// the resolution, while the forward cost grows with its square); otherwise 32, 64 and 128 square.
    /// A state dict does not say the resolution a model was trained at, and a stem's stride trades
    /// off against it (a stride-1 stem on 32×32 images shows its later layers what a stride-2 stem
    /// shows them on 64×64), so each reading is judged at the resolution that fits it best.
    public static func imageSizes(for spec: ResNetSpec) -> [[Int]] {
        if let s = spec.inputSize, s.count == 2, s[0] > 0, s[1] > 0 {
            let side = max(s[0], s[1])
            if side <= 128 { return [s] }
            return [[max(s[0] * 128 / side, 8), max(s[1] * 128 / side, 8)]]
        }
        return [[32, 32], [64, 64], [128, 128]]
    }

    // MARK: synthetic images

    /// Deterministic synthetic natural-looking images in [0, 1], (count, channels, height, width).
    ///
    /// Each image is a luminance field plus two weaker chroma fields, each a sum of sinusoids with
    /// a natural-image spectrum (random orientation and phase), with a few soft-edged blobs and
    /// straight edges, a random brightness and contrast, and a little pixel noise; values are
    /// clipped to [0, 1] as a camera saturates. Over many images the channel means and deviations
    /// are close to ImageNet's (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225). One-channel images
    /// are the luminance alone; extra channels repeat the chroma pattern.
    public static func syntheticImages(count: Int, channels: Int, height: Int, width: Int, seed: UInt64) -> Tensor {
        var rng = SplitMix(seed: seed)
        let H = height, W = width, HW = H * W
        var data = [Float](repeating: 0, count: count * channels * HW)
        let channelMean: [Double] = [0.485, 0.456, 0.406]
        for n in 0..<count {
            let lum = field(&rng, H: H, W: W, components: 48, shapes: true)
            let chromaA = field(&rng, H: H, W: W, components: 12, shapes: false)
            let chromaB = field(&rng, H: H, W: W, components: 12, shapes: false)
            let brightness = rng.uniform(-0.12, 0.12)
            let contrast = rng.uniform(0.14, 0.30)
            let cast = (0..<3).map { _ in rng.uniform(-0.05, 0.05) }
            // Opponent colour axes: red–green and blue–yellow, weaker than luminance as in photographs.
            let weightA = [0.30, -0.30, 0.0], weightB = [-0.15, -0.15, 0.30]
            for c in 0..<channels {
                let k = c % 3
                let base = (n * channels + c) * HW
                for p in 0..<HW {
                    let noise = rng.normal() * 0.01
                    var v = channelMean[channels == 1 ? 0 : k] + brightness + cast[k]
                    v += contrast * (lum[p] + (channels == 1 ? 0 : weightA[k] * chromaA[p] + weightB[k] * chromaB[p])) + noise
                    data[base + p] = Float(min(max(v, 0), 1))
                }
            }
        }
        return Tensor(shape: [count, channels, H, W], data: data)
    }

    /// Images in [0, 1] brought to `scale`.
    public static func scaled(_ images: Tensor, to scale: InputScale) -> Tensor {
        let C = images.shape[1], HW = images.shape[2] * images.shape[3], N = images.shape[0]
        let mean: [Float] = [0.485, 0.456, 0.406], std: [Float] = [0.229, 0.224, 0.225]
        var out = images.data
        for n in 0..<N {
            for c in 0..<C {
                let base = (n * C + c) * HW
                switch scale {
                case .standardized:
                    let m = mean[C == 1 ? 0 : c % 3], s = std[C == 1 ? 0 : c % 3]
                    for p in 0..<HW { out[base + p] = (images.data[base + p] - m) / s }
                case .symmetric:
                    for p in 0..<HW { out[base + p] = images.data[base + p] * 2 - 1 }
                case .unit:
                    break
                case .byte:
                    for p in 0..<HW { out[base + p] = images.data[base + p] * 255 }
                case .caffe:
                    // Channel c of the output is BGR channel c: it takes RGB channel 2 - c.
                    let bgrMean: [Float] = [103.939, 116.779, 123.68]
                    let src = (n * C + (C == 3 ? 2 - c : c)) * HW
                    for p in 0..<HW { out[base + p] = images.data[src + p] * 255 - bgrMean[c % 3] }
                }
            }
        }
        return Tensor(shape: images.shape, data: out)
    }

    /// One zero-mean, unit-variance random field: sinusoids with amplitude ∝ 1/f plus, when `shapes`,
    /// blobs and edges. Sinusoids are evaluated separably (sin(a+b) expanded), one row and one column
    /// table per component, so the cost is two multiply-adds per pixel and component.
    static func field(_ rng: inout SplitMix, H: Int, W: Int, components: Int, shapes: Bool) -> [Double] {
        var f = [Double](repeating: 0, count: H * W)
        let maxFrequency = max(Double(max(H, W)) / 2, 2)
        var rowSin = [Double](repeating: 0, count: H), rowCos = rowSin
        var colSin = [Double](repeating: 0, count: W), colCos = colSin
        for _ in 0..<components {
            let freq = exp(rng.uniform(log(0.5), log(maxFrequency)))   // cycles per image, log-uniform
            let angle = rng.uniform(0, .pi)
            let phase = rng.uniform(0, 2 * .pi)
            // Photographs have equal power per octave (amplitude ∝ 1/f per frequency bin); drawing
            // frequencies log-uniformly already puts equal numbers in each octave, so the amplitude
            // falls only gently, keeping the edge detail that small images such as CIFAR's have.
            let amplitude = pow(freq, -0.5)
            let fy = 2 * .pi * freq * sin(angle) / Double(H), fx = 2 * .pi * freq * cos(angle) / Double(W)
            for h in 0..<H { rowSin[h] = sin(fy * Double(h) + phase); rowCos[h] = cos(fy * Double(h) + phase) }
            for w in 0..<W { colSin[w] = sin(fx * Double(w)); colCos[w] = cos(fx * Double(w)) }
            for h in 0..<H {
                let rs = amplitude * rowSin[h], rc = amplitude * rowCos[h]
                for w in 0..<W { f[h * W + w] += rs * colCos[w] + rc * colSin[w] }
            }
        }
        normalise(&f)
        if shapes {
            // Objects: soft ellipses and straight edges at random places, as strong as the texture.
            for _ in 0..<Int(rng.uniform(2, 6)) {
                let cy = rng.uniform(0, Double(H)), cx = rng.uniform(0, Double(W))
                let ry = rng.uniform(0.08, 0.35) * Double(H), rx = rng.uniform(0.08, 0.35) * Double(W)
                let amp = rng.uniform(-1.5, 1.5)
                for h in 0..<H {
                    for w in 0..<W {
                        let d = ((Double(h) - cy) / ry) * ((Double(h) - cy) / ry) + ((Double(w) - cx) / rx) * ((Double(w) - cx) / rx)
                        f[h * W + w] += amp / (1 + exp(8 * (d - 1)))
                    }
                }
            }
            for _ in 0..<Int(rng.uniform(1, 4)) {
                let angle = rng.uniform(0, 2 * .pi)
                let offset = rng.uniform(-0.4, 0.4) * Double(min(H, W))
                let amp = rng.uniform(-1.2, 1.2)
                let (ny, nx) = (sin(angle), cos(angle))
                for h in 0..<H {
                    for w in 0..<W {
                        let t = (Double(h) - Double(H) / 2) * ny + (Double(w) - Double(W) / 2) * nx - offset
                        f[h * W + w] += amp * 0.5 * (1 + tanh(t))
                    }
                }
            }
            normalise(&f)
        }
        return f
    }

    static func normalise(_ f: inout [Double]) {
        let mean = f.reduce(0, +) / Double(f.count)
        var variance = 0.0
        for v in f { variance += (v - mean) * (v - mean) }
        let std = max((variance / Double(f.count)).squareRoot(), 1e-12)
        for i in f.indices { f[i] = (f[i] - mean) / std }
    }

    // MARK: the check

    /// Checks one model: feeds the synthetic images at each input scale to the first BatchNorm,
    /// keeps the best-fitting scale, then runs the whole model and scores every BatchNorm.
    ///
    /// Per channel c of a BN, with batch statistics (m, v) over N·H·W and running statistics (μ, σ²):
    /// `d_c = |m − μ| / sqrt(σ² + eps) + |ln((v + eps) / (σ² + eps))| / 2`, the mean shift in running
    /// standard deviations plus the log ratio of the standard deviations — both in the same unit, so
    /// neither dominates; capped at 10 (see `channelCap`). The BN score is the mean of `d_c`; the model
    /// score the mean over BNs, so a wiring error that only touches a few blocks still shows.
    ///
    /// - Throws: the forward pass's errors when the model cannot run at all.
    public static func check(_ model: ResNetModel, options: Options = Options()) throws -> PlausibilityResult {
        guard options.size == nil else { return try check(model, options: options, size: options.size!) }
        var best: PlausibilityResult?
        var failure: Error?
        for size in imageSizes(for: model.spec) {
            do {
                let r = try check(model, options: options, size: size)
                if best == nil || (r.evidence && (!best!.evidence || r.score < best!.score)) { best = r }
            } catch {
                failure = error   // a fixed pooling window that does not fit this size
            }
        }
        if let best { return best }
        throw failure!
    }

    static func check(_ model: ResNetModel, options: Options, size: [Int]) throws -> PlausibilityResult {
        let C = model.spec.inputChannels
        let shape = [max(options.images, 1), C, size[0], size[1]]
        let bns = model.spec.allOps.compactMap { op -> BatchNormOp? in if case let .batchNorm(b) = op { return b } else { return nil } }
        func noEvidence(_ reason: String) -> PlausibilityResult {
            PlausibilityResult(evidence: false, reason: reason, inputScale: nil, scaleScores: [:], score: .nan,
                               batchNorms: [], worst: nil, imageShape: shape)
        }
        guard !bns.isEmpty else { return noEvidence("the model has no BatchNorm") }
        let trained = bns.filter { hasTrainedStatistics($0, model.tensors) }
        guard !trained.isEmpty else {
            return noEvidence("every BatchNorm has running mean 0 and variance 1, the statistics of an untrained layer")
        }
        let images = syntheticImages(count: shape[0], channels: C, height: shape[2], width: shape[3], seed: options.seed)

        // The first BN decides the scale; stop the forward pass as soon as it is reached.
        struct Reached: Error { var fit: BatchNormFit }
        var scaleScores: [String: Double] = [:]
        var best: (InputScale, Double)?
        for scale in options.scales where scale != .caffe || C == 3 {
            var runner = ForwardRunner(tensors: model.tensors, engine: options.engine, capture: nil)
            runner.observeBatchNorm = { bn, x in throw Reached(fit: fit(bn, x, model.tensors)) }
            do {
                _ = try runner.run(model.spec, input: scaled(images, to: scale))
            } catch let r as Reached {
                scaleScores[scale.rawValue] = r.fit.score
                if best == nil || r.fit.score < best!.1 { best = (scale, r.fit.score) }
            }
        }
        guard let (scale, _) = best else { return noEvidence("no input scale reached a BatchNorm") }

        var fits: [BatchNormFit] = []
        var runner = ForwardRunner(tensors: model.tensors, engine: options.engine, capture: nil)
        runner.observeBatchNorm = { bn, x in fits.append(fit(bn, x, model.tensors)) }
        _ = try runner.run(model.spec, input: scaled(images, to: scale))
        let counted = fits.filter { $0.evidence && $0.score.isFinite }
        let score = counted.isEmpty ? Double.nan : counted.map(\.score).reduce(0, +) / Double(counted.count)
        return PlausibilityResult(evidence: !counted.isEmpty, reason: counted.isEmpty ? "no BatchNorm with trained statistics was reached" : nil,
                                  inputScale: scale, scaleScores: scaleScores, score: score, batchNorms: fits,
                                  worst: counted.max { $0.score < $1.score }, imageShape: shape)
    }

    /// Ranks candidate structures of one file by ``check(_:options:)``, on the same synthetic images.
    ///
    /// The winner has the lowest score. The margin compares the two best over the BatchNorms whose
    /// fit differs between them: BNs before the point where two readings part see identical inputs,
    /// carry no evidence either way, and would only dilute the ratio. A candidate whose structure
    /// cannot run on the image size (a fixed pooling window that no longer fits) is ranked last with
    /// no evidence.
    public static func rank(candidates: [ResNetModel], options: Options = Options()) -> PlausibilityRanking {
        let results = candidates.map { model -> PlausibilityResult in
            do { return try check(model, options: options) } catch {
                return PlausibilityResult(evidence: false, reason: "cannot run: \(error)", inputScale: nil, scaleScores: [:], score: .nan,
                                          batchNorms: [], worst: nil, imageShape: [])
            }
        }
        let withEvidence = results.indices.filter { results[$0].evidence }
        let order = withEvidence.sorted { results[$0].score < results[$1].score }
            + results.indices.filter { !results[$0].evidence }
        guard let first = withEvidence.isEmpty ? nil : order.first else {
            return PlausibilityRanking(results: results, order: order, winner: nil, margin: .nan, decisive: false, evidence: false)
        }
        var margin = Double.infinity
        if withEvidence.count > 1 { margin = pairedRatio(results[order[0]], results[order[1]]) }
        return PlausibilityRanking(results: results, order: order, winner: first, margin: margin,
                                   decisive: margin >= decisiveMargin, evidence: true)
    }

    /// Sum of `worse`'s BN scores over sum of `better`'s, over the BNs both have whose scores differ;
    /// 1 when none differ (the two readings part after the last BN), and the ratio of the model scores
    /// when they share no BN names.
    public static func pairedRatio(_ better: PlausibilityResult, _ worse: PlausibilityResult) -> Double {
        let theirs = Dictionary(worse.batchNorms.filter(\.evidence).map { ($0.name, $0.score) }, uniquingKeysWith: { a, _ in a })
        var a = 0.0, b = 0.0, shared = 0
        for fit in better.batchNorms where fit.evidence {
            guard let other = theirs[fit.name] else { continue }
            shared += 1
            if abs(other - fit.score) > 1e-9 * max(1, abs(fit.score)) { a += fit.score; b += other }
        }
        if shared == 0 { return better.score > 0 ? worse.score / better.score : .infinity }
        if a == 0 && b == 0 { return 1 }
        return a > 0 ? b / a : .infinity
    }

    /// False for statistics an untrained BN starts with (mean exactly 0, variance exactly 1).
    static func hasTrainedStatistics(_ bn: BatchNormOp, _ tensors: [String: Tensor]) -> Bool {
        guard let m = tensors["\(bn.name).running_mean"], let v = tensors["\(bn.name).running_var"] else { return false }
        return !(m.data.allSatisfy { $0 == 0 } && v.data.allSatisfy { $0 == 1 })
    }

    /// Batch statistics of `x`, (N, C, H, W) or (N, C), against the BN's running statistics.
    static func fit(_ bn: BatchNormOp, _ x: Tensor, _ tensors: [String: Tensor]) -> BatchNormFit {
        let N = x.shape[0], C = x.shape[1], HW = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
        let runMean = tensors["\(bn.name).running_mean"]?.data ?? [], runVar = tensors["\(bn.name).running_var"]?.data ?? []
        let evidence = hasTrainedStatistics(bn, tensors) && runMean.count == C && runVar.count == C
        guard evidence else {
            return BatchNormFit(name: bn.name, channels: C, meanShift: .nan, spreadRatio: .nan, score: .nan, evidence: false)
        }
        let eps = max(bn.epsilon, 1e-12)
        var shift = 0.0, spread = 0.0, score = 0.0
        for c in 0..<C {
            var sum = 0.0, sumSq = 0.0
            for n in 0..<N {
                let base = (n * C + c) * HW
                for p in 0..<HW { let v = Double(x.data[base + p]); sum += v; sumSq += v * v }
            }
            let count = Double(N * HW)
            let mean = sum / count
            let variance = max(sumSq / count - mean * mean, 0)
            let rv = max(Double(runVar[c]), 0) + eps
            let z = abs(mean - Double(runMean[c])) / rv.squareRoot()
            let r = abs(log((variance + eps) / rv)) / 2
            let zc = z.isFinite ? z : channelCap, rc = r.isFinite ? r : channelCap
            shift += zc; spread += rc
            score += min(zc + rc, channelCap)
        }
        return BatchNormFit(name: bn.name, channels: C, meanShift: shift / Double(C), spreadRatio: spread / Double(C),
                            score: score / Double(C), evidence: true)
    }
}

/// SplitMix64: a small, fast, reproducible generator (the same numbers on every machine).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [a, b).
    mutating func uniform(_ a: Double, _ b: Double) -> Double { a + (b - a) * Double(next() >> 11) / Double(1 << 53) }
    /// Standard normal (Box–Muller).
    mutating func normal() -> Double {
        let u = max(uniform(0, 1), 1e-300), v = uniform(0, 1)
        return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
    }
}
