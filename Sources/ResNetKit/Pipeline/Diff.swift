import Foundation

/// Tensor-by-tensor comparison of two weight files after both are mapped to canonical names.
public struct WeightDiff: Sendable, Codable {
    /// One canonical tensor present on both sides.
    public struct Row: Sendable, Codable {
        public var name: String
        public var shapeA: [Int]
        public var shapeB: [Int]
        /// Max |a - b|, nil when the shapes differ.
        public var maxAbsDifference: Double?
        public var equal: Bool
    }

    public var a: String
    public var b: String
    public var atol: Double
    public var rows: [Row]
    public var onlyInA: [String]
    public var onlyInB: [String]
    /// Whether the two specs describe the same structure.
    public var sameStructure: Bool
    /// True when every tensor is on both sides, shapes agree and every difference is within `atol`.
    public var equal: Bool

    /// Compares two canonical models.
    public init(_ ma: ResNetModel, _ mb: ResNetModel, a: String, b: String, atol: Double) {
        self.a = a; self.b = b; self.atol = atol
        sameStructure = ma.spec.stem == mb.spec.stem && ma.spec.stages == mb.spec.stages && ma.spec.head == mb.spec.head
        let order = ma.spec.parameters.map(\.name) + mb.spec.parameters.map(\.name)
        var seen = Set<String>()
        var rows: [Row] = []
        for name in order where seen.insert(name).inserted {
            guard let x = ma.tensors[name], let y = mb.tensors[name] else { continue }
            var d: Double? = nil
            if x.shape == y.shape {
                var m = 0.0
                for i in 0..<x.count {
                    let e = abs(Double(x.data[i]) - Double(y.data[i]))
                    // NaN on one side only is a difference; NaN on both counts as equal bits.
                    if e.isNaN { if !(x.data[i].isNaN && y.data[i].isNaN) { m = .infinity } } else { m = max(m, e) }
                }
                d = m
            }
            rows.append(Row(name: name, shapeA: x.shape, shapeB: y.shape, maxAbsDifference: d, equal: d.map { $0 <= atol } ?? false))
        }
        self.rows = rows
        onlyInA = ma.tensors.keys.filter { mb.tensors[$0] == nil }.sorted()
        onlyInB = mb.tensors.keys.filter { ma.tensors[$0] == nil }.sorted()
        equal = onlyInA.isEmpty && onlyInB.isEmpty && rows.allSatisfy(\.equal)
    }

    /// The verdict first, then only the tensors that differ.
    public var text: String {
        // Paths and tensor names may come from the files: escaped (DisplayText).
        let a = self.a.displayed, b = self.b.displayed
        var lines = [equal ? "EQUAL: \(a) and \(b) (\(rows.count) tensors, atol \(atol))"
                           : "DIFFERENT: \(a) and \(b) (atol \(atol))"]
        if !sameStructure { lines.append("  the two architectures differ") }
        for r in rows where !r.equal {
            if let d = r.maxAbsDifference { lines.append("  \(r.name.displayed): max |difference| \(String(format: "%.3e", d))") }
            else { lines.append("  \(r.name.displayed): shape \(r.shapeA) vs \(r.shapeB)") }
        }
        if !onlyInA.isEmpty { lines.append("  only in \(a): \(onlyInA.map(\.displayed).joined(separator: ", "))") }
        if !onlyInB.isEmpty { lines.append("  only in \(b): \(onlyInB.map(\.displayed).joined(separator: ", "))") }
        let worst = rows.compactMap(\.maxAbsDifference).max() ?? 0
        lines.append("  largest difference over all tensors: \(String(format: "%.3e", worst))")
        return lines.joined(separator: "\n")
    }
}

/// Reads two weight files of any supported formats and compares their canonical tensors.
public func diffWeights(_ a: String, _ b: String, atol: Double = 0, archA: String? = nil, archB: String? = nil,
                        weightsA: String? = nil, weightsB: String? = nil) throws -> WeightDiff {
    let ma = try loadModel(path: a, arch: archA, weights: weightsA).model
    let mb = try loadModel(path: b, arch: archB, weights: weightsB).model
    return WeightDiff(ma, mb, a: a, b: b, atol: atol)
}
