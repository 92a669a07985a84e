import Foundation

/// An opened `.rnw` file: the validated manifest and spec, with tensors read on demand.
///
/// Opening maps the file read-only and checks every byte of it: header checksum, manifest
/// checksum, the placement of every tensor, zero padding, and (unless skipped) every tensor's
/// checksum. Any damage is reported as ``ResNetError/invalidInput(file:place:reason:)`` naming
/// the header, the manifest or the tensor.
public final class RNWReader: @unchecked Sendable {
    // @unchecked: the mapping is read-only and never changes after init.

    /// The path the file was opened from.
    public let path: String
    /// The decoded manifest.
    public let manifest: RNWManifest
    /// The model structure stored in the manifest.
    public let spec: ResNetSpec
    private let storage: MappedFile
    private let index: [String: Int]

    /// Opens and validates the file at `path`.
    ///
    /// - Parameters:
    ///   - path: The file to open.
    ///   - verifyChecksums: Check each tensor's xxHash64 (a full read of the file); the header and
    ///     manifest checksums are always checked.
    /// - Throws: ``ResNetError/invalidInput(file:place:reason:)`` for a damaged or malformed file,
    ///   ``ResNetError/unsupported(file:place:reason:)`` for a newer major version or unknown flags,
    ///   ``ResNetError/io(file:reason:)`` when the file cannot be read.
    public convenience init(path: String, verifyChecksums: Bool = true) throws {
        let storage = try MappedFile(path: path)
        if verifyChecksums { storage.prefault() }
        try self.init(storage: storage, name: path, verifyChecksums: verifyChecksums)
    }

    /// Validates an `.rnw` image held in memory (the bytes are copied); `name` stands for the file
    /// in messages. Checks exactly what ``init(path:verifyChecksums:)`` checks.
    public convenience init(data: Data, name: String, verifyChecksums: Bool = true) throws {
        try self.init(storage: MappedFile(copying: data, name: name), name: name, verifyChecksums: verifyChecksums)
    }

    /// The checks both public initialisers share, on bytes already mapped or copied.
    private init(storage: MappedFile, name: String, verifyChecksums: Bool) throws {
        let parsed = try parseRNW(storage.bytes, file: name, verifyChecksums: verifyChecksums)
        self.path = name
        self.storage = storage
        self.manifest = parsed.manifest
        self.spec = parsed.spec
        var index: [String: Int] = [:]
        for (i, e) in parsed.manifest.tensors.enumerated() { index[e.name] = i }
        self.index = index
    }

    /// Reads the file at `path` into a model: the same checks and result as
    /// `RNWReader(path:verifyChecksums:).model()`, but with checksums each tensor is hashed in the
    /// same pass that copies it, and nothing is returned unless every checksum matched.
    public static func readModel(at path: String, verifyChecksums: Bool = true) throws -> ResNetModel {
        guard verifyChecksums else { return try RNWReader(path: path, verifyChecksums: false).model() }
        return try openAndRead(path: path).model
    }

    /// Opens `path` and copies every tensor out with every checksum verified, in one pass over the
    /// tensor bytes: a float32 tensor is hashed by the loop that copies it (``xxHash64Copying``),
    /// a narrower one is hashed and then widened while its bytes are still in cache. Opening with
    /// ``init(path:verifyChecksums:)`` and then calling ``model()`` reads the file twice (docs/BENCHMARKS.md,
    /// "Opening a .rnw"). The returned reader skipped tensor checksums itself, but every tensor
    /// was verified before this returns; on a mismatch it throws, in manifest order, naming the tensor.
    static func openAndRead(path: String) throws -> (reader: RNWReader, model: ResNetModel) {
        let reader = try RNWReader(path: path, verifyChecksums: false)
        reader.storage.prefault()
        var tensors: [String: Tensor] = [:]
        for e in reader.manifest.tensors {
            // Offsets, lengths, dtypes and scales were checked when the file was opened.
            let bytes = UnsafeRawBufferPointer(rebasing: reader.storage.bytes[Int(e.offset)..<Int(e.offset + e.length)])
            let sum: UInt64
            let data: [Float]
            if e.dtype == .float32 {
                var s: UInt64 = 0
                data = [Float](unsafeUninitializedCapacity: bytes.count / 4) { buffer, initialized in
                    if let dst = buffer.baseAddress { s = xxHash64Copying(bytes, to: UnsafeMutableRawPointer(dst)) }
                    #if _endian(big)
                    for i in 0..<buffer.count { buffer[i] = Float(bitPattern: UInt32(littleEndian: buffer[i].bitPattern)) }
                    #endif
                    initialized = bytes.count / 4
                }
                if bytes.isEmpty { s = xxHash64(bytes) }
                sum = s
            } else {
                sum = xxHash64(bytes)
                data = decodeTensor(bytes, dtype: e.dtype, shape: e.shape, scales: e.scales)
            }
            try verifyTensorChecksums([e], [sum], file: path)
            tensors[e.name] = Tensor(shape: e.shape, data: data)
        }
        return (reader, ResNetModel(spec: reader.spec, tensors: tensors))
    }

    /// The entry of the tensor with canonical name `name`, if the file has one.
    public func entry(named name: String) -> RNWTensorEntry? {
        index[name].map { manifest.tensors[$0] }
    }

    /// Copies one tensor out of the file as float32 without touching the others; float16,
    /// bfloat16 and int8 tensors are widened (int8: `q × scale` of its output channel).
    ///
    /// - Throws: ``ResNetError/invalidInput(file:place:reason:)`` when there is no such tensor.
    public func tensor(named name: String) throws -> Tensor {
        guard let e = entry(named: name) else {
            throw ResNetError.invalidInput(file: path, place: "tensor \(name)", reason: "no tensor with this name in the file")
        }
        // Offsets, lengths, dtypes and scales were checked when the file was opened.
        let bytes = UnsafeRawBufferPointer(rebasing: storage.bytes[Int(e.offset)..<Int(e.offset + e.length)])
        return Tensor(shape: e.shape, data: decodeTensor(bytes, dtype: e.dtype, shape: e.shape, scales: e.scales))
    }

    /// Calls `body` with a float32 tensor's bytes inside the mapped file, without copying them.
    ///
    /// The buffer is little-endian float32, valid only during the call. Returns nil when the
    /// tensor is stored at another dtype (use ``tensor(named:)``, which converts).
    /// - Throws: ``ResNetError/invalidInput(file:place:reason:)`` when there is no such tensor.
    public func withFloat32Bytes<R>(named name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        guard let e = entry(named: name) else {
            throw ResNetError.invalidInput(file: path, place: "tensor \(name)", reason: "no tensor with this name in the file")
        }
        guard e.dtype == .float32 else { return nil }
        return try body(UnsafeRawBufferPointer(rebasing: storage.bytes[Int(e.offset)..<Int(e.offset + e.length)]))
    }

    /// Copies every tensor into a float32 ``ResNetModel``.
    public func model() throws -> ResNetModel {
        // Every page is about to be read: map them in one call rather than fault by fault.
        storage.prefault()
        var tensors: [String: Tensor] = [:]
        for e in manifest.tensors { tensors[e.name] = try tensor(named: e.name) }
        return ResNetModel(spec: spec, tensors: tensors)
    }
}

private func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02X", $0) }.joined(separator: " ")
}

private func hex64(_ v: UInt64) -> String { "0x" + String(v, radix: 16, uppercase: false) }

/// Validates a whole `.rnw` image and decodes its manifest and spec. Nothing from the file is
/// trusted: every length and offset is checked before it is used.
func parseRNW(_ bytes: UnsafeRawBufferPointer, file: String, verifyChecksums: Bool)
    throws -> (manifest: RNWManifest, spec: ResNetSpec) {
    func corrupt(_ place: String, _ reason: String) -> ResNetError {
        .invalidInput(file: file, place: place, reason: reason)
    }
    let fileSize = UInt64(bytes.count)

    // Header.
    let magicSeen = Array(bytes.prefix(RNWHeader.magic.count))
    guard magicSeen == Array(RNWHeader.magic.prefix(magicSeen.count)) else {
        throw corrupt("header bytes 0..<8", "magic is \(hex(magicSeen)), expected \(hex(RNWHeader.magic)): not an .rnw file or damaged")
    }
    guard bytes.count >= RNWHeader.size else {
        throw corrupt("header", "file is \(bytes.count) bytes, shorter than the \(RNWHeader.size)-byte header: truncated")
    }
    let storedHeaderSum = readLE(bytes, RNWHeader.checksummedSize, as: UInt64.self)
    let headerSum = xxHash64(UnsafeRawBufferPointer(rebasing: bytes[0..<RNWHeader.checksummedSize]))
    guard storedHeaderSum == headerSum else {
        throw corrupt("header", "checksum mismatch (stored \(hex64(storedHeaderSum)), computed \(hex64(headerSum))): header is corrupt")
    }
    let major = readLE(bytes, 8, as: UInt16.self)
    let minor = readLE(bytes, 10, as: UInt16.self)
    let flags = readLE(bytes, 12, as: UInt32.self)
    let manifestLength = readLE(bytes, 16, as: UInt64.self)
    let storedManifestSum = readLE(bytes, 24, as: UInt64.self)
    guard major <= RNWFormatVersion.major else {
        throw ResNetError.unsupported(
            file: file, place: "header",
            reason: "format version \(major).\(minor) is newer than this reader's \(RNWFormatVersion.major).\(RNWFormatVersion.minor); a newer resnet-convert is needed")
    }
    guard major == RNWFormatVersion.major else {
        throw corrupt("header", "format major version \(major) was never released")
    }
    guard flags == 0 else {
        throw ResNetError.unsupported(file: file, place: "header",
                                      reason: "flags \(hex64(UInt64(flags))) are not defined in format \(RNWFormatVersion.major).\(RNWFormatVersion.minor)")
    }

    // Manifest.
    let manifestStart = UInt64(RNWHeader.size)
    guard manifestLength <= fileSize - manifestStart else {
        throw corrupt("manifest", "length \(manifestLength) runs past the end of the \(fileSize)-byte file: truncated")
    }
    let limits = ReadLimits.current
    guard manifestLength <= UInt64(limits.maxHeaderBytes) else {
        throw limits.exceeded(.headerBytes, file: file, place: "manifest", found: "the manifest is \(manifestLength) bytes")
    }
    let manifestEnd = manifestStart + manifestLength
    let manifestBytes = UnsafeRawBufferPointer(rebasing: bytes[Int(manifestStart)..<Int(manifestEnd)])
    let manifestSum = xxHash64(manifestBytes)
    guard manifestSum == storedManifestSum else {
        throw corrupt("manifest bytes \(manifestStart)..<\(manifestEnd)",
                      "checksum mismatch (header says \(hex64(storedManifestSum)), computed \(hex64(manifestSum))): manifest is corrupt")
    }
    let manifest = try unpackManifest(manifestBytes, file: file)
    guard manifest.formatMajor == UInt32(major), manifest.formatMinor == UInt32(minor) else {
        throw corrupt("manifest", "says format \(manifest.formatMajor).\(manifest.formatMinor) but the header says \(major).\(minor)")
    }
    let spec: ResNetSpec
    do { spec = try JSONDecoder().decode(ResNetSpec.self, from: Data(manifest.specJSON)) } catch {
        throw corrupt("manifest spec_json", "not a valid ResNetSpec: \(error)")
    }
    let expected = try specParameters(spec, file: file)

    // Tensor entries: placement, sizes, names, shapes.
    var seen = Set<String>()
    var totalBytes = 0
    for e in manifest.tensors {
        let place = "tensor \(e.name)"
        guard !e.name.isEmpty else { throw corrupt("manifest", "a tensor entry has an empty name") }
        guard seen.insert(e.name).inserted else { throw corrupt(place, "name appears more than once in the manifest") }
        var elements: UInt64 = 1
        for d in e.shape {
            let (p, overflow) = elements.multipliedReportingOverflow(by: UInt64(d))
            guard !overflow else { throw corrupt(place, "shape \(e.shape) overflows") }
            elements = p
        }
        let decoded = elements > UInt64(Int.max / 4) ? Int.max : ReadLimits.float32Bytes(Int(elements))
        guard decoded <= limits.maxTensorBytes else {
            throw limits.exceeded(.tensorBytes, file: file, place: place, found: "shape \(e.shape) needs \(decoded) bytes as float32")
        }
        totalBytes = totalBytes.addingReportingOverflow(decoded).overflow ? Int.max : totalBytes + decoded
        guard totalBytes <= limits.maxTotalBytes else {
            throw limits.exceeded(.totalBytes, file: file, place: place, found: "the tensors up to this one need \(totalBytes) bytes as float32")
        }
        let (byteCount, overflow) = elements.multipliedReportingOverflow(by: UInt64(e.dtype.size))
        guard !overflow, byteCount == e.length else {
            throw corrupt(place, "length \(e.length) does not equal \(e.shape) × \(e.dtype.size) bytes (\(e.dtype.rawValue))")
        }
        guard e.offset % RNWHeader.alignment == 0 else {
            throw corrupt(place, "offset \(e.offset) is not a multiple of \(RNWHeader.alignment)")
        }
        guard e.offset >= manifestEnd else {
            throw corrupt(place, "offset \(e.offset) lies inside the header or manifest (which end at \(manifestEnd))")
        }
        guard e.offset <= fileSize, e.length <= fileSize - e.offset else {
            throw corrupt(place, "bytes \(e.offset)..<\(e.offset &+ e.length) run past the end of the \(fileSize)-byte file: truncated")
        }
        if e.dtype == .int8 {
            guard let channels = e.shape.first, e.scales.count == channels else {
                throw corrupt(place, "int8 tensor needs one scale per output channel, has \(e.scales.count)")
            }
            if let bad = e.scales.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw corrupt(place, "int8 scale of output channel \(bad) is \(e.scales[bad]); scales must be finite and >= 0")
            }
        } else if !e.scales.isEmpty {
            throw corrupt(place, "scales are only allowed on int8 tensors")
        }
    }

    // The spec and the entries must describe the same tensors.
    var present: [String: RNWTensorEntry] = [:]
    for e in manifest.tensors { present[e.name] = e }
    for p in expected {
        guard let e = present[p.name] else { throw corrupt("tensor \(p.name)", "the spec needs it but the manifest has no entry") }
        guard e.shape == p.shape else { throw corrupt("tensor \(p.name)", "shape \(e.shape) but the spec needs \(p.shape)") }
    }
    if manifest.tensors.count != expected.count {
        let wanted = Set(expected.map(\.name))
        let extra = manifest.tensors.map(\.name).filter { !wanted.contains($0) }
        throw corrupt("tensor \(extra.first ?? "?")", "not a parameter of the spec")
    }

    // Every byte outside header, manifest and tensors is padding and must be zero; together with
    // the checksums this makes every byte of the file checked.
    func checkZero(_ from: UInt64, _ to: UInt64, _ place: String) throws {
        for i in Int(from)..<Int(to) where bytes[i] != 0 {
            throw corrupt(place, "padding byte at offset \(i) is \(bytes[i]), must be 0: file is corrupt")
        }
    }
    var cursor = manifestEnd
    var previous = "manifest"
    for e in manifest.tensors.sorted(by: { $0.offset < $1.offset }) {
        guard e.offset >= cursor else {
            throw corrupt("tensor \(e.name)", "bytes \(e.offset)..<\(e.offset + e.length) overlap \(previous), which ends at \(cursor)")
        }
        try checkZero(cursor, e.offset, "padding before tensor \(e.name)")
        cursor = e.offset + e.length
        previous = "tensor \(e.name)"
    }
    guard cursor == fileSize else {
        throw corrupt("end of file", "\(fileSize - cursor) bytes follow the end of \(previous) at \(cursor)")
    }

    if verifyChecksums {
        try verifyTensorChecksums(manifest.tensors, tensorChecksums(manifest.tensors, in: bytes), file: file)
    }
    return (manifest, spec)
}

/// Compares computed checksums with the manifest's, in manifest order, so that the tensor named
/// in the error does not depend on which thread finished first.
private func verifyTensorChecksums(_ entries: [RNWTensorEntry], _ sums: [UInt64], file: String) throws {
    for (e, sum) in zip(entries, sums) where sum != e.checksum {
        throw ResNetError.invalidInput(
            file: file, place: "tensor \(e.name) bytes \(e.offset)..<\(e.offset + e.length)",
            reason: "checksum mismatch (manifest says \(hex64(e.checksum)), computed \(hex64(sum))): tensor data is corrupt")
    }
}

/// Every tensor's xxHash64, in manifest order, hashed on up to four threads once the tensors
/// add up to more than 8 MB: hashing a whole model is a visible share of opening it, and it splits
/// evenly over cores (docs/BENCHMARKS.md, "Opening a .rnw"). Small files stay on the calling thread,
/// where starting threads would cost more than it saves. The entries' ranges were checked against the file.
private func tensorChecksums(_ entries: [RNWTensorEntry], in bytes: UnsafeRawBufferPointer) -> [UInt64] {
    let total = entries.reduce(UInt64(0)) { $0 + $1.length }
    let workers = total > 8 << 20 ? max(1, min(4, ProcessInfo.processInfo.activeProcessorCount)) : 1
    // Largest tensor first onto the least-loaded worker: loads end within one tensor of each other.
    var load = [UInt64](repeating: 0, count: workers)
    var assigned = [[Int]](repeating: [], count: workers)
    for i in entries.indices.sorted(by: { entries[$0].length > entries[$1].length }) {
        let w = load.indices.min { load[$0] < load[$1] }!
        assigned[w].append(i)
        load[w] += entries[i].length
    }
    var sums = [UInt64](repeating: 0, count: entries.count)
    sums.withUnsafeMutableBufferPointer { out in
        let out = out  // each worker writes only the indices assigned to it
        parallelChunks(workers, threads: workers, grain: 1) { range in
            for w in range {
                for i in assigned[w] {
                    let e = entries[i]
                    out[i] = xxHash64(UnsafeRawBufferPointer(rebasing: bytes[Int(e.offset)..<Int(e.offset + e.length)]))
                }
            }
        }
    }
    return sums
}

/// The spec's parameters, after checking the spec against the rules the forward pass relies on
/// (``ResNetSpec/structuralViolation()``): a file whose model could never run is refused when it is
/// read, whatever is done with it next, and the fields `ResNetSpec.parameters` indexes into are
/// known to be well formed.
private func specParameters(_ spec: ResNetSpec, file: String) throws -> [(name: String, shape: [Int])] {
    func bad(_ reason: String) -> ResNetError { .invalidInput(file: file, place: "manifest spec_json", reason: reason) }
    if let v = spec.structuralViolation() { throw bad(v.description) }
    let parameters = spec.parameters
    var names = Set<String>()
    for p in parameters where !names.insert(p.name).inserted {
        throw bad("two ops own a tensor named \(p.name)")
    }
    return parameters
}
