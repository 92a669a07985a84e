import Foundation

/// The structures a Keras file allows, default first, with the notes on how they were found.
struct KerasReadings {
    /// Each reading's layer graph with its variables, and what it assumes beyond the weights.
    var graphs: [(graph: KerasGraph, choices: [String])]
    /// ``ResNetSpec/family`` of the result: the preset, `keras-graph` or `keras-layer-order`.
    var family: String
    var notes: [String]
}

/// Finds the layer graph(s) of a Keras file: its own config when it has one; else a preset
/// (`--arch`, or the one preset family that fits); else the structure read from a legacy
/// weights-only file's layer order (``KerasWeightsRecovery``). Without a config the classifier's
/// activation is not recorded, so every reading is offered with softmax and with logits.
func kerasReadings(_ k: KerasFile, arch: String?) throws -> KerasReadings {
    var notes: [String] = []
    // Readings of the file, default first: (graph, what it assumes beyond the weights).
    var graphs: [(graph: KerasGraph, choices: [String])] = []
    var family = "keras-graph"
    if let arch {
        guard Presets.all.contains(where: { $0.name == arch && $0.framework == "keras" }) else {
            let known = Presets.all.filter { $0.framework == "keras" }.map(\.name).joined(separator: ", ")
            throw ResNetError.usage("--arch \(arch) is not a Keras preset; \(k.path) is a Keras file (Keras presets: \(known))")
        }
        if k.graph != nil { notes.append("--arch \(arch) given: the file's own layer graph was not used") }
        graphs = [(try Presets.kerasGraph(preset: arch, layerWeights: k.layerWeights,
                                          namesAreSaveOrder: k.kind == .v3Weights, file: k.path), [])]
        family = arch
        notes.append("architecture from preset \(arch); weights matched \(k.kind == .v3Weights ? "by class in Keras' layer order" : "by layer name or creation order")")
    } else if let g = k.graph {
        graphs = [(g, [])]
        notes.append("architecture from the file's Keras layer graph (\(g.nodes.count) layers)")
    } else {
        // No config: try every Keras family whose structure is read from the weights; use it only
        // when exactly one fits the order and shapes of the variables.
        var fits: [(String, KerasGraph)] = []
        var reasons: [String] = []
        for preset in ["keras-resnet-v1", "keras-resnet-v2", "seed-keras"] {
            do {
                let g = try Presets.kerasGraph(preset: preset, layerWeights: k.layerWeights,
                                               namesAreSaveOrder: k.kind == .v3Weights, file: k.path)
                _ = try KerasGraphWalker(graph: g, file: k.path).walk(family: preset)
                fits.append((preset, g))
            } catch let error as ResNetError {
                reasons.append("\(preset): \(error.description.replacingOccurrences(of: "\(k.path): ", with: ""))")
            }
        }
        if fits.count == 1 {
            graphs = [(fits[0].1, [])]
            family = fits[0].0
            notes.append("no model config: architecture inferred as \(family) from the order and shapes of the variables (the only Keras family that fits; pass --arch to fix it)")
        } else if fits.isEmpty, k.layerOrder != nil {
            // No preset fits: read the structure from the layer order, the variables' shapes and
            // the weightless layers' names.
            do {
                graphs = try KerasWeightsRecovery(file: k).candidates()
            } catch let error as ResNetError {
                throw ResNetError.usage("\(k.path): the file holds weights but no model config, no Keras preset family fits its variables, and its structure could not be read from its layers (\(error.description.replacingOccurrences(of: "\(k.path): ", with: ""))); pass --arch PRESET (see `resnet-convert inspect --list-presets`)")
            }
            family = "keras-layer-order"
            notes.append("no model config and no preset fits: structure read from the file's layer order, variable shapes and weightless layer names (BatchNorm epsilon 1e-3, Keras' default; TF 'same' padding; the average pool before the Dense covers the whole final map)")
        } else {
            var why = fits.isEmpty ? "no Keras preset family fits its variables" : "several preset families fit (\(fits.map(\.0).joined(separator: ", ")))"
            if fits.isEmpty && k.kind == .v3Weights {
                why += " (a Keras 3 .weights.h5 names its layers by class but does not record their order, so the structure cannot be read from it; a .keras file or a legacy .h5 carries it)"
            }
            let advice = fits.isEmpty ? "pass --arch PRESET (see `resnet-convert inspect --list-presets`)"
                : "pass " + fits.map { "--arch \($0.0)" }.joined(separator: " or ")
            throw ResNetError.usage("\(k.path): the file holds weights but no model config, and \(why); \(advice)")
        }
    }
    // Without a config nothing records whether the classifier ends in softmax: offer both, the
    // reading's own default first.
    if k.graph == nil || arch != nil {
        graphs = graphs.flatMap { g -> [(graph: KerasGraph, choices: [String])] in
            if g.choices.contains(where: { $0.hasPrefix("head: ") }) { return [g] }
            guard let current = g.graph.headActivation, current == "softmax" || current == "linear",
                  let other = g.graph.withHeadActivation(current == "softmax" ? "linear" : "softmax") else { return [g] }
            let label = { (a: String) in a == "softmax" ? "head: softmax" : "head: logits" }
            return [(g.graph, g.choices + [label(current)]), (other, g.choices + [label(current == "softmax" ? "linear" : "softmax")])]
        }
    }
    return KerasReadings(graphs: graphs, family: family, notes: notes)
}

/// The Keras layer graph behind one of ``LoadedModel/candidates`` of a Keras file, and its block
/// outputs, so that the graph self-check runs on the structure a chooser adopted. Re-reads the
/// file; nil when no reading of it has these choices.
public func kerasCandidateGraph(choices: [String], path: String, arch: String? = nil) throws
    -> (graph: KerasGraph, blockOutputs: [(canonical: String, kerasPath: String)])? {
    let k = try readKerasFile(path: path)
    let readings = try kerasReadings(k, arch: arch)
    guard let g = readings.graphs.first(where: { $0.choices == choices }) else { return nil }
    let result = try KerasGraphWalker(graph: g.graph, file: k.path).walk(family: readings.family)
    return (g.graph, result.blockOutputs)
}

extension LoadedModel {
    /// Makes candidate `index` the model (model, mapping, and for Keras files the layer graph the
    /// self-check interprets), noting which reading was taken and why.
    public mutating func adoptCandidate(_ index: Int, arch: String? = nil, reason: String) throws {
        guard candidates.indices.contains(index) else {
            throw ResNetError.usage("\(path): candidate \(index) does not exist (\(candidates.count) candidates)")
        }
        let c = candidates[index]
        model = c.model
        mapping = c.mapping
        if kerasGraph != nil {
            guard let g = try kerasCandidateGraph(choices: c.choices, path: path, arch: arch) else {
                throw ResNetError.mapping(file: path, reason: "no Keras reading has the choices \(c.summary)")
            }
            kerasGraph = g.graph
            kerasBlockOutputs = g.blockOutputs
        }
        notes.append("structure: \(c.summary) (\(reason))")
    }
}
