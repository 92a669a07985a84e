// The only Swift file that touches the protoc-c generated types: converts between RNWManifest and
// the wire bytes of the protobuf `rnw.Manifest` (tools/rnw.proto). C memory never escapes a call.
import CRNWProto
import Foundation

/// Owns every C allocation made while building a message, so one `defer` frees them all.
private final class CAllocations {
    private var pointers: [UnsafeMutableRawPointer] = []

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        pointers.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// `count` uninitialised-but-zeroed slots (never a zero-size allocation).
    func array<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let bytes = max(count, 1) * MemoryLayout<T>.stride
        let raw = calloc(1, bytes)!
        pointers.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    func freeAll() {
        for p in pointers.reversed() { free(p) }
        pointers.removeAll()
    }
}

private func cDType(_ d: DType) -> Rnw__DType? {
    switch d {
    case .float32: return RNW__DTYPE__F32
    case .float16: return RNW__DTYPE__F16
    case .bfloat16: return RNW__DTYPE__BF16
    case .int8: return RNW__DTYPE__I8
    default: return nil
    }
}

private func swiftDType(_ d: Rnw__DType) -> DType? {
    switch d {
    case RNW__DTYPE__F32: return .float32
    case RNW__DTYPE__F16: return .float16
    case RNW__DTYPE__BF16: return .bfloat16
    case RNW__DTYPE__I8: return .int8
    default: return nil
    }
}

/// Strings go through C strings, which would silently end at an embedded NUL.
private func checkNoNUL(_ s: String, _ what: String, file: String) throws {
    if s.utf8.contains(0) {
        throw ResNetError.invalidInput(file: file, place: "manifest \(what)", reason: "text contains a NUL character")
    }
}

/// Serialises `manifest` to protobuf wire bytes.
func packManifest(_ manifest: RNWManifest, file: String) throws -> [UInt8] {
    let a = CAllocations()
    defer { a.freeAll() }

    let m = a.array(Rnw__Manifest.self, count: 1)
    rnw__manifest__init(m)
    m.pointee.format_major = manifest.formatMajor
    m.pointee.format_minor = manifest.formatMinor

    let spec = a.array(UInt8.self, count: manifest.specJSON.count)
    spec.update(from: manifest.specJSON, count: manifest.specJSON.count)
    m.pointee.spec_json = ProtobufCBinaryData(len: manifest.specJSON.count, data: spec)

    let entries = a.array(UnsafeMutablePointer<Rnw__TensorEntry>?.self, count: manifest.tensors.count)
    for (i, t) in manifest.tensors.enumerated() {
        try checkNoNUL(t.name, "tensor name", file: file)
        guard let dtype = cDType(t.dtype) else {
            throw ResNetError.unsupported(file: file, place: "tensor \(t.name)", reason: "dtype \(t.dtype.rawValue) cannot be stored in .rnw")
        }
        let e = a.array(Rnw__TensorEntry.self, count: 1)
        rnw__tensor_entry__init(e)
        e.pointee.name = a.string(t.name)
        e.pointee.dtype = dtype
        let shape = a.array(Int64.self, count: t.shape.count)
        for (d, n) in t.shape.enumerated() { shape[d] = Int64(n) }
        e.pointee.n_shape = t.shape.count
        e.pointee.shape = shape
        e.pointee.offset = t.offset
        e.pointee.length = t.length
        e.pointee.checksum = t.checksum
        let scales = a.array(Float.self, count: t.scales.count)
        scales.update(from: t.scales, count: t.scales.count)
        e.pointee.n_scales = t.scales.count
        e.pointee.scales = scales
        entries[i] = e
    }
    m.pointee.n_tensors = manifest.tensors.count
    m.pointee.tensors = entries

    if let p = manifest.provenance {
        for (what, s) in [("provenance", p.sourceFormat), ("provenance", p.sourcePath), ("provenance", p.sourceSHA256),
                          ("provenance", p.scheme), ("provenance", p.toolVersion)] + p.unwrappingNotes.map({ ("provenance", $0) }) {
            try checkNoNUL(s, what, file: file)
        }
        let c = a.array(Rnw__Provenance.self, count: 1)
        rnw__provenance__init(c)
        c.pointee.source_format = a.string(p.sourceFormat)
        c.pointee.source_path = a.string(p.sourcePath)
        c.pointee.source_sha256 = a.string(p.sourceSHA256)
        c.pointee.scheme = a.string(p.scheme)
        let notes = a.array(UnsafeMutablePointer<CChar>?.self, count: p.unwrappingNotes.count)
        for (i, n) in p.unwrappingNotes.enumerated() { notes[i] = a.string(n) }
        c.pointee.n_unwrapping_notes = p.unwrappingNotes.count
        c.pointee.unwrapping_notes = notes
        c.pointee.tool_version = a.string(p.toolVersion)
        m.pointee.provenance = c
    }

    let records = a.array(UnsafeMutablePointer<Rnw__ParityRecord>?.self, count: manifest.parity.count)
    for (i, r) in manifest.parity.enumerated() {
        try checkNoNUL(r.reference, "parity reference", file: file)
        try checkNoNUL(r.policy, "parity policy", file: file)
        let c = a.array(Rnw__ParityRecord.self, count: 1)
        rnw__parity_record__init(c)
        c.pointee.passed = r.passed ? 1 : 0
        c.pointee.reference = a.string(r.reference)
        c.pointee.max_abs_error = r.maxAbsError
        c.pointee.max_rel_error = r.maxRelError
        c.pointee.cosine = r.cosine
        c.pointee.top1_agreement = r.top1Agreement
        c.pointee.tolerance = r.tolerance
        c.pointee.policy = a.string(r.policy)
        records[i] = c
    }
    m.pointee.n_parity = manifest.parity.count
    m.pointee.parity = records

    // Sorted so that the same manifest always packs to the same bytes.
    let keys = manifest.metadata.keys.sorted()
    let meta = a.array(UnsafeMutablePointer<Rnw__Manifest__MetadataEntry>?.self, count: keys.count)
    for (i, k) in keys.enumerated() {
        let v = manifest.metadata[k]!
        try checkNoNUL(k, "metadata key", file: file)
        try checkNoNUL(v, "metadata value for \(k)", file: file)
        let c = a.array(Rnw__Manifest__MetadataEntry.self, count: 1)
        rnw__manifest__metadata_entry__init(c)
        c.pointee.key = a.string(k)
        c.pointee.value = a.string(v)
        meta[i] = c
    }
    m.pointee.n_metadata = keys.count
    m.pointee.metadata = meta

    let size = rnw__manifest__get_packed_size(m)
    var out = [UInt8](repeating: 0, count: size)
    let written = out.withUnsafeMutableBufferPointer { rnw__manifest__pack(m, $0.baseAddress!) }
    guard written == size else {
        throw ResNetError.io(file: file, reason: "protobuf-c packed \(written) manifest bytes, expected \(size)")
    }
    return out
}

private func text(_ p: UnsafeMutablePointer<CChar>?) -> String {
    p.map { String(cString: $0) } ?? ""
}

/// Parses protobuf wire bytes into a manifest. Only the wire format is checked here; the reader
/// validates meaning (offsets, shapes, names).
func unpackManifest(_ bytes: UnsafeRawBufferPointer, file: String) throws -> RNWManifest {
    guard let m = rnw__manifest__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
        throw ResNetError.invalidInput(file: file, place: "manifest", reason: "not a valid protobuf rnw.Manifest (protobuf-c could not unpack it)")
    }
    defer { rnw__manifest__free_unpacked(m, nil) }
    let c = m.pointee

    var tensors: [RNWTensorEntry] = []
    tensors.reserveCapacity(c.n_tensors)
    for i in 0..<c.n_tensors {
        guard let e = c.tensors[i]?.pointee else {
            throw ResNetError.invalidInput(file: file, place: "manifest tensor #\(i)", reason: "missing entry")
        }
        let name = text(e.name)
        guard let dtype = swiftDType(e.dtype) else {
            throw ResNetError.invalidInput(file: file, place: "manifest tensor \(name)", reason: "unknown dtype value \(e.dtype.rawValue)")
        }
        var shape: [Int] = []
        for d in 0..<e.n_shape {
            let n = e.shape[d]
            guard n >= 0, let v = Int(exactly: n) else {
                throw ResNetError.invalidInput(file: file, place: "manifest tensor \(name)", reason: "dimension \(d) is \(n)")
            }
            shape.append(v)
        }
        let scales = e.n_scales == 0 ? [] : Array(UnsafeBufferPointer(start: e.scales, count: e.n_scales))
        tensors.append(RNWTensorEntry(name: name, dtype: dtype, shape: shape, offset: e.offset, length: e.length,
                                      checksum: e.checksum, scales: scales))
    }

    var provenance: RNWProvenance?
    if let p = c.provenance?.pointee {
        provenance = RNWProvenance(
            sourceFormat: text(p.source_format), sourcePath: text(p.source_path), sourceSHA256: text(p.source_sha256),
            scheme: text(p.scheme), unwrappingNotes: (0..<p.n_unwrapping_notes).map { text(p.unwrapping_notes[$0]) },
            toolVersion: text(p.tool_version))
    }

    var parity: [RNWParityRecord] = []
    for i in 0..<c.n_parity {
        guard let r = c.parity[i]?.pointee else { continue }
        parity.append(RNWParityRecord(passed: r.passed != 0, reference: text(r.reference), maxAbsError: r.max_abs_error,
                                      maxRelError: r.max_rel_error, cosine: r.cosine, top1Agreement: r.top1_agreement,
                                      tolerance: r.tolerance, policy: text(r.policy)))
    }

    var metadata: [String: String] = [:]
    for i in 0..<c.n_metadata {
        guard let kv = c.metadata[i]?.pointee else { continue }
        metadata[text(kv.key)] = text(kv.value)
    }

    let spec = c.spec_json.len == 0 ? [] : Array(UnsafeBufferPointer(start: c.spec_json.data, count: c.spec_json.len))
    return RNWManifest(formatMajor: c.format_major, formatMinor: c.format_minor, specJSON: spec, tensors: tensors,
                       provenance: provenance, parity: parity, metadata: metadata)
}
