import Foundation

/// Reads a Keras weight file of any of the four kinds (``KerasFileKind``), detected from its
/// content, not its name: a legacy `.h5` full model or weights-only file, a Keras 3 `.keras`
/// zip, or a Keras 3 `.weights.h5`.
///
/// With a config (full models and `.keras`), the result has a ``KerasGraph`` whose nodes carry
/// their variables, checked against what the config implies; ``KerasFile/layerWeights`` then lists
/// the same variables per node path. Without a config, only ``KerasFile/layerWeights`` is filled.
///
/// - Throws: ``ResNetError`` naming the file, the place inside it and the reason.
public func readKerasFile(path: String) throws -> KerasFile {
    let head: [UInt8]
    let handle = FileHandle(fileDescriptor: try InputFile.open(path), closeOnDealloc: true)   // regular files only
    do {
        defer { try? handle.close() }
        head = [UInt8](try handle.read(upToCount: 4) ?? Data())
    } catch {
        throw ResNetError.io(file: path, reason: "cannot read: \(error.localizedDescription)")
    }
    if head == [0x50, 0x4B, 0x03, 0x04] {
        return try KerasZipReader(path: path).read()
    }
    PhaseTrace.mark("h5 open start")
    let h5 = try HDF5File(path: path)
    PhaseTrace.mark("h5 opened")
    return try KerasH5Reader(h5: h5, path: path).read()
}

/// Reads a legacy Keras `.h5` held in memory; errors name `name`. Export reads its written file
/// back this way: libhdf5 cannot open an unnamed file by its `/proc/self/fd` path (it resolves
/// the file's real path, which an unnamed file does not have).
func readKerasH5(bytes: Data, name: String) throws -> KerasFile {
    // A label under the destination cannot exist: the destination is a regular file or absent.
    let h5 = try HDF5File(bytes: bytes, name: name, label: name + "/written-image")
    return try KerasH5Reader(h5: h5, path: name).read()
}

/// Limits for `.keras` members, whose sizes come from the untrusted zip directory
/// (`config.json` is bounded by ``ReadLimits/maxHeaderBytes``, everything by the file's ``ReadBudget``).
private enum KerasZipLimits {
    static let maxWeightsBytes = 16 << 30
}

// MARK: - Shared helpers

/// Sorts Keras group names so that counters run in numeric order: `conv2d, conv2d_1, conv2d_2,
/// …, conv2d_10` and `0, 1, …, 10`. Used where HDF5 does not track creation order; it restores
/// creation order within one class, but the interleaving of different classes is not recorded
/// in such a file, so names of different classes stay alphabetical.
func kerasNaturalOrder(_ names: [String]) -> [String] {
    func key(_ s: String) -> (String, Int) {
        if let n = Int(s), n >= 0 { return ("", n) }
        if let u = s.lastIndex(of: "_"), let n = Int(s[s.index(after: u)...]), n >= 0 {
            return (String(s[..<u]), n)
        }
        return (s, 0)
    }
    return names.sorted { a, b in
        let (ka, kb) = (key(a), key(b))
        return ka.0 != kb.0 ? ka.0 < kb.0 : (ka.1 != kb.1 ? ka.1 < kb.1 : a < b)
    }
}

/// Checks a layer's variables against the shapes its config implies.
private func verifyVariables(file: String, node: KerasNode, variables: [SourceTensor], where place: String) throws {
    guard let expected = expectedVariableShapes(className: node.className, config: node.config) else { return }
    func describe(_ s: [[Int?]]) -> String {
        s.map { "[" + $0.map { $0.map(String.init) ?? "?" }.joined(separator: ",") + "]" }.joined(separator: " ")
    }
    let found = variables.map(\.tensor.shape)
    let mismatch = ResNetError.invalidInput(file: file, place: place,
        reason: "layer \(node.path) (\(node.className)) has variables \(found) in the file; its config implies \(describe(expected))")
    guard found.count == expected.count else { throw mismatch }
    for (f, e) in zip(found, expected) {
        guard f.count == e.count else { throw mismatch }
        for (fd, ed) in zip(f, e) where ed != nil && fd != ed! { throw mismatch }
    }
    if node.className == "BatchNormalization", Set(found.map { $0.first ?? -1 }).count > 1 { throw mismatch }
}

// MARK: - HDF5 files (legacy .h5 and Keras 3 .weights.h5)

private struct KerasH5Reader {
    let h5: HDF5File
    let path: String

    func read() throws -> KerasFile {
        let version = try h5.attribute("keras_version", of: "/")?.stringList?.first
        if let config = try h5.attribute("model_config", of: "/") {
            guard case let .string(text) = config else {
                throw ResNetError.invalidInput(file: h5.name, place: "/@model_config", reason: "model_config is not a string")
            }
            guard try h5.kind(at: "/model_weights") == .group else {
                throw ResNetError.invalidInput(file: h5.name, place: "/model_weights",
                    reason: "full-model file has model_config but no model_weights group")
            }
            PhaseTrace.mark("config read")
            let json = try parseKerasJSON(Data(text.utf8), file: h5.name, place: "/@model_config", budget: h5.budget)
            PhaseTrace.mark("json parsed")
            return try legacy(kind: .legacyFullModel, root: "/model_weights", config: json, version: version)
        }
        if try stringList("layer_names", of: "/") != nil {
            return try legacy(kind: .legacyWeights, root: "/", config: nil, version: version)
        }
        let root = try h5.members(of: "/")
        if root.contains("layers") || root.contains("_layer_checkpoint_dependencies") {
            let weights = V3Weights(h5: h5)
            return KerasFile(path: path, kind: .v3Weights, kerasVersion: version, graph: nil,
                             layerWeights: try weights.allLayers())
        }
        throw ResNetError.unsupported(file: h5.name, place: "/",
            reason: "unknown weight layout: no model_config, layer_names, layers or _layer_checkpoint_dependencies at the root (members: \(firstItems(Array(root), 8)))")
    }

    /// A string-list attribute; Keras splits long ones into `name0`, `name1`, … when they do
    /// not fit in an HDF5 object header.
    func stringList(_ name: String, of group: String) throws -> [String]? {
        try stringList(name, of: group) { try h5.attribute($0, of: group) }
    }

    /// ``stringList(_:of:)`` for a group held open.
    func stringList(_ name: String, of group: HDF5Group) throws -> [String]? {
        try stringList(name, of: group.path) { try group.attribute($0) }
    }

    private func stringList(_ name: String, of group: String, _ attribute: (String) throws -> HDF5Attribute?) throws -> [String]? {
        if let a = try attribute(name) {
            guard let list = a.stringList else {
                throw ResNetError.invalidInput(file: h5.name, place: "\(group)@\(name)", reason: "attribute is not a list of strings")
            }
            return list
        }
        var chunks: [String] = []
        var i = 0
        while let a = try attribute("\(name)\(i)") {
            guard let list = a.stringList else {
                throw ResNetError.invalidInput(file: h5.name, place: "\(group)@\(name)\(i)", reason: "attribute is not a list of strings")
            }
            chunks += list
            i += 1
        }
        return i == 0 ? nil : chunks
    }

    private func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }

    /// Reads one legacy layer group (below `root`, held open): its `weight_names` and the
    /// datasets they name. The layer's group is opened once and every lookup starts there.
    func layerGroup(root: HDF5Group, layer: String) throws -> [(name: String, tensor: SourceTensor)] {
        guard let g = try root.group(layer) else {
            throw ResNetError.invalidInput(file: h5.name, place: join(root.path, layer), reason: "layer \(layer) is listed in layer_names but has no group")
        }
        let names = try stringList("weight_names", of: g) ?? []
        return try names.map { wn in
            guard let tensor = try g.readTensorIfDataset(at: wn) else {
                throw ResNetError.invalidInput(file: h5.name, place: join(g.path, wn), reason: "weight \(wn) of layer \(layer) is missing")
            }
            return (wn, tensor)
        }
    }

    /// Splits a nested model's flattened weights per inner layer: the leaf layer is the last
    /// component of the weight name before the variable name (`conv2d_1/kernel:0`,
    /// `sequential/conv2d_2/kernel`).
    func splitByLeaf(_ weights: [(name: String, tensor: SourceTensor)]) -> [(leaf: String, tensors: [SourceTensor])] {
        var order: [String] = []
        var byLeaf: [String: [(String, SourceTensor)]] = [:]
        for w in weights {
            let comps = w.name.split(separator: "/").map(String.init)
            let leaf = comps.count >= 2 ? comps[comps.count - 2] : ""
            if byLeaf[leaf] == nil { order.append(leaf) }
            byLeaf[leaf, default: []].append((w.name, w.tensor))
        }
        return order.map { leaf in
            let items = byLeaf[leaf]!
            // A model's weights list trainable variables before non-trainable ones, so a
            // BatchNormalization's moving statistics can be separated from its gamma/beta.
            let ranks = items.map { kerasVariableRank($0.0) }
            let sorted = ranks.allSatisfy({ $0 != nil })
                ? zip(items, ranks).enumerated().sorted { ($0.element.1!, $0.offset) < ($1.element.1!, $1.offset) }.map { $0.element.0 }
                : items
            return (leaf, sorted.map(\.1))
        }
    }

    func legacy(kind: KerasFileKind, root: String, config: JSONValue?, version: String?) throws -> KerasFile {
        guard let layerNames = try stringList("layer_names", of: root) else {
            throw ResNetError.invalidInput(file: h5.name, place: "\(root)@layer_names", reason: "missing layer_names attribute")
        }
        var groups: [(layer: String, weights: [(name: String, tensor: SourceTensor)])] = []
        groups.reserveCapacity(layerNames.count)
        guard let rootGroup = try HDF5Group.open(h5, path: root) else {
            throw ResNetError.invalidInput(file: h5.name, place: root, reason: "not a group")   // checked by the caller
        }
        for layer in layerNames {
            groups.append((layer, try layerGroup(root: rootGroup, layer: layer)))
        }
        PhaseTrace.mark("layer groups read")
        guard let config else {
            var out: [(layer: String, variables: [SourceTensor])] = []
            for g in groups where !g.weights.isEmpty {
                let ownPrefix = g.weights.allSatisfy { $0.name.split(separator: "/").first.map(String.init) == g.layer }
                if ownPrefix && g.weights.allSatisfy({ $0.name.split(separator: "/").count == 2 }) {
                    out.append((g.layer, g.weights.map(\.tensor)))
                } else {
                    for part in splitByLeaf(g.weights) { out.append((g.layer + "/" + part.leaf, part.tensors)) }
                }
            }
            return KerasFile(path: path, kind: kind, kerasVersion: version, graph: nil, layerWeights: out, layerOrder: layerNames)
        }
        var builder = KerasGraphBuilder(file: h5.name, place: "/@model_config")
        var (graph, origins) = try builder.build(config)
        var byTop: [String: [Int]] = [:]
        for (i, o) in origins.enumerated() { byTop[o.names[0], default: []].append(i) }
        var assigned = Set<Int>()
        for g in groups {
            let place = join(root, g.layer)
            guard let nodeIds = byTop[g.layer] else {
                if g.weights.isEmpty { continue }
                throw ResNetError.invalidInput(file: h5.name, place: place,
                    reason: "weights for layer \(g.layer), which the model config does not contain")
            }
            if nodeIds.count == 1, origins[nodeIds[0]].names.count == 1 {
                graph.nodes[nodeIds[0]].weights = g.weights.map(\.tensor)
                assigned.insert(nodeIds[0])
                continue
            }
            // A nested model: give each leaf layer the weights named after it (indexed by leaf
            // name: a sub-model may have any number of layers).
            var byLeaf: [String: [Int]] = [:]
            for id in nodeIds { if let leaf = origins[id].names.last { byLeaf[leaf, default: []].append(id) } }
            for part in splitByLeaf(g.weights) {
                let candidates = byLeaf[part.leaf] ?? []
                guard candidates.count == 1 else {
                    throw ResNetError.invalidInput(file: h5.name, place: place,
                        reason: candidates.isEmpty
                            ? "weights \(part.tensors.map(\.name)) belong to no layer of sub-model \(g.layer)"
                            : "weights of \(part.leaf) match \(candidates.count) layers of sub-model \(g.layer)")
                }
                graph.nodes[candidates[0]].weights = part.tensors
                assigned.insert(candidates[0])
            }
        }
        for node in graph.nodes {
            let place = join(root, origins[node.id].names[0])
            try verifyVariables(file: h5.name, node: node, variables: node.weights, where: place)
        }
        let layerWeights = graph.nodes.filter { !$0.weights.isEmpty }.map { (layer: $0.path, variables: $0.weights) }
        return KerasFile(path: path, kind: kind, kerasVersion: version, graph: graph, layerWeights: layerWeights)
    }
}

// MARK: - Keras 3 weight layout (layers/<generic>/vars/<i>)

/// The v3 layout: each layer's variables at `<container>/<generic name>/vars/0..n-1`, where the
/// container is `layers` (Keras 3) or `_layer_checkpoint_dependencies` (Keras 2.13–2.15).
private struct V3Weights {
    let h5: HDF5File
    static let containers = ["layers", "_layer_checkpoint_dependencies"]

    func container(in group: String) throws -> String? {
        for c in V3Weights.containers where try h5.kind(at: group + "/" + c) == .group { return c }
        return nil
    }

    /// Ordered members: creation order when tracked, else natural order (see `kerasNaturalOrder`).
    func orderedMembers(_ group: String) throws -> [String] {
        if let m = try h5.membersInCreationOrder(of: group) { return m }
        return kerasNaturalOrder(try h5.members(of: group))
    }

    /// The variables in `<layerGroup>/vars`, which must be named 0..n-1; nil when there is no `vars` group.
    func variables(of layerGroup: String) throws -> [SourceTensor]? {
        let vars = layerGroup + "/vars"
        guard try h5.kind(at: vars) == .group else { return nil }
        let names = try h5.members(of: vars)
        let present = Set(names)
        var tensors: [SourceTensor] = []
        for i in 0 ..< names.count {
            guard present.contains(String(i)) else {
                throw ResNetError.invalidInput(file: h5.name, place: vars,
                    reason: "variables are not numbered 0..\(names.count - 1): \(firstItems(kerasNaturalOrder(names), 8))")
            }
            let p = vars + "/\(i)"
            guard try h5.kind(at: p) == .dataset else {
                throw ResNetError.invalidInput(file: h5.name, place: p, reason: "variable is not a dataset")
            }
            tensors.append(try h5.readTensor(at: p))
        }
        return tensors
    }

    /// Every layer group holding variables, depth first: (generic-name path, HDF5 group).
    /// Reads structure only.
    func layerGroups() throws -> [(layer: String, group: String)] {
        var out: [(layer: String, group: String)] = []
        func walk(_ group: String, _ label: [String], depth: Int) throws {
            guard depth < 64 else {
                throw ResNetError.invalidInput(file: h5.name, place: group, reason: "layer groups nested more than 64 deep")
            }
            if try h5.kind(at: group + "/vars") == .group, try !h5.members(of: group + "/vars").isEmpty {
                out.append((label.joined(separator: "/"), group.isEmpty ? "/" : group))
            }
            guard let c = try container(in: group) else { return }
            for member in try orderedMembers(group + "/" + c) where try h5.kind(at: "\(group)/\(c)/\(member)") == .group {
                try walk("\(group)/\(c)/\(member)", label + [member], depth: depth + 1)
            }
        }
        try walk("", [], depth: 0)
        return out
    }

    /// Every layer's variables, for files without a config.
    func allLayers() throws -> [(layer: String, variables: [SourceTensor])] {
        try layerGroups().map { ($0.layer, try variables(of: $0.group == "/" ? "" : $0.group) ?? []) }
    }

    /// Attaches each config layer's variables to its graph node by Keras' generic naming rule,
    /// and checks that every variable in the file was claimed by some layer.
    func attach(to graph: inout KerasGraph, origins: [LayerOrigin]) throws {
        var claimed = Set<String>()
        var containerCache: [String: String?] = [:]
        for node in graph.nodes {
            let origin = origins[node.id]
            var group = ""
            var missing = false
            for (depth, generic) in origin.genericNames.enumerated() {
                let c: String?
                if let cached = containerCache[group] { c = cached } else {
                    c = try container(in: group)
                    containerCache[group] = c
                }
                guard let c else {
                    if depth == origin.genericNames.count - 1 { missing = true; break }
                    throw ResNetError.invalidInput(file: h5.name, place: group.isEmpty ? "/" : group,
                        reason: "no layers/_layer_checkpoint_dependencies container for sub-model \(origin.names.prefix(depth).joined(separator: "/"))")
                }
                group += "/\(c)/\(generic)"
            }
            let expected = expectedVariableShapes(className: node.className, config: node.config)
            if !missing, try h5.kind(at: group) != .group { missing = true }
            if missing {
                // A Sequential's own InputLayer and weightless layers may have no group at all.
                if expected == [] { continue }
                throw ResNetError.invalidInput(file: h5.name, place: group,
                    reason: "layer \(node.path) (\(node.className)) has no weight group (expected at \(group))")
            }
            if let recorded = try h5.attribute("name", of: group + "/vars"), case let .string(name) = recorded,
               name != origin.names.last {
                throw ResNetError.invalidInput(file: h5.name, place: group + "/vars",
                    reason: "weight group is recorded for layer \(name), but Keras' naming rule assigns it to \(node.path); cannot match layers to weights unambiguously")
            }
            let vars = try variables(of: group) ?? []
            try verifyVariables(file: h5.name, node: node, variables: vars, where: group)
            graph.nodes[node.id].weights = vars
            claimed.insert(group)
        }
        for (_, group) in try layerGroups() where !claimed.contains(group) {
            throw ResNetError.invalidInput(file: h5.name, place: group,
                reason: "variables that belong to no layer of the model config")
        }
    }
}

// MARK: - .keras zip

private struct KerasZipReader {
    let path: String

    func read() throws -> KerasFile {
        let image = try MappedFile(path: path)
        let budget = ReadBudget(file: path, fileBytes: image.bytes.count)
        // The directory is checked in full (local headers, duplicate names) before any member is
        // read; members are inflated with a cap, charged to the budget first.
        let zip = try ZipImage(bytes: image.bytes, file: path, plainSizeWithinFile: false)
        let limits = ReadLimits.current
        func member(_ name: String, limit: Int, flag: ReadLimits.Limit?) throws -> ZipMember? {
            guard let m = zip[name] else { return nil }
            guard m.uncompressedSize <= limit else {
                if let flag { throw limits.exceeded(flag, file: path, place: "\(name) (zip member)", found: "\(name) declares \(m.uncompressedSize) bytes") }
                throw ResNetError.invalidInput(file: path, place: "\(name) (zip member)", reason: "declares \(m.uncompressedSize) bytes (limit \(limit))")
            }
            return m
        }
        func json(_ m: ZipMember) throws -> JSONValue {
            try zip.withMember(m, budget: budget) { raw in
                let text = raw.isEmpty ? Data() : Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: raw.baseAddress!), count: raw.count, deallocator: .none)
                return try parseKerasJSON(text, file: path, place: m.name, budget: budget)
            }
        }
        guard let configMember = try member("config.json", limit: limits.maxHeaderBytes, flag: .headerBytes) else {
            throw ResNetError.invalidInput(file: path, place: "config.json", reason: ".keras archive has no config.json")
        }
        var version: String?
        if let meta = try member("metadata.json", limit: 1 << 20, flag: nil) {
            version = try json(meta)["keras_version"]?.string
        }
        guard let weights = try member("model.weights.h5", limit: KerasZipLimits.maxWeightsBytes, flag: nil) else {
            throw ResNetError.invalidInput(file: path, place: "model.weights.h5",
                reason: ".keras archive has no model.weights.h5 (sharded or npz weights are not supported)")
        }
        let config = try json(configMember)
        let h5 = try zip.withMember(weights, budget: budget) { raw -> HDF5File in
            guard raw.count > 0 else { throw ResNetError.invalidInput(file: path, place: "model.weights.h5 (zip member)", reason: "empty member") }
            // libhdf5 copies the image, so a view of the mapping (or of the inflated buffer) will do.
            let bytes = Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: raw.baseAddress!), count: raw.count, deallocator: .none)
            return try HDF5File(bytes: bytes, name: "\(path)!model.weights.h5", budget: budget)
        }
        var builder = KerasGraphBuilder(file: path, place: "config.json")
        var (graph, origins) = try builder.build(config)
        try V3Weights(h5: h5).attach(to: &graph, origins: origins)
        let layerWeights = graph.nodes.filter { !$0.weights.isEmpty }.map { (layer: $0.path, variables: $0.weights) }
        return KerasFile(path: path, kind: .kerasZip, kerasVersion: version, graph: graph, layerWeights: layerWeights)
    }
}
