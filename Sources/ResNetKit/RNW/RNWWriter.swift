import Foundation

/// Writes a ``ResNetModel`` as a `.rnw` file.
///
/// The write is atomic (``AtomicOutput``): the destination is either left as it was or replaced by
/// the complete, flushed file; nothing else is left in its directory.
public enum RNWWriter {
    /// Writes `model` to `path`, tensors in the spec's parameter order.
    ///
    /// - Parameters:
    ///   - model: the model to store.
    ///   - path: the destination; replaced atomically when it exists.
    ///   - parity: the parity checks the model passed, stored in the manifest.
    ///   - provenance: where the weights came from (source file, its SHA-256, tool version).
    ///   - metadata: free key/value pairs stored in the manifest.
    ///   - dtype: storage type of the conv and dense weights: `.float32` (default, bit-exact),
    ///     `.float16`, `.bfloat16` (round to nearest even) or `.int8` (symmetric, one float32 scale
    ///     per output channel). BatchNorm parameters and biases are always float32. A file with any
    ///     narrow tensor is stamped format 1.1; an all-float32 file stays 1.0 so older readers open it.
    /// - Throws: ``ResNetError/mapping(file:reason:)`` when the model's tensors do not match its
    ///   spec, ``ResNetError/unsupported(file:place:reason:)`` for a non-finite weight at int8,
    ///   ``ResNetError/io(file:reason:)`` with the operating system's message when writing fails.
    public static func write(_ model: ResNetModel, to path: String, dtype: DType = .float32, provenance: RNWProvenance? = nil,
                             parity: [RNWParityRecord] = [], metadata: [String: String] = [:]) throws {
        try write(model, to: path, dtype: dtype, provenance: provenance, parity: parity, metadata: metadata, failAfterBytes: nil)
    }

    /// `failAfterBytes` makes the write fail once that many bytes are in the temporary file, so
    /// tests can prove a failure halfway through leaves nothing behind.
    static func write(_ model: ResNetModel, to path: String, dtype: DType = .float32, provenance: RNWProvenance?,
                      parity: [RNWParityRecord], metadata: [String: String], failAfterBytes: Int?) throws {
        try model.validate(file: path)
        let out = try AtomicOutput(destination: path)
        defer { out.discard() }
        try write(model, into: out, dtype: dtype, provenance: provenance, parity: parity, metadata: metadata, failAfterBytes: failAfterBytes)
        try out.commit()
    }

    /// Writes the file into `out` without putting it in place: the caller reads it back through
    /// `out.path` first, then commits.
    static func write(_ model: ResNetModel, into out: AtomicOutput, dtype: DType = .float32, provenance: RNWProvenance?,
                      parity: [RNWParityRecord], metadata: [String: String], failAfterBytes: Int? = nil) throws {
        let path = out.destination
        try model.validate(file: path)
        let ordered = try encodeModel(model, dtype: dtype, file: path)
        let (header, manifest, entries) = try layout(spec: model.spec, tensors: ordered, provenance: provenance,
                                                      parity: parity, metadata: metadata, file: path)
        var sink = FileSink(fd: out.fd, file: path, failAfter: failAfterBytes)
        try sink.write(header)
        try sink.write(manifest)
        for (entry, item) in zip(entries, ordered) {
            try sink.writeZeros(Int(entry.offset) - sink.position)
            try sink.write(item.bytes)
        }
    }

    /// Computes the header, manifest bytes and tensor entries. Tensor offsets depend on the
    /// manifest's length, which depends on the offsets' varint sizes; the data start only grows,
    /// so a few rounds reach a fixed point (any slack becomes zero padding).
    static func layout(spec: ResNetSpec, tensors: [EncodedTensor], provenance: RNWProvenance?,
                       parity: [RNWParityRecord], metadata: [String: String], file: String)
        throws -> (header: [UInt8], manifest: [UInt8], entries: [RNWTensorEntry]) {
        let described = tensors.map { item in
            RNWStoredTensor(name: item.name, dtype: item.dtype, shape: item.shape, length: UInt64(item.bytes.count),
                            checksum: item.bytes.withUnsafeBytes { xxHash64($0) }, scales: item.scales)
        }
        return try layout(spec: spec, described: described, provenance: provenance, parity: parity, metadata: metadata, file: file)
    }

    /// ``layout(spec:tensors:provenance:parity:metadata:file:)`` from each tensor's length and
    /// checksum alone, so a streaming writer can lay out a file without holding its data.
    static func layout(spec: ResNetSpec, described tensors: [RNWStoredTensor], provenance: RNWProvenance?,
                       parity: [RNWParityRecord], metadata: [String: String], file: String)
        throws -> (header: [UInt8], manifest: [UInt8], entries: [RNWTensorEntry]) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let specJSON: [UInt8]
        do { specJSON = Array(try encoder.encode(spec)) } catch {
            throw ResNetError.invalidInput(file: file, place: "spec", reason: "cannot encode as JSON: \(error)")
        }
        // The oldest version that can describe the file, so that float32 files stay readable by 1.0 readers.
        let minor: UInt16 = tensors.allSatisfy({ $0.dtype == .float32 }) ? 0 : RNWFormatVersion.minor

        var dataStart: UInt64 = 0
        while true {
            var entries: [RNWTensorEntry] = []
            var offset = dataStart
            for item in tensors {
                let length = item.length
                entries.append(RNWTensorEntry(name: item.name, dtype: item.dtype, shape: item.shape,
                                              offset: offset, length: length, checksum: item.checksum, scales: item.scales))
                offset = alignedUp(offset + length)!
            }
            let manifest = RNWManifest(formatMajor: UInt32(RNWFormatVersion.major), formatMinor: UInt32(minor),
                                       specJSON: specJSON, tensors: entries, provenance: provenance,
                                       parity: parity, metadata: metadata)
            let bytes = try packManifest(manifest, file: file)
            let needed = alignedUp(UInt64(RNWHeader.size) + UInt64(bytes.count))!
            if needed <= dataStart || (tensors.isEmpty && dataStart == 0) {
                let header = RNWHeader(major: RNWFormatVersion.major, minor: minor, flags: 0,
                                       manifestLength: UInt64(bytes.count),
                                       manifestChecksum: bytes.withUnsafeBytes { xxHash64($0) })
                return (header.encoded(), bytes, entries)
            }
            dataStart = needed
        }
    }
}

/// The raw little-endian bytes of float32 values, without copying on little-endian hosts.
func withLittleEndianBytes<R>(_ values: [Float], _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    #if _endian(big)
    let swapped = values.map { $0.bitPattern.littleEndian }
    return try swapped.withUnsafeBytes(body)
    #else
    return try values.withUnsafeBytes(body)
    #endif
}

/// What the layout needs to know of one stored tensor: everything but its bytes.
struct RNWStoredTensor {
    var name: String
    var dtype: DType
    var shape: [Int]
    var length: UInt64
    var checksum: UInt64
    var scales: [Float]
}

/// Sequential writes from the start of the file, through a ``PositionalSink``.
private struct FileSink {
    private var sink: PositionalSink
    private(set) var position = 0

    init(fd: Int32, file: String, failAfter: Int?) {
        sink = PositionalSink(fd: fd, file: file, failAfter: failAfter)
    }

    mutating func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    mutating func writeZeros(_ count: Int) throws {
        if count > 0 { try write([UInt8](repeating: 0, count: count)) }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        try sink.write(bytes, at: position)
        position += bytes.count
    }
}

/// Positioned writes with the OS error in every failure; `failAfter` injects a failure once that
/// many bytes were written (tests of the no-output-on-failure rule).
struct PositionalSink {
    let fd: Int32
    let file: String
    let failAfter: Int?
    private(set) var written = 0

    init(fd: Int32, file: String, failAfter: Int?) {
        self.fd = fd; self.file = file; self.failAfter = failAfter
    }

    mutating func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            var chunk = min(bytes.count - done, 1 << 24)
            if let limit = failAfter {
                if written >= limit {
                    throw ResNetError.io(file: file, reason: "write failed: injected failure after \(limit) bytes")
                }
                chunk = min(chunk, limit - written)
            }
            let n = pwrite(fd, bytes.baseAddress! + done, chunk, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ResNetError.io(file: file, reason: "write failed at byte \(offset + done): \(errnoText())")
            }
            done += n
            written += n
        }
    }
}
