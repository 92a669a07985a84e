import Foundation

/// Reads a PyTorch checkpoint without running any of it.
///
/// Accepts zip archives (torch ≥ 1.6, any root folder, with or without `byteorder`) and the
/// legacy pre-1.6 stream. The pickle is decoded by a data-only machine with an allow-list of
/// globals; objects that hold no weights (`argparse.Namespace`, `collections.Counter`, numpy arrays …)
/// become inert records, and any other global (e.g. `posix.system`) is refused with
/// ``ResNetError/invalidInput(file:place:reason:)`` naming it. Nothing from the file is ever called.
///
/// The weights are found wherever the checkpoint keeps them (see ``TorchCheckpoint/notes``): the
/// decoded object is searched for dicts of tensors and whole pickled `nn.Module`s, leaving out
/// optimizer and scheduler state; the non-EMA copy is preferred, then the largest. Every prefix
/// shared by all weight keys (`module.`, `model.`, `_orig_mod.` …) is removed.
///
/// - Parameters:
///   - path: the checkpoint file.
///   - allowModuleRecords: decode instances of module classes in a whole pickled `nn.Module`
///     (`torch.save(model)`) as inert records, so their `_parameters` / `_buffers` can be read.
///     Such classes are only named, never looked up or called; with `false` only state-dict
///     globals and data records are accepted.
///   - weights: a dotted path into the checkpoint naming the weights to take (`state_dict_ema`,
///     `model`, `optimizer_states.0` for list items), instead of the automatic choice; an empty
///     string is the checkpoint itself. A path that does not exist is refused with the candidates.
public func readTorchCheckpoint(path: String, allowModuleRecords: Bool = true, weights: String? = nil) throws -> TorchCheckpoint {
    let image = try MappedFile(path: path)
    guard image.bytes.count > 0 else { throw ResNetError.invalidInput(file: path, place: "", reason: "empty file") }
    return try readTorchCheckpoint(image: image, name: path, allowModuleRecords: allowModuleRecords, weights: weights)
}

/// Reads a PyTorch checkpoint held in memory; `name` stands for the file in messages.
/// Behaves exactly like ``readTorchCheckpoint(path:allowModuleRecords:weights:)``.
public func readTorchCheckpoint(data: Data, name: String, allowModuleRecords: Bool = true, weights: String? = nil) throws -> TorchCheckpoint {
    guard !data.isEmpty else { throw ResNetError.invalidInput(file: name, place: "", reason: "empty file") }
    return try readTorchCheckpoint(image: MappedFile(copying: data, name: name), name: name, allowModuleRecords: allowModuleRecords, weights: weights)
}

func readTorchCheckpoint(image: MappedFile, name: String, allowModuleRecords: Bool, weights: String? = nil) throws -> TorchCheckpoint {
    let policy: PicklePolicy = allowModuleRecords ? .moduleRecords : .stateDict
    let b = image.bytes
    let budget = ReadBudget(file: name, fileBytes: b.count)
    let decoded: TorchDecoded
    let source: TorchStorageSource
    if b.count >= 4 && b[0] == 0x50 && b[1] == 0x4B && b[2] == 0x03 && b[3] == 0x04 {
        let zip = try TorchZip(image: image, file: name, budget: budget)
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
    var unwrapper = TorchUnwrapper(arena: decoded.arena, file: name, weights: weights)
    try unwrapper.unwrap(decoded.root)
    var notes = decoded.notes + unwrapper.notes
    // A pickle may name any number of classes; the note lists the first few and the count.
    func listed(_ names: [String]) -> String { firstItems(names, 40, noun: "classes") }
    if !decoded.recordClasses.isEmpty {
        notes.append("module classes decoded as inert records (never called): \(listed(decoded.recordClasses))")
    }
    if !decoded.dataRecordClasses.isEmpty {
        notes.append("data objects decoded as inert records (never called, not weights): \(listed(decoded.dataRecordClasses))")
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
        // Views count at their materialised size: a stride-0 `expand` of one stored element is
        // as large here as the tensor it stands for.
        try budget.charge(ReadLimits.float32Bytes(entry.tensor.shape.reduce(1, *)), place: entry.name,
                          what: "tensor '\(entry.name)' \(entry.tensor.shape) as float32", probe: false)
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
                           notes: notes, ignored: unwrapper.ignored, modules: unwrapper.modules, weightsPath: unwrapper.chosenPath)
}

