// Storage dtypes of a .rnw file: float32 values to the stored bytes and back.
//
// The writer and the reader share these functions, and `convert` runs its at-dtype parity checks on
// `storedModel(_:dtype:)`, which goes through exactly the same encode → decode path; so the model that
// was verified is bit for bit the model a reader gets (the read-back check then proves it).
//
// Which tensors are narrowed: only conv and dense weights. BatchNorm parameters and all biases stay
// float32 at every dtype: they are about 0.2% of a ResNet-50's bytes, and they are where narrow types
// hurt most (a running variance near epsilon, a mean or bias added after a large product).

import Foundation

// MARK: - float16 (IEEE 754 binary16)

/// The binary16 bit pattern nearest to `value`, ties to even; overflow becomes infinity, NaN stays a
/// (quiet) NaN, subnormals are rounded correctly.
func float16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exponent = Int((bits >> 23) & 0xFF)
    var mantissa = bits & 0x7F_FFFF
    if exponent == 0xFF {   // infinity or NaN; a NaN keeps its top payload bits and is made quiet
        return mantissa == 0 ? sign | 0x7C00 : sign | 0x7E00 | UInt16(mantissa >> 13)
    }
    // Unbiased exponent; binary16 normals span 2^-14 ... 2^15.
    let e = exponent - 127
    if e > 15 { return sign | 0x7C00 }
    if e >= -14 {
        // Normal: keep 10 of 23 mantissa bits, round the dropped 13 to nearest even.
        var half = UInt32(e + 15) << 10 | (mantissa >> 13)
        let rest = mantissa & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && (half & 1) == 1) { half += 1 }   // may carry into the exponent: still right, up to infinity
        return sign | UInt16(half)
    }
    // Subnormal binary16 (or zero): value = m × 2^-24. Shift the full 24-bit significand.
    if exponent == 0 { return sign }   // float32 subnormals are far below half the smallest binary16 subnormal
    mantissa |= 0x80_0000
    let shift = UInt32(-e - 14 + 13)   // 14 ... for e = -15 ... ; beyond 24 + 1 everything rounds to 0
    if shift > 24 { return sign }
    var half = mantissa >> shift
    let rest = mantissa & ((1 << shift) - 1)
    let halfway = UInt32(1) << (shift - 1)
    if rest > halfway || (rest == halfway && (half & 1) == 1) { half += 1 }
    return sign | UInt16(half)
}

/// The float32 value of a binary16 bit pattern (exact: every binary16 value is a float32).
func float16Value(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = UInt32((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    if exponent == 0 {
        // ±0 or subnormal: m × 2^-24, exact in float32.
        let magnitude = Float(mantissa) * Float(sign: .plus, exponent: -24, significand: 1)
        return sign != 0 ? -magnitude : magnitude
    }
    return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
}

// MARK: - bfloat16 (the upper half of binary32)

/// The bfloat16 bit pattern nearest to `value`, ties to even; NaN stays a quiet NaN.
func bfloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x0040 }
    // Adding 0x7FFF plus the lowest kept bit rounds to nearest even; a carry into the exponent
    // is the correct rounding, up to infinity.
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return UInt16(rounded >> 16)
}

/// The float32 value of a bfloat16 bit pattern.
func bfloat16Value(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

// MARK: - int8, symmetric per output channel

/// Symmetric int8 quantisation of a weight whose first axis is the output channel:
/// `q = round(w / s)` (ties away from zero) clamped to ±127, `s = max|w| / 127` per channel
/// (0 for an all-zero channel, whose values all become 0). -128 is never used so that the range is
/// symmetric and `-q` always exists.
func quantizeInt8(_ t: Tensor, name: String, file: String) throws -> (values: [Int8], scales: [Float]) {
    guard let channels = t.shape.first, channels > 0 else {
        throw ResNetError.unsupported(file: file, place: "tensor \(name)", reason: "int8 needs a leading output-channel axis, shape is \(t.shape)")
    }
    let per = t.count / channels
    var values = [Int8](repeating: 0, count: t.count)
    var scales = [Float](repeating: 0, count: channels)
    for o in 0..<channels {
        let row = t.data[(o * per)..<((o + 1) * per)]
        var peak: Float = 0
        for v in row {
            guard v.isFinite else {
                throw ResNetError.unsupported(file: file, place: "tensor \(name) output channel \(o)",
                                              reason: "holds \(v); int8 can only store finite weights")
            }
            peak = max(peak, abs(v))
        }
        let scale = peak / 127
        scales[o] = scale
        guard scale > 0, scale.isNormal else { continue }   // all zero (or too tiny to scale): stays 0
        for i in row.indices {
            values[i] = Int8(max(-127, min(127, (row[i] / scale).rounded(.toNearestOrAwayFromZero))))
        }
    }
    return (values, scales)
}

// MARK: - Which tensors are narrowed

/// The canonical names of the conv and dense weights of `spec`: the only tensors stored at a
/// narrow dtype.
func narrowableWeights(_ spec: ResNetSpec) -> Set<String> {
    var names = Set<String>()
    for op in spec.allOps {
        switch op {
        case let .conv(c): names.insert("\(c.name).weight")
        case let .dense(d): names.insert("\(d.name).weight")
        default: break
        }
    }
    return names
}

/// The dtypes a `.rnw` file may store.
let rnwStorageDTypes: [DType] = [.float32, .float16, .bfloat16, .int8]

/// One tensor as it is stored: its dtype, its little-endian bytes and (int8) its scales.
struct EncodedTensor {
    var name: String
    var dtype: DType
    var shape: [Int]
    var bytes: [UInt8]
    var scales: [Float]
}

/// Encodes `tensor` for storage at `dtype` (which must be one of ``rnwStorageDTypes``).
func encodeTensor(_ tensor: Tensor, name: String, dtype: DType, file: String) throws -> EncodedTensor {
    var bytes: [UInt8]
    var scales: [Float] = []
    switch dtype {
    case .float32:
        bytes = withLittleEndianBytes(tensor.data) { Array($0) }
    case .float16, .bfloat16:
        let convert = dtype == .float16 ? float16Bits : bfloat16Bits
        bytes = [UInt8](repeating: 0, count: tensor.count * 2)
        for (i, v) in tensor.data.enumerated() {
            let h = convert(v)
            bytes[2 * i] = UInt8(truncatingIfNeeded: h)
            bytes[2 * i + 1] = UInt8(truncatingIfNeeded: h >> 8)
        }
    case .int8:
        let q = try quantizeInt8(tensor, name: name, file: file)
        bytes = q.values.map { UInt8(bitPattern: $0) }
        scales = q.scales
    default:
        throw ResNetError.unsupported(file: file, place: "tensor \(name)", reason: "dtype \(dtype.rawValue) cannot be stored in .rnw")
    }
    return EncodedTensor(name: name, dtype: dtype, shape: tensor.shape, bytes: bytes, scales: scales)
}

/// Decodes stored bytes (already bounds-checked: `bytes.count == count * dtype.size`) to float32.
func decodeTensor(_ bytes: UnsafeRawBufferPointer, dtype: DType, shape: [Int], scales: [Float]) -> [Float] {
    let count = bytes.count / dtype.size
    switch dtype {
    case .float16, .bfloat16:
        let convert = dtype == .float16 ? float16Value : bfloat16Value
        return (0..<count).map { i in convert(UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8) }
    case .int8:
        let per = scales.isEmpty ? 0 : count / scales.count
        return (0..<count).map { i in Float(Int8(bitPattern: bytes[i])) * scales[i / per] }
    default:   // float32
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
            #if _endian(big)
            for i in 0..<count { buffer[i] = Float(bitPattern: UInt32(littleEndian: buffer[i].bitPattern)) }
            #endif
            initialized = count
        }
    }
}

/// Every tensor of `model` encoded in the spec's parameter order: conv and dense weights at
/// `dtype`, everything else float32.
func encodeModel(_ model: ResNetModel, dtype: DType, file: String) throws -> [EncodedTensor] {
    guard rnwStorageDTypes.contains(dtype) else {
        throw ResNetError.usage("dtype \(dtype.rawValue) cannot be stored in .rnw; use one of \(rnwStorageDTypes.map(\.rawValue).joined(separator: ", "))")
    }
    let narrow = narrowableWeights(model.spec)
    return try model.spec.parameters.map { p in
        try encodeTensor(model.tensors[p.name]!, name: p.name, dtype: narrow.contains(p.name) ? dtype : .float32, file: file)
    }
}

/// The float32 model a reader gets back from a file written at `dtype`: what parity at that dtype
/// must be measured on.
public func storedModel(_ model: ResNetModel, dtype: DType) throws -> ResNetModel {
    try model.validate()
    var tensors: [String: Tensor] = [:]
    for e in try encodeModel(model, dtype: dtype, file: "model") {
        let data = e.bytes.withUnsafeBytes { decodeTensor($0, dtype: e.dtype, shape: e.shape, scales: e.scales) }
        tensors[e.name] = Tensor(shape: e.shape, data: data)
    }
    return ResNetModel(spec: model.spec, tensors: tensors)
}
