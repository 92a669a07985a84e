import Foundation

/// The machine-readable result of `verify`: the verdict and the numbers behind it, flat.
public struct VerificationSummary: Sendable, Encodable {
    public var model: String
    public var reference: String
    public var passed: Bool
    public var maxAbsError: Double?
    public var maxRelError: Double?
    public var meanAbsError: Double?
    public var cosine: Double?
    /// Fraction of batch rows whose top-1 class agrees.
    public var top1Agreement: Double?
    public var top5Agreement: Double?
    public var top1PerItem: [Bool]
    public var worstIndex: [Int]
    public var nonFinite: String?
    public var firstDivergentLayer: String?
    public var tolerance: Double?
    public var toleranceNote: String?
    public var layers: [LayerComparison]
    /// Per-layer golden names with no equivalent point in the model.
    public var notCompared: [String]

    public init(model: String, check: ParityCheck) {
        let r = check.report
        self.model = model
        reference = check.reference
        passed = check.passed
        maxAbsError = r?.maxAbsError
        maxRelError = r?.maxRelativeError
        meanAbsError = r?.meanAbsError
        cosine = r?.cosine
        func fraction(_ v: [Bool]?) -> Double? {
            guard let v, !v.isEmpty else { return nil }
            return Double(v.filter { $0 }.count) / Double(v.count)
        }
        top1Agreement = fraction(r?.top1Agreement)
        top5Agreement = fraction(r?.top5Agreement)
        top1PerItem = r?.top1Agreement ?? []
        worstIndex = r?.worstIndex ?? []
        nonFinite = r?.nonFinite
        firstDivergentLayer = check.firstDivergentLayer
        tolerance = r?.tolerance
        toleranceNote = r?.toleranceNote
        layers = check.layers
        notCompared = check.notCompared
    }

    private enum Keys: String, CodingKey {
        case model, reference, passed, maxAbsError = "max_abs_error", maxRelError = "max_rel_error",
             meanAbsError = "mean_abs_error", cosine, top1Agreement = "top1_agreement", top5Agreement = "top5_agreement",
             top1PerItem = "top1_per_item", worstIndex = "worst_index", nonFinite = "non_finite",
             firstDivergentLayer = "first_divergent_layer", tolerance, toleranceNote = "tolerance_note", layers,
             notCompared = "not_compared"
    }

    private enum LayerKeys: String, CodingKey {
        case name, maxAbsError = "max_abs_error", maxRelError = "max_rel_error", tolerance, passed, problem,
             comparedWith = "compared_with"
    }

    /// Every key is always present; absent values are `null` so consumers need no special cases.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        func number(_ v: Double?, _ k: Keys) throws {
            if let v, v.isFinite { try c.encode(v, forKey: k) } else { try c.encodeNil(forKey: k) }
        }
        try c.encode(model, forKey: .model)
        try c.encode(reference, forKey: .reference)
        try c.encode(passed, forKey: .passed)
        try number(maxAbsError, .maxAbsError)
        try number(maxRelError, .maxRelError)
        try number(meanAbsError, .meanAbsError)
        try number(cosine, .cosine)
        try number(top1Agreement, .top1Agreement)
        try number(top5Agreement, .top5Agreement)
        try c.encode(top1PerItem, forKey: .top1PerItem)
        try c.encode(worstIndex, forKey: .worstIndex)
        if let nonFinite { try c.encode(nonFinite, forKey: .nonFinite) } else { try c.encodeNil(forKey: .nonFinite) }
        if let firstDivergentLayer { try c.encode(firstDivergentLayer, forKey: .firstDivergentLayer) } else { try c.encodeNil(forKey: .firstDivergentLayer) }
        try number(tolerance, .tolerance)
        if let toleranceNote { try c.encode(toleranceNote, forKey: .toleranceNote) } else { try c.encodeNil(forKey: .toleranceNote) }
        var rows = c.nestedUnkeyedContainer(forKey: .layers)
        for l in layers {
            var row = rows.nestedContainer(keyedBy: LayerKeys.self)
            try row.encode(l.name, forKey: .name)
            if l.maxAbsError.isFinite { try row.encode(l.maxAbsError, forKey: .maxAbsError) } else { try row.encodeNil(forKey: .maxAbsError) }
            if l.maxRelError.isFinite { try row.encode(l.maxRelError, forKey: .maxRelError) } else { try row.encodeNil(forKey: .maxRelError) }
            try row.encode(l.tolerance, forKey: .tolerance)
            try row.encode(l.passed, forKey: .passed)
            if let p = l.problem { try row.encode(p, forKey: .problem) } else { try row.encodeNil(forKey: .problem) }
            if let w = l.comparedWith { try row.encode(w, forKey: .comparedWith) } else { try row.encodeNil(forKey: .comparedWith) }
        }
        try c.encode(notCompared, forKey: .notCompared)
    }

    /// The verdict first, then a short table for people.
    public var text: String {
        func e(_ v: Double?) -> String { v.map { $0.isFinite ? String(format: "%.2e", $0) : "-" } ?? "-" }
        // Paths and layer names may come from the files: escaped (DisplayText).
        var lines = ["\(passed ? "PASSED" : "FAILED"): \(model.displayed) against \(reference.displayed)"]
        if let first = firstDivergentLayer { lines.append("  first divergent layer: \(first.displayed)") }
        if let nonFinite { lines.append("  non-finite values: \(nonFinite)") }
        lines.append("  relative error \(e(maxRelError)) (tolerance \(e(tolerance)))  max |err| \(e(maxAbsError))")
        lines.append("  mean |err| \(e(meanAbsError))  cosine \(cosine.map { String(format: "%.8f", $0) } ?? "-")"
                     + "  top-1 \(top1PerItem.filter { $0 }.count)/\(top1PerItem.count)"
                     + (top5Agreement.map { String(format: "  top-5 %.0f%%", $0 * 100) } ?? ""))
        if let toleranceNote { lines.append("  tolerance: \(toleranceNote)") }
        if !layers.isEmpty {
            let names = layers.map { l in l.comparedWith.map { "\(l.name.displayed) (= \($0.displayed))" } ?? l.name.displayed }
            let w = max(names.map(\.count).max() ?? 5, 5)
            lines.append("  " + "layer".padding(toLength: w, withPad: " ", startingAt: 0) + "  rel. error  verdict")
            for (l, name) in zip(layers, names) {
                lines.append("  " + name.padding(toLength: w, withPad: " ", startingAt: 0) + "  "
                             + e(l.maxRelError).padding(toLength: 10, withPad: " ", startingAt: 0) + "  "
                             + (l.passed ? "ok" : "DIVERGES" + (l.problem.map { " (\($0.displayed))" } ?? "")))
            }
        }
        if !notCompared.isEmpty { lines.append("  not compared (no equivalent point in the model): \(notCompared.map(\.displayed).joined(separator: ", "))") }
        return lines.joined(separator: "\n")
    }
}
