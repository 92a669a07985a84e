// Comparing a model output with a reference output (a framework golden, another engine, a read-back).
//
// The pass/fail rule is relative to the output's scale so that logits in the hundreds and
// probabilities below one are judged alike: max|err| <= tolerance * max(1, max|ref|). The floor
// of 1 keeps tiny outputs from demanding sub-ulp agreement. 1e-4 is the project's float32 budget:
// different summation orders over thousands of terms per conv, through ~50 layers, stay well inside it.

import Foundation

/// The result of comparing an output tensor with a reference of the same shape.
public struct ParityReport: Codable, Sendable, Equatable {
    /// The project's float32 tolerance, relative to `max(1, max|reference|)`.
    public static let defaultTolerance = 1e-4

    /// Shape of both tensors.
    public var shape: [Int]
    /// Largest |output - reference| over finite pairs.
    public var maxAbsError: Double
    /// `max(1, max|reference|)`: the scale errors are judged against.
    public var referenceScale: Double
    /// `maxAbsError / referenceScale`; passes when it is at most `tolerance`.
    public var maxRelativeError: Double
    /// Mean |output - reference| over finite pairs.
    public var meanAbsError: Double
    /// Cosine similarity of the two tensors as flat vectors (1 when both are all zero).
    public var cosine: Double
    /// Per batch row (first axis): whether the arg-max of output and reference agree.
    public var top1Agreement: [Bool]
    /// Per batch row: whether both sides rank the same five classes highest (as sets); empty when
    /// rows have fewer than five values.
    public var top5Agreement: [Bool] = []
    /// Index (one entry per axis) of the largest absolute error; empty when there is none.
    public var worstIndex: [Int]
    /// Output value at `worstIndex`.
    public var worstOutput: Double
    /// Reference value at `worstIndex`.
    public var worstReference: Double
    /// Relative tolerance used.
    public var tolerance: Double
    /// Why this tolerance was chosen.
    public var toleranceNote: String
    /// Set when either side holds NaN or infinity; always a failure.
    public var nonFinite: String?
    /// Whether every value is finite and `maxRelativeError <= tolerance`.
    public var passed: Bool

    /// Compares `output` with `reference`.
    /// - Throws: `ResNetError.parityFailed` when the shapes differ (nothing can be compared).
    /// - Parameters:
    ///   - output: what the model produced.
    ///   - reference: what it should have produced, of the same shape.
    ///   - tolerance: relative tolerance; the default is the project's float32 budget.
    ///   - toleranceNote: why this tolerance applies (e.g. "float16 weights"); a default note names the rule.
    public init(output: Tensor, reference: Tensor, tolerance: Double = ParityReport.defaultTolerance,
                toleranceNote: String? = nil) throws {
        guard output.shape == reference.shape, output.data.count == reference.data.count else {
            throw ResNetError.parityFailed(reason: "output shape \(output.shape) differs from reference shape \(reference.shape)")
        }
        let shape = output.shape
        let a = output.data, b = reference.data

        var maxAbs = 0.0, sumAbs = 0.0, finitePairs = 0, worst = -1
        var maxRef = 0.0, dot = 0.0, normA = 0.0, normB = 0.0
        var badOutput = 0, badReference = 0, firstBadOutput = -1, firstBadReference = -1
        for i in 0..<a.count {
            let x = Double(a[i]), y = Double(b[i])
            if !x.isFinite { badOutput += 1; if firstBadOutput < 0 { firstBadOutput = i } }
            if !y.isFinite { badReference += 1; if firstBadReference < 0 { firstBadReference = i } }
            guard x.isFinite, y.isFinite else { continue }
            let e = abs(x - y)
            if e > maxAbs || worst < 0 { maxAbs = e; worst = i }
            sumAbs += e
            finitePairs += 1
            maxRef = max(maxRef, abs(y))
            dot += x * y; normA += x * x; normB += y * y
        }

        self.shape = shape
        self.maxAbsError = maxAbs
        self.referenceScale = max(1, maxRef)
        self.maxRelativeError = maxAbs / max(1, maxRef)
        self.meanAbsError = finitePairs > 0 ? sumAbs / Double(finitePairs) : 0
        if normA == 0 && normB == 0 {
            self.cosine = 1
        } else if normA == 0 || normB == 0 {
            self.cosine = 0
        } else {
            self.cosine = dot / (normA.squareRoot() * normB.squareRoot())
        }
        self.worstIndex = worst >= 0 ? ParityReport.multiIndex(worst, shape: shape) : []
        self.worstOutput = worst >= 0 ? Double(a[worst]) : 0
        self.worstReference = worst >= 0 ? Double(b[worst]) : 0
        self.tolerance = tolerance
        self.toleranceNote = toleranceNote ?? (tolerance == ParityReport.defaultTolerance
            ? "float32 default: max|err| <= 1e-4 * max(1, max|ref|)"
            : "max|err| <= \(tolerance) * max(1, max|ref|)")

        // Top-1 per batch row: the first axis is the batch; a rank-1 tensor is one row.
        var agreement: [Bool] = []
        var agreement5: [Bool] = []
        if !shape.isEmpty, a.count > 0 {
            let rows = shape.count == 1 ? 1 : shape[0]
            let width = a.count / max(rows, 1)
            for r in 0..<rows where width > 0 {
                let ra = a[(r * width)..<((r + 1) * width)], rb = b[(r * width)..<((r + 1) * width)]
                agreement.append(ParityReport.argmax(ra) == ParityReport.argmax(rb))
                if width >= 5 { agreement5.append(ParityReport.topK(ra, 5) == ParityReport.topK(rb, 5)) }
            }
        }
        self.top1Agreement = agreement
        self.top5Agreement = agreement5

        var problems: [String] = []
        if badOutput > 0 {
            problems.append("output has \(badOutput) NaN/Inf value(s), first at \(ParityReport.multiIndex(firstBadOutput, shape: shape)): \(a[firstBadOutput])")
        }
        if badReference > 0 {
            problems.append("reference has \(badReference) NaN/Inf value(s), first at \(ParityReport.multiIndex(firstBadReference, shape: shape)): \(b[firstBadReference])")
        }
        self.nonFinite = problems.isEmpty ? nil : problems.joined(separator: "; ")
        self.passed = problems.isEmpty && self.maxRelativeError <= tolerance
    }

    /// A one-paragraph summary for people.
    public var text: String {
        func e(_ v: Double) -> String { String(format: "%.3e", v) }
        var lines: [String] = []
        lines.append("parity \(passed ? "PASSED" : "FAILED") (shape \(shape))")
        if let nonFinite { lines.append("  non-finite: \(nonFinite)") }
        // The tolerance bounds the relative error, so that is the number printed beside it.
        lines.append("  relative error \(e(maxRelativeError)) (tolerance \(e(tolerance)): \(toleranceNote))")
        lines.append("  max |err| \(e(maxAbsError)) at output scale \(String(format: "%.4g", referenceScale))")
        lines.append("  mean |err| \(e(meanAbsError)), cosine \(String(format: "%.8f", cosine))")
        if !top1Agreement.isEmpty {
            lines.append("  top-1 agrees on \(top1Agreement.filter { $0 }.count)/\(top1Agreement.count) rows"
                         + (top5Agreement.isEmpty ? "" : ", top-5 sets on \(top5Agreement.filter { $0 }.count)/\(top5Agreement.count)"))
        }
        if !worstIndex.isEmpty {
            lines.append("  worst at \(worstIndex): output \(String(format: "%.7g", worstOutput)), reference \(String(format: "%.7g", worstReference))")
        }
        return lines.joined(separator: "\n")
    }

    /// Row-major flat index → one index per axis.
    private static func multiIndex(_ flat: Int, shape: [Int]) -> [Int] {
        var rest = flat
        var index = [Int](repeating: 0, count: shape.count)
        for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] > 0 {
            index[d] = rest % shape[d]
            rest /= shape[d]
        }
        return index
    }

    /// Positions of the `k` largest finite values, as a set.
    private static func topK(_ row: ArraySlice<Float>, _ k: Int) -> Set<Int> {
        let finite = row.indices.filter { row[$0].isFinite }
        return Set(finite.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }.prefix(k).map { $0 - row.startIndex })
    }

    /// Position of the largest finite value (first one on ties), or nil if there is none.
    private static func argmax(_ row: ArraySlice<Float>) -> Int? {
        var best: Int? = nil
        for i in row.indices where row[i].isFinite {
            if best == nil || row[i] > row[best!] { best = i }
        }
        return best.map { $0 - row.startIndex }
    }
}
