import Foundation

/// The resource limits every reader enforces on untrusted input, with defaults far above any real
/// ResNet checkpoint (a torchvision resnet152: largest tensor 9 MB, 240 MB in all, ~1,000 pickle
/// memo entries, nesting under 20, a 60 KB pickle; a Keras ResNet-152 config is under 1 MB).
///
/// A file that exceeds one is refused with ``ResNetError/invalidInput(file:place:reason:)`` (exit
/// 3) naming the limit, the value found and the CLI flag that raises it. Readers see the limits
/// of the innermost ``apply(_:)`` (or ``loadModel(path:arch:mapFile:weights:limits:)``), else ``standard``.
public struct ReadLimits: Sendable, Equatable {
    /// Bytes of one tensor once decoded to float32 (`--max-tensor-bytes`).
    public var maxTensorBytes: Int
    /// Bytes of all tensors of one file together, decoded to float32 (`--max-total-bytes`).
    public var maxTotalBytes: Int
    /// Entries in one pickle's memo (`--max-pickle-memo`).
    public var maxPickleMemo: Int
    /// Nesting of a pickle: open MARKs at once, and depth of nested modules walked
    /// (`--max-pickle-depth`).
    public var maxPickleDepth: Int
    /// Bytes of one metadata block read into memory: a pickle, a Keras model config
    /// (`config.json` or an HDF5 attribute), a safetensors JSON header, a `.rnw` manifest
    /// (`--max-header-bytes`).
    public var maxHeaderBytes: Int
    /// What reading one file may allocate (inflated zip members, tensors as float32, decoded
    /// configs and headers, all together) as a multiple of the file's own size, on top of
    /// the 64 MiB every file gets (`--max-expansion`). Real checkpoints need at
    /// most 4 (int8 storages read as float32); stride-0 views and zip bombs need hundreds.
    public var maxExpansion: Int = 16

    /// The defaults: tensor 2 GiB, total 8 GiB, memo 2^20 entries, depth 200, metadata 256 MiB.
    public static let standard = ReadLimits(maxTensorBytes: 2 << 30, maxTotalBytes: 8 << 30, maxPickleMemo: 1 << 20,
                                            maxPickleDepth: 200, maxHeaderBytes: 256 << 20)

    /// Sets every limit; see the properties.
    public init(maxTensorBytes: Int, maxTotalBytes: Int, maxPickleMemo: Int, maxPickleDepth: Int, maxHeaderBytes: Int) {
        self.maxTensorBytes = maxTensorBytes
        self.maxTotalBytes = maxTotalBytes
        self.maxPickleMemo = maxPickleMemo
        self.maxPickleDepth = maxPickleDepth
        self.maxHeaderBytes = maxHeaderBytes
    }

    /// Runs `body` with these limits in force for every reader it calls on this task or thread.
    /// A task-local value rather than a parameter on every reader: the readers are many layers
    /// deep (zip → pickle → tensor views), and one value set at the entry point reaches all.
    public func apply<T>(_ body: () throws -> T) rethrows -> T {
        try ReadLimits.$current.withValue(self, operation: body)
    }

    /// The limits in force (see ``apply(_:)``). Readers capture it once when they start.
    @TaskLocal static var current = ReadLimits.standard

    /// Parses a byte count: digits with an optional binary suffix K, M, G or T (also KB/KiB, …),
    /// e.g. `512M`, `4G`, `1048576`. Nil for anything else, zero, or a value past `Int.max`.
    public static func parseByteCount(_ text: String) -> Int? {
        var s = Substring(text.trimmingCharacters(in: .whitespaces).uppercased())
        for suffix in ["IB", "B"] where s.hasSuffix(suffix) && s.count > suffix.count {
            s = s.dropLast(suffix.count)
            break
        }
        var shift = 0
        if let last = s.last, let i = "KMGT".firstIndex(of: last) {
            shift = 10 * ("KMGT".distance(from: "KMGT".startIndex, to: i) + 1)
            s = s.dropLast()
        }
        guard !s.isEmpty, s.allSatisfy(\.isASCII), let n = Int(s), n > 0 else { return nil }
        guard n <= Int.max >> shift else { return nil }
        return n << shift
    }

    /// The limits, their flags and their values in force.
    enum Limit: String {
        case tensorBytes = "--max-tensor-bytes"
        case totalBytes = "--max-total-bytes"
        case pickleMemo = "--max-pickle-memo"
        case pickleDepth = "--max-pickle-depth"
        case headerBytes = "--max-header-bytes"
        case expansion = "--max-expansion"
    }

    func value(_ limit: Limit) -> Int {
        switch limit {
        case .tensorBytes: return maxTensorBytes
        case .totalBytes: return maxTotalBytes
        case .pickleMemo: return maxPickleMemo
        case .pickleDepth: return maxPickleDepth
        case .headerBytes: return maxHeaderBytes
        case .expansion: return maxExpansion
        }
    }

    /// The refusal for a file over `limit`: `found` says what was found ("a tensor of 3 GiB as
    /// float32"), the message adds the limit and the flag that raises it.
    func exceeded(_ limit: Limit, file: String, place: String, found: String) -> ResNetError {
        .invalidInput(file: file, place: place, reason: reason(limit, found: found))
    }

    /// The reason part of ``exceeded(_:file:place:found:)``, for readers with their own error helper.
    func reason(_ limit: Limit, found: String) -> String {
        "\(found), over the limit of \(value(limit)) (raise it with \(limit.rawValue) N)"
    }

    /// Bytes of `elements` float32 values, saturating.
    static func float32Bytes(_ elements: Int) -> Int {
        let (b, o) = elements.multipliedReportingOverflow(by: 4)
        return o ? Int.max : b
    }
}
