/// Element types a tensor may have in a source file or in a `.rnw` file.
public enum DType: String, Codable, Sendable, CaseIterable {
    case float32 = "f32"
    case float16 = "f16"
    case bfloat16 = "bf16"
    case float64 = "f64"
    case int64 = "i64"
    case int32 = "i32"
    case int8 = "i8"
    case uint8 = "u8"
    case bool = "bool"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }
}

/// A dense, row-major float32 array with a shape.
///
/// Canonical weights and activations are always float32; the dtype a tensor had in its source
/// file is tracked separately (``SourceTensor/sourceDType``).
public struct Tensor: Sendable, Equatable {
    /// Dimensions, outermost first.
    public var shape: [Int]
    /// Elements in row-major order; `data.count == shape.product`.
    public var data: [Float]

    /// Creates a tensor; `data.count` must equal the product of `shape`.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "tensor data does not match shape \(shape)")
        self.shape = shape
        self.data = data
    }

    /// A tensor of zeros.
    public init(zeros shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// Number of elements.
    public var count: Int { data.count }

    /// Returns the tensor with its axes permuted: `result.shape[i] == shape[axes[i]]`.
    public func permuted(_ axes: [Int]) -> Tensor {
        precondition(axes.count == shape.count && Set(axes) == Set(0..<shape.count))
        let rank = shape.count
        if axes == Array(0..<rank) { return self }
        let newShape = axes.map { shape[$0] }
        var srcStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { srcStrides[i] = srcStrides[i + 1] * shape[i + 1] }
        let permStrides = axes.map { srcStrides[$0] }
        var out = [Float](repeating: 0, count: data.count)
        var index = [Int](repeating: 0, count: rank)
        data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for o in 0..<dst.count {
                    var s = 0
                    for d in 0..<rank { s += index[d] * permStrides[d] }
                    dst[o] = src[s]
                    var d = rank - 1
                    while d >= 0 {
                        index[d] += 1
                        if index[d] < newShape[d] { break }
                        index[d] = 0
                        d -= 1
                    }
                }
            }
        }
        return Tensor(shape: newShape, data: out)
    }

    /// Returns the same elements with a new shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }
}

/// A tensor as it was found in a source file: its name there, the element type it had, and its
/// values converted to float32 in the SOURCE layout (e.g. HWIO for a Keras kernel).
public struct SourceTensor: Sendable {
    /// The name or path of the tensor inside its file (HDF5 path, state-dict key).
    public var name: String
    /// The element type stored in the file.
    public var sourceDType: DType
    /// Values as float32, in the source layout.
    public var tensor: Tensor

    public init(name: String, sourceDType: DType, tensor: Tensor) {
        self.name = name
        self.sourceDType = sourceDType
        self.tensor = tensor
    }
}
