// How close a model stored at a given dtype must stay to its reference. The values and the
// reasoning behind them are in the DocC article ParityTolerance.md; keep the two in step.

import Foundation

/// The pass rule for a parity check of a model whose weights are stored at one dtype.
public struct TolerancePolicy: Sendable, Codable, Equatable {
    /// Storage dtype of the conv and dense weights the rule is for.
    public var dtype: DType
    /// Bound on ``ParityReport/maxRelativeError`` (max |err| / max(1, max |ref|)).
    public var maxRelativeError: Double
    /// Smallest accepted cosine between output and reference (0 when not used).
    public var minCosine: Double
    /// Smallest accepted fraction of batch rows whose top-1 class agrees (0 when not used).
    public var minTop1Agreement: Double
    /// The rule and its reason in one line, stored in the parity record.
    public var note: String

    /// float32 weights against float32 goldens: only summation order differs.
    public static let float32 = TolerancePolicy(
        dtype: .float32, maxRelativeError: ParityReport.defaultTolerance, minCosine: 0, minTop1Agreement: 0,
        note: "float32: max|err| <= 1e-4 * max(1, max|ref|) (summation order only)")

    /// Unit roundoff of the narrow float types: half an ulp at 1, relative.
    static func unitRoundoff(_ dtype: DType) -> Double? {
        switch dtype {
        case .float16: return 0x1p-11   // 10 stored mantissa bits
        case .bfloat16: return 0x1p-8   // 7 stored mantissa bits
        default: return nil
        }
    }

    /// The rule for a model stored at `dtype`, sized by the depth of `spec`.
    ///
    /// float16 / bfloat16: `max(1e-4, sqrt(D) · u)` relative, where `u` is the type's unit
    /// roundoff and `D` the number of weight layers on the deepest path. int8: top-1 agreement on
    /// at least 99% of rows, cosine at least 0.99, and max relative error at most 0.1.
    public static func forStorage(_ dtype: DType, spec: ResNetSpec) -> TolerancePolicy {
        let depth = weightDepth(spec)
        if let u = unitRoundoff(dtype) {
            let bound = max(ParityReport.defaultTolerance, Double(depth).squareRoot() * u)
            return TolerancePolicy(
                dtype: dtype, maxRelativeError: bound, minCosine: 0, minTop1Agreement: 0,
                note: "\(dtype.rawValue) weights: max|err| <= sqrt(D)*u * max(1, max|ref|) with D=\(depth) weight layers deep, u=2^\(dtype == .float16 ? -11 : -8)")
        }
        if dtype == .int8 {
            return TolerancePolicy(
                dtype: dtype, maxRelativeError: 0.1, minCosine: 0.99, minTop1Agreement: 0.99,
                note: "int8 weights (per-channel symmetric): top-1 agreement >= 99% of rows, cosine >= 0.99, max|err| <= 0.1 * max(1, max|ref|)")
        }
        return .float32
    }

    /// Conv and dense layers on the longest path from input to output (a block counts its longer
    /// branch).
    static func weightDepth(_ spec: ResNetSpec) -> Int {
        func count(_ ops: [Op]) -> Int {
            ops.reduce(0) { n, op in
                switch op { case .conv, .dense: return n + 1; default: return n }
            }
        }
        var depth = count(spec.stem) + count(spec.head)
        for s in spec.stages {
            for b in s.blocks {
                depth += count(b.pre) + max(count(b.residual), count(b.shortcut)) + count(b.post)
            }
        }
        return max(depth, 1)
    }

    /// Whether `report` meets this rule (finite values always required).
    public func accepts(_ report: ParityReport) -> Bool {
        guard report.nonFinite == nil, report.maxRelativeError <= maxRelativeError else { return false }
        if minCosine > 0 && !(report.cosine >= minCosine) { return false }
        if minTop1Agreement > 0 {
            let rows = report.top1Agreement.count
            let agreed = report.top1Agreement.filter { $0 }.count
            guard rows > 0, Double(agreed) / Double(rows) >= minTop1Agreement else { return false }
        }
        return true
    }

    /// Compares `output` with `reference` under this rule.
    public func compare(output: Tensor, reference: Tensor) throws -> ParityReport {
        var report = try ParityReport(output: output, reference: reference, tolerance: maxRelativeError, toleranceNote: note)
        report.passed = accepts(report)
        return report
    }
}
