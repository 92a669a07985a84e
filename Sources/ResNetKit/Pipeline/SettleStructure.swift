import Foundation

/// Chooses among ``LoadedModel/candidates``: the first candidate (in order of how few choices differ
/// from the file's own reading) that reproduces the goldens; without goldens, the candidate whose
/// BatchNorm statistics fit best, when the fit is decisive. Returns the model with the chosen
/// candidate in place and notes saying how it was chosen.
///
/// - Throws: ``ResNetError/mapping(file:reason:)`` when, without goldens, the statistics contradict the
///   reading as given but do not single out another candidate: the message lists the candidates and
///   how to decide (`--expect`, `--arch`, `--map`).
public func settleStructure(_ loaded: LoadedModel, goldens: Goldens?, progress: ((String) -> Void)? = nil) throws -> LoadedModel {
    guard loaded.candidates.count > 1 else { return loaded }
    var result = loaded
    let n = loaded.candidates.count
    func choose(_ i: Int, _ note: String) {
        result.model = loaded.candidates[i].model
        result.mapping = loaded.candidates[i].mapping
        result.notes.append(note)
    }
    if let goldens {
        progress?("choosing among \(n) candidate structures by parity with \(goldens.path)")
        var closest: (index: Int, error: Double)?
        var failures: [String] = []
        for (i, c) in loaded.candidates.enumerated() {
            let check: ParityCheck
            do { check = try Verifier.checkGoldens(c.model, goldens: goldens) } catch {
                failures.append("\(c.summary): \(error)")
                continue
            }
            if check.passed {
                let alternative = i == 0 ? "" : "; the file's own reading (\(loaded.candidates[0].summary)) does not reproduce them"
                choose(i, "structure chosen by parity among \(n) candidates: \(c.summary)\(alternative)")
                return result
            }
            let e = check.report?.maxRelativeError ?? .infinity
            if closest == nil || e < closest!.error { closest = (i, e) }
        }
        if let closest {
            choose(closest.index, "no candidate structure reproduces the goldens (\(n) tried); closest: \(loaded.candidates[closest.index].summary), max relative error \(String(format: "%.3g", closest.error))")
        }
        return result
    }
    return try settleByPlausibility(result, progress: progress)
}

/// Without goldens: rank the candidates by BatchNorm plausibility (filled in when the check lands).
func settleByPlausibility(_ loaded: LoadedModel, progress: ((String) -> Void)?) throws -> LoadedModel {
    loaded
}
