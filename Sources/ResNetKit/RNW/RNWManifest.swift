import Foundation

/// Where the weights in a `.rnw` file came from.
public struct RNWProvenance: Sendable, Equatable {
    /// Source container, e.g. `keras-h5`, `keras-v3`, `torch-zip`, `torch-legacy`.
    public var sourceFormat: String
    /// File name of the source, never a directory path.
    public var sourcePath: String
    /// Lowercase hex SHA-256 of the source file.
    public var sourceSHA256: String
    /// Naming scheme that mapped source tensors to canonical names.
    public var scheme: String
    /// How checkpoint wrappers were unwrapped, one note per decision.
    public var unwrappingNotes: [String]
    /// Version of the tool that wrote the file.
    public var toolVersion: String

    /// Creates a provenance record; `sourcePath` is reduced to its last path component.
    public init(sourceFormat: String = "", sourcePath: String = "", sourceSHA256: String = "", scheme: String = "",
                unwrappingNotes: [String] = [], toolVersion: String = "") {
        self.sourceFormat = sourceFormat
        // Files travel between machines; a directory would leak a local path and mean nothing elsewhere.
        self.sourcePath = sourcePath.split(separator: "/", omittingEmptySubsequences: true).last.map(String.init) ?? ""
        self.sourceSHA256 = sourceSHA256
        self.scheme = scheme
        self.unwrappingNotes = unwrappingNotes
        self.toolVersion = toolVersion
    }
}

/// The outcome of one numerical comparison made before the file was written.
public struct RNWParityRecord: Sendable, Equatable {
    /// Whether the comparison met its tolerance.
    public var passed: Bool
    /// What was compared with, e.g. `golden io.npz`, `keras graph self-check`, `read-back`.
    public var reference: String
    /// Largest absolute output difference.
    public var maxAbsError: Double
    /// Largest difference relative to the output scale.
    public var maxRelError: Double
    /// Cosine similarity of the flattened outputs.
    public var cosine: Double
    /// Fraction of samples whose arg-max class agrees, in [0, 1].
    public var top1Agreement: Double
    /// The tolerance the errors were held to.
    public var tolerance: Double
    /// Why that tolerance was chosen.
    public var policy: String

    /// Creates a parity record.
    public init(passed: Bool, reference: String, maxAbsError: Double, maxRelError: Double, cosine: Double,
                top1Agreement: Double, tolerance: Double, policy: String) {
        self.passed = passed; self.reference = reference
        self.maxAbsError = maxAbsError; self.maxRelError = maxRelError
        self.cosine = cosine; self.top1Agreement = top1Agreement
        self.tolerance = tolerance; self.policy = policy
    }
}

/// Where one tensor's bytes are in a `.rnw` file and how to read them.
public struct RNWTensorEntry: Sendable, Equatable {
    /// Canonical tensor name.
    public var name: String
    /// Stored element type (little-endian).
    public var dtype: DType
    /// Dimensions, outermost first, row-major.
    public var shape: [Int]
    /// Absolute byte offset from the start of the file; a multiple of 64.
    public var offset: UInt64
    /// Byte length, `product(shape) * dtype.size`.
    public var length: UInt64
    /// xxHash64 (seed 0) of the tensor's bytes.
    public var checksum: UInt64
    /// Per-output-channel scales of an int8 tensor; empty for other dtypes.
    public var scales: [Float]

    /// Creates a tensor entry.
    public init(name: String, dtype: DType, shape: [Int], offset: UInt64, length: UInt64, checksum: UInt64, scales: [Float] = []) {
        self.name = name; self.dtype = dtype; self.shape = shape
        self.offset = offset; self.length = length; self.checksum = checksum; self.scales = scales
    }
}

/// The decoded manifest of a `.rnw` file (schema `tools/rnw.proto`).
public struct RNWManifest: Sendable, Equatable {
    /// Format major version the manifest was written for.
    public var formatMajor: UInt32
    /// Format minor version the manifest was written for.
    public var formatMinor: UInt32
    /// The ``ResNetSpec`` as UTF-8 JSON, kept as stored so that tools can show it verbatim.
    public var specJSON: [UInt8]
    /// Tensor entries in the spec's parameter order.
    public var tensors: [RNWTensorEntry]
    /// Where the weights came from, when recorded.
    public var provenance: RNWProvenance?
    /// Parity checks made before writing.
    public var parity: [RNWParityRecord]
    /// Free-form key/value pairs.
    public var metadata: [String: String]

    /// Creates a manifest.
    public init(formatMajor: UInt32, formatMinor: UInt32, specJSON: [UInt8], tensors: [RNWTensorEntry],
                provenance: RNWProvenance?, parity: [RNWParityRecord], metadata: [String: String]) {
        self.formatMajor = formatMajor; self.formatMinor = formatMinor; self.specJSON = specJSON
        self.tensors = tensors; self.provenance = provenance; self.parity = parity; self.metadata = metadata
    }
}
