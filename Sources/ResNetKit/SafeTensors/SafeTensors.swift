import Foundation

// safetensors (huggingface): 8-byte little-endian header length N, N bytes of JSON
// `{"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
// then the data buffer; offsets are relative to the buffer. Validation follows the format's own
// rules: a capped header, offsets inside the buffer, tensors covering the buffer without holes or
// overlaps, and every byte range exactly shape × element size.

/// Limits on what a safetensors header may claim.
enum SafeTensorsLimits {
    /// The reference implementation refuses headers over 100 MB.
    static let maxHeaderBytes = 100_000_000
    static let maxRank = 8
    /// Entries of one header: the limit of every checkpoint reader (``TorchLimits/maxTensors``).
    static let maxTensors = TorchLimits.maxTensors
}

/// Element types of the safetensors format, with their names in the header.
private let safeTensorsDTypes: [String: DType] = [
    "F32": .float32, "F16": .float16, "BF16": .bfloat16, "F64": .float64,
    "I64": .int64, "I32": .int32, "I8": .int8, "U8": .uint8, "BOOL": .bool,
]

/// The header names of the dtypes this tool reads, for messages and the writer.
func safeTensorsName(_ d: DType) -> String {
    safeTensorsDTypes.first { $0.value == d }!.key
}

/// One tensor entry of a safetensors header after validation.
struct SafeTensorsEntry: Sendable {
    var name: String
    var dtype: DType
    var shape: [Int]
    /// Byte range inside the data buffer.
    var begin: Int
    var end: Int
}

/// A validated safetensors file: entries in buffer order, metadata, and where the buffer starts.
struct SafeTensorsLayout: Sendable {
    var entries: [SafeTensorsEntry]
    var metadata: [String: String]
    var dataStart: Int
}

/// Parses and validates the header of `bytes` (the whole file). Nothing in the header is trusted.
func parseSafeTensorsHeader(_ bytes: UnsafeRawBufferPointer, file: String, budget: ReadBudget? = nil) throws -> SafeTensorsLayout {
    func bad(_ place: String, _ reason: String) -> ResNetError {
        ResNetError.invalidInput(file: file, place: place, reason: reason)
    }
    guard bytes.count >= 8 else { throw bad("header length", "file has \(bytes.count) bytes, fewer than the 8-byte header length") }
    let n = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    let limits = ReadLimits.current
    guard n <= UInt64(limits.maxHeaderBytes) else {
        throw limits.exceeded(.headerBytes, file: file, place: "header length", found: "the JSON header claims \(n) bytes")
    }
    guard n <= UInt64(SafeTensorsLimits.maxHeaderBytes) else {
        throw bad("header length", "header claims \(n) bytes; the limit is \(SafeTensorsLimits.maxHeaderBytes)")
    }
    let headerLength = Int(n)
    guard headerLength <= bytes.count - 8 else {
        throw bad("header length", "header claims \(headerLength) bytes but only \(bytes.count - 8) follow")
    }
    let raw = UnsafeRawBufferPointer(rebasing: bytes[8 ..< 8 + headerLength])
    // Counted on the bytes first, so that a header listing far more entries than are read is
    // refused before it is parsed (parsing tens of megabytes of entries costs seconds).
    let listed = topLevelMemberCount(raw)
    guard listed <= SafeTensorsLimits.maxTensors + 1 else {   // + 1: __metadata__
        throw bad("header", "lists \(listed) entries; at most \(SafeTensorsLimits.maxTensors) tensors are read from one file")
    }
    try budget?.charge(headerLength, place: "header", what: "a copy of the JSON header")
    let header = Data(raw)
    guard header.first == UInt8(ascii: "{") else { throw bad("header", "the JSON header does not start with '{'") }
    // Strict JSON, as the reference implementation (serde_json) reads it: no NaN / Infinity.
    let json = try parseJSON(header, file: file, place: "header", allowsNonFinite: false, budget: budget)
    guard let object = json.object else { throw bad("header", "the JSON header is not an object") }
    guard object.count <= SafeTensorsLimits.maxTensors else {
        throw bad("header", "lists \(object.count) entries; at most \(SafeTensorsLimits.maxTensors) tensors are read from one file")
    }
    var metadata: [String: String] = [:]
    var entries: [SafeTensorsEntry] = []
    var totalBytes = 0
    for (name, value) in object {
        if name == "__metadata__" {
            guard let m = value.object else { throw bad("__metadata__", "not an object of strings") }
            for (k, v) in m {
                guard let s = v.string else { throw bad("__metadata__.\(k)", "metadata values must be strings") }
                metadata[k] = s
            }
            continue
        }
        let place = "tensor '\(name)'"
        guard let dtypeName = value["dtype"]?.string else { throw bad(place, "no string 'dtype'") }
        guard let dtype = safeTensorsDTypes[dtypeName] else {
            throw ResNetError.unsupported(file: file, place: place, reason: "dtype \(dtypeName) (readable: \(safeTensorsDTypes.keys.sorted().joined(separator: ", ")))")
        }
        guard let shapeValues = value["shape"]?.array, shapeValues.count <= SafeTensorsLimits.maxRank else {
            throw bad(place, "'shape' must be a list of at most \(SafeTensorsLimits.maxRank) sizes")
        }
        var shape: [Int] = []
        for s in shapeValues {
            guard let d = s.int, d >= 0, d <= Int(Int32.max) else { throw bad(place, "shape entry \(s) is not a size") }
            shape.append(d)
        }
        guard let offsets = value["data_offsets"]?.array, offsets.count == 2,
              let begin = offsets[0].int, let end = offsets[1].int, begin >= 0, end >= begin else {
            throw bad(place, "'data_offsets' must be [begin, end] with 0 <= begin <= end")
        }
        var elements = 1
        for d in shape {
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            guard !o else { throw bad(place, "shape \(shape) overflows") }
            elements = p
        }
        let decoded = ReadLimits.float32Bytes(elements)
        guard decoded <= limits.maxTensorBytes else {
            throw limits.exceeded(.tensorBytes, file: file, place: place, found: "shape \(shape) needs \(decoded) bytes as float32")
        }
        let (total, totalOverflow) = totalBytes.addingReportingOverflow(decoded)
        guard !totalOverflow, total <= limits.maxTotalBytes else {
            throw limits.exceeded(.totalBytes, file: file, place: place, found: "the tensors up to this one need \(total) bytes as float32")
        }
        totalBytes = total
        let (bytesNeeded, o) = elements.multipliedReportingOverflow(by: dtype.size)
        guard !o, bytesNeeded == end - begin else {
            throw bad(place, "shape \(shape) of \(dtypeName) needs \(o ? "too many" : String(bytesNeeded)) bytes but data_offsets span \(end - begin)")
        }
        entries.append(SafeTensorsEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
    }
    // Buffer order; names break ties only between empty tensors at the same offset.
    entries.sort { a, b in
        if a.begin != b.begin { return a.begin < b.begin }
        if a.end != b.end { return a.end < b.end }
        return a.name < b.name
    }
    let dataStart = 8 + headerLength
    let bufferLength = bytes.count - dataStart
    var cursor = 0
    for e in entries {
        guard e.begin == cursor else {
            throw bad("tensor '\(e.name)'", e.begin < cursor
                ? "bytes \(e.begin)..<\(e.end) overlap the previous tensor, which ends at \(cursor)"
                : "bytes \(cursor)..<\(e.begin) before it belong to no tensor")
        }
        cursor = e.end
    }
    guard cursor == bufferLength else {
        throw bad("data buffer", cursor > bufferLength
            ? "tensors need \(cursor) bytes but the file holds \(bufferLength) after the header (truncated?)"
            : "\(bufferLength - cursor) bytes after the last tensor belong to no tensor")
    }
    return SafeTensorsLayout(entries: entries, metadata: metadata, dataStart: dataStart)
}

/// Members of the JSON object `text` holds, counted without parsing it: commas outside strings at
/// the object's own level, plus one. Exact for valid JSON; the parser still checks the syntax.
func topLevelMemberCount(_ text: UnsafeRawBufferPointer) -> Int {
    var depth = 0, commas = 0, inString = false, escaped = false, empty = true
    for b in text {
        if inString {
            if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inString = false }
            continue
        }
        switch b {
        case UInt8(ascii: "\""): inString = true; if depth == 1 { empty = false }
        case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
        case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
        case UInt8(ascii: ","): if depth == 1 { commas += 1 }
        default: break
        }
    }
    return empty ? 0 : commas + 1
}

/// Reads a safetensors file as a PyTorch-style state dict, so the PyTorch naming schemes map it.
///
/// Tensors come back in buffer order as float32 (the stored dtype is kept in `sourceDType`);
/// BN step counters are listed as ignored, like the PyTorch reader does.
public func readSafeTensors(path: String) throws -> TorchCheckpoint {
    let data: Data
    try InputFile.requireRegular(path)   // Foundation would block on a FIFO
    do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
        throw ResNetError.io(file: path, reason: "cannot read: \(error.localizedDescription)")
    }
    return try data.withUnsafeBytes { raw -> TorchCheckpoint in
        let budget = ReadBudget(file: path, fileBytes: raw.count)
        let layout = try parseSafeTensorsHeader(raw, file: path, budget: budget)
        var tensors: [SourceTensor] = []
        var ignored: [String] = []
        for e in layout.entries {
            if e.name == "num_batches_tracked" || e.name.hasSuffix(".num_batches_tracked") { ignored.append(e.name); continue }
            let start = layout.dataStart + e.begin
            let slice = UnsafeRawBufferPointer(rebasing: raw[start ..< layout.dataStart + e.end])
            let load = elementLoader(e.dtype, bigEndian: false)
            let count = e.shape.reduce(1, *)
            try budget.charge(ReadLimits.float32Bytes(count), place: "tensor '\(e.name)'", what: "tensor \(e.shape) as float32")
            var values = [Float](repeating: 0, count: count)
            for i in 0..<count { values[i] = load(slice, i) }
            tensors.append(SourceTensor(name: e.name, sourceDType: e.dtype, tensor: Tensor(shape: e.shape, data: values)))
        }
        var notes: [String] = []
        if !ignored.isEmpty { notes.append("ignored \(ignored.count) BatchNorm step counter(s) (num_batches_tracked)") }
        if let format = layout.metadata["format"] { notes.append("safetensors metadata format=\(format)") }
        return TorchCheckpoint(path: path, container: "safetensors", tensors: tensors, notes: notes, ignored: ignored)
    }
}

/// One tensor to write: raw little-endian bytes of `dtype` in row-major order.
struct RawTensor: Sendable {
    var name: String
    var dtype: DType
    var shape: [Int]
    var bytes: [UInt8]

    /// A float32 tensor, stored little-endian.
    init(name: String, _ t: Tensor) {
        self.name = name; dtype = .float32; shape = t.shape
        bytes = t.data.withUnsafeBytes { raw in
            var out = [UInt8](raw)
            if UInt32(1).bigEndian == 1 {   // keep the file little-endian on any host
                for i in stride(from: 0, to: out.count, by: 4) { out[i..<i + 4].reverse() }
            }
            return out
        }
    }

    /// `t` stored at `dtype`: float32, or float16/bfloat16 rounded as the `.rnw` writer does.
    init(name: String, _ t: Tensor, dtype: DType, file: String) throws {
        self.init(name: name, t)
        if dtype != .float32 {
            self.dtype = dtype
            bytes = try encodeTensor(t, name: name, dtype: dtype, file: file).bytes
        }
    }

    /// A scalar int64 (`num_batches_tracked`).
    init(name: String, int64 value: Int64) {
        self.name = name; dtype = .int64; shape = []
        bytes = withUnsafeBytes(of: value.littleEndian) { [UInt8]($0) }
    }
}

/// Serialises tensors as a safetensors file, in the given order, with keys sorted in the header
/// as the reference writer does; the header is padded with spaces to a multiple of 8 bytes so the
/// buffer (and every float32 tensor in it) is aligned.
func safeTensorsBytes(_ tensors: [RawTensor], metadata: [String: String]) throws -> Data {
    // Written by hand: sizes must appear as JSON integers (`3`, never `3.0`), which strict readers require.
    var fields: [(String, String)] = []
    var offset = 0
    var seen = Set<String>()
    for t in tensors {
        guard seen.insert(t.name).inserted else { throw ResNetError.usage("duplicate tensor name \(t.name)") }
        let shape = t.shape.map(String.init).joined(separator: ",")
        fields.append((t.name, "{\"dtype\":\"\(safeTensorsName(t.dtype))\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}"))
        offset += t.bytes.count
    }
    if !metadata.isEmpty {
        let m = metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }
        fields.append(("__metadata__", "{" + m.joined(separator: ",") + "}"))
    }
    fields.sort { $0.0 < $1.0 }
    var header = Array(("{" + fields.map { "\(jsonString($0.0)):\($0.1)" }.joined(separator: ",") + "}").utf8)
    while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
    var out = Data(capacity: 8 + header.count + offset)
    withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: header)
    for t in tensors { out.append(contentsOf: t.bytes) }
    return out
}

/// A JSON string literal for `s`.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}
