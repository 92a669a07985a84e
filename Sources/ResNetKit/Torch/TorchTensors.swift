/// Reads the elements a strided view selects from stored bytes and converts them to float32.
///
/// `raw` holds the whole stored storage; the view's bounds were checked against its declared
/// element count when the tensor was unpickled, and are checked here once more against `raw`.
func materialise(_ t: TorchTensorRef, raw: UnsafeRawBufferPointer, bigEndian: Bool,
                 file: String, place: String) throws -> Tensor {
    let count = t.shape.reduce(1, *) // bounded by ReadLimits.maxTensorBytes at unpickling
    if count == 0 { return Tensor(shape: t.shape, data: []) }
    var out = try checkedFloatArray(count: count, file: file, place: place)
    try out.withUnsafeMutableBufferPointer { dst in
        try materialise(t, raw: raw, bigEndian: bigEndian, file: file, place: place, into: dst)
    }
    return Tensor(shape: t.shape, data: out)
}

/// ``materialise(_:raw:bigEndian:file:place:)`` into a caller's buffer of exactly the view's
/// element count (streaming conversion reuses one buffer for every tensor).
func materialise(_ t: TorchTensorRef, raw: UnsafeRawBufferPointer, bigEndian: Bool,
                 file: String, place: String, into dst: UnsafeMutableBufferPointer<Float>) throws {
    let count = t.shape.reduce(1, *)
    precondition(dst.count == count, "buffer does not match the view's element count")
    if count == 0 { return }
    let size = t.storage.dtype.size
    var last = t.storage.base + t.offset
    for (d, s) in zip(t.shape, t.strides) { last += (d - 1) * s } // no overflow: checked at unpickling
    guard last < t.storage.base + t.storage.count, last < raw.count / size else {
        throw ResNetError.invalidInput(file: file, place: place,
            reason: "view reaches element \(last) but the stored storage holds \(raw.count / size)")
    }
    let load = elementLoader(t.storage.dtype, bigEndian: bigEndian)
    let rank = t.shape.count
    var contiguous = true
    var expected = 1
    for i in stride(from: rank - 1, through: 0, by: -1) {
        if t.shape[i] != 1 && t.strides[i] != expected { contiguous = false }
        expected *= t.shape[i]
    }
    let first = t.storage.base + t.offset
    do {
        #if _endian(little)
        if contiguous && t.storage.dtype == .float32 && !bigEndian {
            // The common case, a plain float32 state dict: one copy, no per-element call.
            dst.withMemoryRebound(to: UInt8.self) { UnsafeMutableRawBufferPointer($0) }
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[(first * 4) ..< (first + count) * 4]))
            return
        }
        #endif
        if contiguous {
            for i in 0..<count { dst[i] = load(raw, first + i) }
            return
        }
        // Odometer over the view's indices; `src` follows the strides.
        var index = [Int](repeating: 0, count: rank)
        var src = first
        for o in 0..<count {
            dst[o] = load(raw, src)
            var d = rank - 1
            while d >= 0 {
                index[d] += 1
                src += t.strides[d]
                if index[d] < t.shape[d] { break }
                src -= t.strides[d] * t.shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }
}

/// Loads element `i` of a stored storage as float32. Integers convert exactly up to 2^24, which
/// covers every integer buffer a ResNet has (`num_batches_tracked` is ignored anyway).
func elementLoader(_ dtype: DType, bigEndian: Bool) -> (UnsafeRawBufferPointer, Int) -> Float {
    func u16(_ r: UnsafeRawBufferPointer, _ o: Int) -> UInt16 {
        let v = r.loadUnaligned(fromByteOffset: o, as: UInt16.self)
        return bigEndian ? v.byteSwapped : UInt16(littleEndian: v)
    }
    func u32(_ r: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
        let v = r.loadUnaligned(fromByteOffset: o, as: UInt32.self)
        return bigEndian ? v.byteSwapped : UInt32(littleEndian: v)
    }
    func u64(_ r: UnsafeRawBufferPointer, _ o: Int) -> UInt64 {
        let v = r.loadUnaligned(fromByteOffset: o, as: UInt64.self)
        return bigEndian ? v.byteSwapped : UInt64(littleEndian: v)
    }
    switch dtype {
    case .float32: return { Float(bitPattern: u32($0, $1 * 4)) }
    case .float16: return { halfToFloat(u16($0, $1 * 2)) }
    case .bfloat16: return { Float(bitPattern: UInt32(u16($0, $1 * 2)) << 16) }
    case .float64: return { Float(Double(bitPattern: u64($0, $1 * 8))) }
    case .int64: return { Float(Int64(bitPattern: u64($0, $1 * 8))) }
    case .int32: return { Float(Int32(bitPattern: u32($0, $1 * 4))) }
    case .int8: return { Float(Int8(bitPattern: $0[$1])) }
    case .uint8: return { Float($0[$1]) }
    case .bool: return { $0[$1] != 0 ? 1 : 0 }
    }
}
