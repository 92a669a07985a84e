import Foundation

/// Chooses among ``LoadedModel/candidates``: the first candidate (in order of how few choices differ
/// from the file's own reading) that reproduces the goldens; without goldens, the candidate whose
/// BatchNorm statistics fit best, when the fit is decisive. Returns the model with the chosen
/// candidate in place and notes saying how it was chosen.
///
/// - Throws: ``ResNetError/mapping(file:reason:)`` when, without goldens, the statistics contradict the
///   reading as given but do not single out another candidate: the message lists the candidates and
///   how to decide (`--expect`, `--arch`, `--map`).
///
/// - Parameters:
///   - loaded: the model as ``loadModel(path:arch:mapFile:weights:limits:)`` read it, with its candidates.
///   - goldens: the source framework's outputs to choose by; nil chooses by BatchNorm statistics.
///   - arch: the preset the file was read with, so a Keras candidate's layer graph is rebuilt the same way.
///   - progress: called with one line per candidate tried.
public func settleStructure(_ loaded: LoadedModel, goldens: Goldens?, arch: String? = nil, progress: ((String) -> Void)? = nil) throws -> LoadedModel {
    // Candidates run on synthetic images here; on the goldens, the goldens file is named (checkGoldens).
    try namingFiles(model: loaded.path, input: loaded.path) {
        try settle(loaded, goldens: goldens, arch: arch, progress: progress)
    }
}

private func settle(_ loaded: LoadedModel, goldens: Goldens?, arch: String?, progress: ((String) -> Void)?) throws -> LoadedModel {
    guard loaded.candidates.count > 1 else { return loaded }
    var result = loaded
    let n = loaded.candidates.count
    func choose(_ i: Int, _ note: String) throws {
        if loaded.kerasGraph != nil {
            // The self-check must interpret the graph of the reading taken, not the first one's.
            try result.adoptCandidate(i, arch: arch, reason: note)
        } else {
            result.model = loaded.candidates[i].model
            result.mapping = loaded.candidates[i].mapping
            result.notes.append(note)
        }
    }
    if let goldens {
        progress?("choosing among \(n) candidate structures by parity with \(goldens.path)")
        var closest: (index: Int, error: Double)?
        var failures: [String] = []
        for (i, c) in loaded.candidates.enumerated() {
            let check: ParityCheck
            do {
                var l = loaded; l.model = c.model; l.mapping = c.mapping
                check = try Verifier.checkGoldens(c.model, goldens: goldens, aliases: Verifier.layerAliases(l))
            } catch {
                failures.append("\(c.summary): \(error)")
                continue
            }
            if check.passed {
                let alternative = i == 0 ? "" : "; the file's own reading (\(loaded.candidates[0].summary)) does not reproduce them"
                try choose(i, "structure chosen by parity among \(n) candidates: \(c.summary)\(alternative)")
                return result
            }
            let e = check.report?.maxRelativeError ?? .infinity
            if closest == nil || e < closest!.error { closest = (i, e) }
        }
        if let closest {
            try choose(closest.index, "no candidate structure reproduces the goldens (\(n) tried); closest: \(loaded.candidates[closest.index].summary), max relative error \(String(format: "%.3g", closest.error))")
        }
        return result
    }
    return try settleByPlausibility(result, arch: arch, progress: progress)
}

/// Without goldens: the reading as given stands unless the BatchNorm statistics contradict it. Each
/// step compares the current reading with the candidates that differ from it in one choice; a
/// candidate replaces it only when it fits decisively better (``Plausibility/decisiveMargin``) and
/// decisively better than the other options of that choice, else the file is refused with the
/// candidates and how to decide. Choices the statistics cannot see (the stem's stride, the head's
/// softmax; see ``visibleToStatistics(_:)``) stay as read, and a note names them.
func settleByPlausibility(_ loaded: LoadedModel, arch: String?, progress: ((String) -> Void)?) throws -> LoadedModel {
    let candidates = loaded.candidates
    guard candidates.count > 1 else { return loaded }
    progress?("checking the structure against the BatchNorm statistics (\(candidates.count) candidates)")
    var cache: [Int: PlausibilityResult] = [:]
    // Where a reading downsamples sets the scale each layer sees; readings that downsample at the
    // same places (they differ in a ReLU, a zero-channel split, …) are judged at the resolution that
    // fitted the first of them best, which saves the other sizes' forward passes.
    var sizeForSchedule: [[String]: [Int]] = [:]
    func result(_ i: Int) -> PlausibilityResult {
        if let r = cache[i] { return r }
        let schedule = downsamplingSchedule(candidates[i].model.spec)
        var options = Plausibility.Options()
        options.size = sizeForSchedule[schedule]
        let r = Plausibility.rank(candidates: [candidates[i].model], options: options).results[0]
        if r.evidence, r.imageShape.count == 4, sizeForSchedule[schedule] == nil { sizeForSchedule[schedule] = Array(r.imageShape.suffix(2)) }
        cache[i] = r
        return r
    }
    func differing(_ a: Int, _ b: Int) -> [Int] {
        zip(candidates[a].choices, candidates[b].choices).enumerated().filter { $1.0 != $1.1 }.map(\.offset)
    }
    var current = 0
    let base = result(0)
    var out = loaded
    guard base.evidence else {
        out.notes.append("plausibility: no evidence (\(base.reason ?? "no trained BatchNorm statistics")); the structure stays as read (\(candidates[0].summary)); pass --expect io.npz to check it")
        return out
    }
    // Trained statistics fit some reading closely; random ones fit none. A best fit above
    // `plausibilityEvidenceBound` says they are not evidence about this model (the bound lies
    // between the two measured groups; see the "Recognising architectures" article).
    let neighbourhood = [0] + candidates.indices.filter { differing($0, 0).count == 1 }
    let bestFit = neighbourhood.map { result($0) }.filter(\.evidence).map(\.score).min() ?? .infinity
    guard bestFit <= plausibilityEvidenceBound else {
        out.notes.append("plausibility: no usable evidence: no reading fits the BatchNorm statistics (best score \(String(format: "%.2f", bestFit)), above \(plausibilityEvidenceBound); untrained or random statistics); the structure stays as read (\(candidates[0].summary)); pass --expect io.npz to check it")
        return out
    }
    var changes: [String] = []
    for _ in 0..<3 {
        let neighbours = candidates.indices.filter { i in
            let d = differing(i, current)
            return d.count == 1 && visibleToStatistics(candidates[i].choices[d[0]]) && visibleToStatistics(candidates[current].choices[d[0]])
        }
        let scored = neighbours.filter { result($0).evidence }.sorted { result($0).score < result($1).score }
        guard let best = scored.first, result(best).score < result(current).score else { break }
        let ratio = Plausibility.pairedRatio(result(best), result(current))
        guard ratio >= Plausibility.decisiveMargin else { break }
        // The other options of the same choice must lose decisively too.
        let axis = differing(best, current)[0]
        let rivals = scored.filter { $0 != best && differing($0, current) == [axis] }
        if let rival = rivals.first, Plausibility.pairedRatio(result(best), result(rival)) < Plausibility.decisiveMargin {
            // One line: error messages are escaped whole, so a line break would show as `\n`.
            let listed = ([current, best] + rivals).map { "\(candidates[$0].summary): score \(String(format: "%.3f", result($0).score))" }
            throw ResNetError.mapping(file: loaded.path, reason: "the BatchNorm statistics contradict the structure as read but do not single out another (margin \(String(format: "%.2f", Plausibility.pairedRatio(result(best), result(rival)))), decisive from \(Plausibility.decisiveMargin)): " + listed.joined(separator: "; ")
                                      + "; decide with --expect io.npz (goldens from the source framework), --arch PRESET or --map FILE.json")
        }
        changes.append("\(candidates[best].choices[axis]) instead of \(candidates[current].choices[axis]) (statistics fit \(String(format: "%.2f", ratio))x better)")
        current = best
    }
    // Say which choices stand by convention alone: nothing here checked them.
    let unseen = candidates[current].choices.indices.filter { axis in
        !visibleToStatistics(candidates[current].choices[axis])
            && candidates.contains { $0.choices.indices.contains(axis) && $0.choices[axis] != candidates[current].choices[axis] }
    }.map { candidates[current].choices[$0] }
    if !unseen.isEmpty {
        out.notes.append("not checked without goldens (the BatchNorm statistics cannot see it): \(unseen.joined(separator: ", ")); pass --expect io.npz to check")
    }
    let r = result(current)
    let worst = r.worst.map { "; worst fit \($0.name) \(String(format: "%.2f", $0.score))" } ?? ""
    if current == 0 {
        out.notes.append("plausibility: the structure as read fits the BatchNorm statistics (score \(String(format: "%.3f", r.score)), input \(r.inputScale?.rawValue ?? "-")\(worst)); no candidate fits decisively better")
    } else {
        let note = "structure chosen by BatchNorm plausibility among \(candidates.count) candidates: \(changes.joined(separator: "; ")); now \(candidates[current].summary)"
        if out.kerasGraph != nil { try out.adoptCandidate(current, arch: arch, reason: note) } else {
            out.model = candidates[current].model
            out.mapping = candidates[current].mapping
            out.notes.append(note)
        }
    }
    return out
}

/// Every op that changes the resolution, in order, with where it sits: two readings with the same
/// schedule see the same scale at every layer.
func downsamplingSchedule(_ spec: ResNetSpec) -> [String] {
    func ops(_ list: [Op], _ place: String) -> [String] {
        list.enumerated().compactMap { i, op in
            switch op {
            case let .conv(c) where c.stride != [1, 1]: return "\(place).\(i) conv \(c.stride)"
            case let .maxPool(p): return "\(place).\(i) max \(p.stride)"
            case let .avgPool(p): return "\(place).\(i) avg \(p.stride)"
            case let .subsample(s): return "\(place).\(i) sub \(s)"
            default: return nil
            }
        }
    }
    var out = ops(spec.stem, "stem")
    for (s, stage) in spec.stages.enumerated() {
        for (b, block) in stage.blocks.enumerated() {
            out += ops(block.pre + block.residual, "\(s).\(b).r") + ops(block.shortcut, "\(s).\(b).s")
        }
    }
    return out
}

/// A best plausibility score above this means the running statistics describe no reading of the
/// model on natural images (see ``settleByPlausibility``).
let plausibilityEvidenceBound = 1.0

/// Whether BatchNorm statistics can decide a choice. Not: the stem's stride (it trades off against the
/// unknown training resolution, see ``Plausibility/imageSizes(for:)``), what comes after the last batch
/// norm (the head's activation, a ReLU before the head's pooling), and whether a zero-channel shortcut
/// subsamples or average-pools; the measurements that say so are in the "Recognising architectures"
/// article. Goldens decide those. Where a bottleneck strides is left to the statistics: a reading
/// only changes on a decisive margin, and the stride position never reached one on a trained model.
func visibleToStatistics(_ choice: String) -> Bool {
    !(choice.hasPrefix("head:") || choice.hasPrefix("stem stride") || choice.contains("head's pooling")
      || choice.hasPrefix("zero-channel shortcut:"))
}
