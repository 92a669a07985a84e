import Foundation

/// Reads a PyTorch checkpoint without running any of it.
///
/// Accepts zip archives (torch ≥ 1.6, any root folder, with or without `byteorder`) and the
/// legacy pre-1.6 stream. The pickle is decoded by a data-only machine with an allow-list of
/// globals; any other global (e.g. `posix.system`) is refused with ``ResNetError/invalidInput(file:place:reason:)``
/// naming it. Checkpoint wrappers are unwrapped (see ``TorchCheckpoint/notes``): plain state dicts,
/// `{'state_dict' | 'model_state_dict' | 'model' | 'net': …}`, EMA copies (the non-EMA weights are
/// chosen when both exist), `module.` / `_orig_mod.` prefixes, and whole pickled `nn.Module`s.
///
/// - Parameters:
///   - path: the checkpoint file.
///   - allowModuleRecords: decode instances of module classes in a whole pickled `nn.Module`
///     (`torch.save(model)`) as inert records, so their `_parameters` / `_buffers` can be read.
///     Such classes are only named, never looked up or called; with `false` only state-dict
///     globals are accepted.
public func readTorchCheckpoint(path: String, allowModuleRecords: Bool = true) throws -> TorchCheckpoint {
    let image = try MappedFile(path: path)
    guard image.bytes.count > 0 else { throw ResNetError.invalidInput(file: path, place: "", reason: "empty file") }
    return try readTorchCheckpoint(image: image, name: path, allowModuleRecords: allowModuleRecords)
}

/// Reads a PyTorch checkpoint held in memory; `name` stands for the file in messages.
/// Behaves exactly like ``readTorchCheckpoint(path:allowModuleRecords:)``.
public func readTorchCheckpoint(data: Data, name: String, allowModuleRecords: Bool = true) throws -> TorchCheckpoint {
    guard !data.isEmpty else { throw ResNetError.invalidInput(file: name, place: "", reason: "empty file") }
    return try readTorchCheckpoint(image: MappedFile(copying: data), name: name, allowModuleRecords: allowModuleRecords)
}

func readTorchCheckpoint(image: MappedFile, name: String, allowModuleRecords: Bool) throws -> TorchCheckpoint {
    let policy: PicklePolicy = allowModuleRecords ? .moduleRecords : .stateDict
    let b = image.bytes
    let decoded: TorchDecoded
    let source: TorchStorageSource
    if b.count >= 4 && b[0] == 0x50 && b[1] == 0x4B && b[2] == 0x03 && b[3] == 0x04 {
        let zip = try TorchZip(image: image, file: name)
        decoded = try zip.decode(policy: policy)
        source = zip
    } else if b.count >= 4 && b[0] == 0x80 && b[1] <= 5 && b[2] == 0x8A && b[3] == 0x0A {
        let legacy = TorchLegacy(image: image, file: name)
        decoded = try legacy.decode(policy: policy)
        source = legacy
    } else {
        throw ResNetError.invalidInput(file: name, place: "first bytes",
            reason: "neither a PyTorch zip archive (PK\\x03\\x04) nor a legacy torch stream (pickled magic number)")
    }
    var unwrapper = TorchUnwrapper(arena: decoded.arena, file: name)
    try unwrapper.unwrap(decoded.root)
    var notes = decoded.notes + unwrapper.notes
    if !decoded.recordClasses.isEmpty {
        notes.append("module classes decoded as inert records (never called): \(decoded.recordClasses.joined(separator: ", "))")
    }
    // Storages are read once each, grouped by key; tensors keep their file order.
    var tensors = [SourceTensor?](repeating: nil, count: unwrapper.tensors.count)
    var byKey: [String: [Int]] = [:]
    var keyOrder: [String] = []
    var total = 0
    for (i, entry) in unwrapper.tensors.enumerated() {
        let key = entry.tensor.storage.key
        if byKey[key] == nil { keyOrder.append(key) }
        byKey[key, default: []].append(i)
        let (sum, overflow) = total.addingReportingOverflow(entry.tensor.shape.reduce(1, *))
        let limits = ReadLimits.current
        guard !overflow, ReadLimits.float32Bytes(sum) <= limits.maxTotalBytes else {
            throw limits.exceeded(.totalBytes, file: name, place: entry.name,
                                  found: "the tensors up to this one need \(ReadLimits.float32Bytes(sum)) bytes as float32")
        }
        total = sum
    }
    if let deferred = DeferredSources.current {
        // Structure only: record where each tensor lives; its storage is read when it is written.
        for key in keyOrder {
            let indices = byKey[key]!
            let storage = unwrapper.tensors[indices[0]].tensor.storage
            let (needed, overflow) = (storage.base + storage.count).multipliedReportingOverflow(by: storage.dtype.size)
            guard !overflow else { throw ResNetError.invalidInput(file: name, place: "storage '\(key)'", reason: "byte size overflows") }
            for i in indices {
                let entry = unwrapper.tensors[i]
                let bigEndian = decoded.bigEndian
                deferred.add(entry.name, .init(shape: entry.tensor.shape, dtype: entry.tensor.storage.dtype) { out in
                    try source.withStorage(key, minimumBytes: needed) { raw in
                        try materialise(entry.tensor, raw: raw, bigEndian: bigEndian, file: name, place: entry.name, into: out)
                        image.release(raw)
                    }
                })
                tensors[i] = SourceTensor(name: entry.name, sourceDType: entry.tensor.storage.dtype,
                                          tensor: placeholderTensor(shape: entry.tensor.shape))
            }
        }
    }
    for key in keyOrder where DeferredSources.current == nil {
        let indices = byKey[key]!
        let storage = unwrapper.tensors[indices[0]].tensor.storage
        // The stored storage as the persistent id declared it (legacy views share their root's bytes).
        let rootCount = storage.base + storage.count
        let (needed, overflow) = rootCount.multipliedReportingOverflow(by: storage.dtype.size)
        guard !overflow else { throw ResNetError.invalidInput(file: name, place: "storage '\(key)'", reason: "byte size overflows") }
        try source.withStorage(key, minimumBytes: needed) { raw in
            for i in indices {
                let entry = unwrapper.tensors[i]
                let t = try materialise(entry.tensor, raw: raw, bigEndian: decoded.bigEndian, file: name, place: entry.name)
                tensors[i] = SourceTensor(name: entry.name, sourceDType: entry.tensor.storage.dtype, tensor: t)
            }
        }
    }
    return TorchCheckpoint(path: name, container: decoded.container, tensors: tensors.map { $0! },
                           notes: notes, ignored: unwrapper.ignored)
}

/// Finds the state dict inside whatever object a checkpoint holds, and names what it left out.
struct TorchUnwrapper {
    let arena: PickleArena
    let file: String
    private(set) var tensors: [(name: String, tensor: TorchTensorRef)] = []
    private(set) var notes: [String] = []
    private(set) var ignored: [String] = []
    /// Ignored names inside the chosen state dict or module tree; wrapper prefixes are removed from them too.
    private var innerIgnored: [String] = []

    /// Keys of checkpoint dicts that hold the model weights, most specific first.
    static let weightKeys = ["state_dict", "model_state_dict", "model", "net"]
    /// Keys of exponential-moving-average copies; used only when no `weightKeys` entry exists.
    static let emaKeys = ["state_dict_ema", "model_ema", "ema_state_dict", "ema"]
    /// Wrapper prefixes: `nn.DataParallel` / `DistributedDataParallel`, and `torch.compile`.
    static let prefixes = [("module.", "DataParallel"), ("_orig_mod.", "torch.compile")]

    init(arena: PickleArena, file: String) {
        self.arena = arena
        self.file = file
    }

    private func bad(_ place: String, _ reason: String) -> ResNetError {
        .invalidInput(file: file, place: place, reason: reason)
    }

    mutating func unwrap(_ root: PickleValue) throws {
        var found: [(String, TorchTensorRef)] = []
        try collect(root, path: "", depth: 0, into: &found)
        guard !found.isEmpty else { throw bad("checkpoint", "no tensors found") }
        // Prefixes are removed only when every key has them, so a partial match stays visible to the mapping.
        var names = found.map(\.0)
        var stripped = true
        while stripped {
            stripped = false
            for (prefix, origin) in Self.prefixes where names.allSatisfy({ $0.hasPrefix(prefix) }) {
                names = names.map { String($0.dropFirst(prefix.count)) }
                innerIgnored = innerIgnored.map { $0.hasPrefix(prefix) ? String($0.dropFirst(prefix.count)) : $0 }
                notes.append("prefix '\(prefix)' (\(origin)) removed from all \(names.count) keys")
                stripped = true
            }
        }
        ignored += innerIgnored
        var skipped = 0
        for (name, (_, t)) in zip(names, found) {
            if name == "num_batches_tracked" || name.hasSuffix(".num_batches_tracked") {
                ignored.append(name)
                skipped += 1
            } else {
                tensors.append((name, t))
            }
        }
        if skipped > 0 { notes.append("\(skipped) num_batches_tracked counters ignored") }
    }

    /// Collects the tensors of the state dict `value` stands for.
    private mutating func collect(_ value: PickleValue, path: String, depth: Int, into found: inout [(String, TorchTensorRef)]) throws {
        let place = path.isEmpty ? "checkpoint" : "checkpoint['\(path)']"
        guard depth <= TorchLimits.maxWrapperDepth else { throw bad(place, "wrapped more than \(TorchLimits.maxWrapperDepth) levels deep") }
        if let record = arena.record(value) {
            notes.append("whole pickled nn.Module \(record.className)\(path.isEmpty ? "" : " at '\(path)'"): tensors taken from its _parameters and _buffers")
            try moduleTensors(record, prefix: "", depth: 0, into: &found)
            return
        }
        guard let d = arena.dict(value) else {
            throw bad(place, "holds a \(arena.kindName(value)), not a state dict or an nn.Module")
        }
        if d.values.contains(where: { self.arena.tensor($0) != nil }) {
            try stateDictTensors(d, path: path, into: &found)
            return
        }
        let keys = d.keys.compactMap { k -> String? in if case let .string(s) = k { return s }; return nil }
        let objects = self.arena
        let usable = { (k: String) -> Bool in
            guard let v = d.value(forString: k) else { return false }
            return objects.dict(v) != nil || objects.record(v) != nil
        }
        let chosen = Self.weightKeys.first(where: usable) ?? Self.emaKeys.first(where: usable)
        guard let chosen else {
            throw bad(place, "no tensors and none of the keys \((Self.weightKeys + Self.emaKeys).joined(separator: ", ")); keys are: \(keys.prefix(20).joined(separator: ", "))")
        }
        let full = path.isEmpty ? chosen : "\(path).\(chosen)"
        if Self.emaKeys.contains(chosen) {
            notes.append("weights taken from the EMA copy '\(full)' (the checkpoint has no non-EMA weights)")
        } else {
            notes.append("weights taken from '\(full)'")
            for k in keys where Self.emaKeys.contains(k) && usable(k) {
                notes.append("EMA copy '\(path.isEmpty ? k : "\(path).\(k)")' not used: the non-EMA weights were chosen")
            }
        }
        for k in d.keys {
            guard case let .string(s) = k else { ignored.append("\(path.isEmpty ? "" : "\(path).")<\(arena.kindName(k)) key>"); continue }
            if s != chosen { ignored.append(path.isEmpty ? s : "\(path).\(s)") }
        }
        try collect(d.value(forString: chosen)!, path: full, depth: depth + 1, into: &found)
    }

    /// A state dict maps names to tensors; the only other values torch puts there are
    /// `*._extra_state` entries (`nn.Module.get_extra_state`), which are not weights.
    private mutating func stateDictTensors(_ d: PickleDict, path: String, into found: inout [(String, TorchTensorRef)]) throws {
        var extra = 0
        for (k, v) in zip(d.keys, d.values) {
            guard case let .string(name) = k else {
                throw bad(path.isEmpty ? "state dict" : "state dict '\(path)'", "has a key of type \(arena.kindName(k)), not a string")
            }
            if let t = arena.tensor(v) {
                found.append((name, t))
            } else if name == "_extra_state" || name.hasSuffix("._extra_state") {
                innerIgnored.append(name)
                extra += 1
            } else {
                throw bad("state dict entry '\(name)'", "is a \(arena.kindName(v)), not a tensor")
            }
        }
        if extra > 0 { notes.append("\(extra) _extra_state entries ignored") }
        if d.attributes != nil { notes.append("state dict attribute _metadata (per-module versions) ignored") }
    }

    /// `nn.Module.state_dict()` order: a module's parameters, then its persistent buffers, then
    /// each submodule's, recursively with dotted names.
    private mutating func moduleTensors(_ record: ModuleRecord, prefix: String, depth: Int, into found: inout [(String, TorchTensorRef)]) throws {
        let place = prefix.isEmpty ? "module \(record.className)" : "module '\(prefix.dropLast())' (\(record.className))"
        let maxDepth = ReadLimits.current.maxPickleDepth
        guard depth < maxDepth else { throw bad(place, ReadLimits.current.reason(.pickleDepth, found: "modules nested deeper than \(maxDepth)")) }
        guard let state = record.state, let attributes = arena.dict(state) else {
            throw bad(place, "object has no attribute dict: not an nn.Module")
        }
        guard let params = attributes.value(forString: "_parameters").flatMap(arena.dict),
              let modules = attributes.value(forString: "_modules").flatMap(arena.dict) else {
            throw bad(place, "object has no _parameters / _modules: not an nn.Module")
        }
        var nonPersistent = Set<String>()
        if let v = attributes.value(forString: "_non_persistent_buffers_set"), case let .set(items)? = arena.object(v) {
            for case let .string(s) in items { nonPersistent.insert(s) }
        }
        func entries(_ d: PickleDict, _ what: String) throws -> [(String, PickleValue)] {
            try zip(d.keys, d.values).map { k, v in
                guard case let .string(s) = k else { throw bad(place, "\(what) key is a \(arena.kindName(k))") }
                return (s, v)
            }
        }
        for (name, v) in try entries(params, "_parameters") {
            if case .none = v { continue }
            guard let t = arena.tensor(v) else { throw bad(place, "parameter '\(name)' is a \(arena.kindName(v)), not a tensor") }
            found.append((prefix + name, t))
        }
        if let buffers = attributes.value(forString: "_buffers").flatMap(arena.dict) {
            for (name, v) in try entries(buffers, "_buffers") {
                if case .none = v { continue }
                guard let t = arena.tensor(v) else { throw bad(place, "buffer '\(name)' is a \(arena.kindName(v)), not a tensor") }
                if nonPersistent.contains(name) { innerIgnored.append(prefix + name); continue }
                found.append((prefix + name, t))
            }
        }
        for (name, v) in try entries(modules, "_modules") {
            if case .none = v { continue }
            guard let child = arena.record(v) else { throw bad(place, "submodule '\(name)' is a \(arena.kindName(v)), not a module") }
            try moduleTensors(child, prefix: prefix + name + ".", depth: depth + 1, into: &found)
        }
    }
}
