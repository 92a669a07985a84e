import Foundation
import ZIPFoundation

// Writes a state dict the way `torch.save` (zip serialization, pickle protocol 2) lays it out:
// `<root>/data.pkl` holds an OrderedDict of `torch._utils._rebuild_tensor_v2(storage, offset,
// size, stride, requires_grad, backward_hooks)` calls whose storages are persistent ids
// ('storage', <storage class>, key, 'cpu', numel); each storage's bytes are the stored member
// `<root>/data/<key>`, aligned to 64 bytes; `<root>/version` and `<root>/byteorder` complete it.
// Only classes that torch.load(weights_only=True) allows are referenced. Metadata goes where
// torch.save puts a state dict's own: the OrderedDict's `_metadata` attribute (BUILD state), as
// `{"resnet_convert": {key: value}}`, which load_state_dict(strict=True) passes over (it looks up
// module prefixes only) and `torch.load(weights_only=True)` restores as plain dicts of strings.

/// A minimal pickle (protocol 2) emitter for the one object shape a state dict needs.
struct PickleWriter {
    private(set) var bytes: [UInt8] = [0x80, 0x02]   // PROTO 2

    mutating func global(_ module: String, _ name: String) {
        bytes.append(UInt8(ascii: "c"))
        bytes += Array(module.utf8) + [0x0A] + Array(name.utf8) + [0x0A]
    }
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        bytes.append(UInt8(ascii: "X"))   // BINUNICODE, u32 length
        withUnsafeBytes(of: UInt32(u.count).littleEndian) { bytes += $0 }
        bytes += u
    }
    mutating func int(_ v: Int) {
        if v >= 0 && v < 256 {
            bytes += [UInt8(ascii: "K"), UInt8(v)]                  // BININT1
        } else if v >= Int(Int32.min) && v <= Int(Int32.max) {
            bytes.append(UInt8(ascii: "J"))                          // BININT
            withUnsafeBytes(of: Int32(v).littleEndian) { bytes += $0 }
        } else {
            bytes += [0x8A, 8]                                        // LONG1, 8 bytes two's complement
            withUnsafeBytes(of: Int64(v).littleEndian) { bytes += $0 }
        }
    }
    mutating func mark() { bytes.append(UInt8(ascii: "(")) }
    mutating func tupleFromMark() { bytes.append(UInt8(ascii: "t")) }
    mutating func emptyTuple() { bytes.append(UInt8(ascii: ")")) }
    mutating func reduce() { bytes.append(UInt8(ascii: "R")) }
    mutating func persistentID() { bytes.append(UInt8(ascii: "Q")) }   // BINPERSID
    mutating func newFalse() { bytes.append(0x89) }
    mutating func setItems() { bytes.append(UInt8(ascii: "u")) }
    mutating func setItem() { bytes.append(UInt8(ascii: "s")) }
    mutating func emptyDict() { bytes.append(UInt8(ascii: "}")) }
    mutating func build() { bytes.append(UInt8(ascii: "b")) }
    mutating func stop() { bytes.append(UInt8(ascii: ".")) }

    /// A tuple of ints (shapes, strides).
    mutating func intTuple(_ values: [Int]) {
        mark()
        for v in values { int(v) }
        tupleFromMark()
    }
    /// `collections.OrderedDict()`.
    mutating func emptyOrderedDict() {
        global("collections", "OrderedDict"); emptyTuple(); reduce()
    }
}

/// The storage class torch pickles for a dtype.
private func storageClass(_ d: DType) -> String? {
    switch d {
    case .float32: return "FloatStorage"
    case .int64: return "LongStorage"
    case .float16: return "HalfStorage"
    case .bfloat16: return "BFloat16Storage"
    case .float64: return "DoubleStorage"
    default: return nil
    }
}

/// Bytes of a torch zip archive holding `tensors` (contiguous, one storage each) as an OrderedDict.
func torchArchiveBytes(_ tensors: [RawTensor], metadata: [String: String] = [:], root: String = "archive") throws -> Data {
    var p = PickleWriter()
    p.emptyOrderedDict()
    p.mark()
    var members: [(String, [UInt8])] = []
    for (key, t) in tensors.enumerated() {
        guard let cls = storageClass(t.dtype) else {
            throw ResNetError.unsupported(file: root, place: "tensor \(t.name)", reason: "dtype \(t.dtype.rawValue) has no torch storage class here")
        }
        let numel = t.shape.reduce(1, *)
        var strides = [Int](repeating: 1, count: t.shape.count)
        for i in stride(from: t.shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * t.shape[i + 1] }
        p.string(t.name)
        p.global("torch._utils", "_rebuild_tensor_v2")
        p.mark()
        p.mark(); p.string("storage"); p.global("torch", cls); p.string(String(key)); p.string("cpu"); p.int(numel); p.tupleFromMark()
        p.persistentID()
        p.int(0)
        p.intTuple(t.shape)
        p.intTuple(strides)
        p.newFalse()
        p.emptyOrderedDict()
        p.tupleFromMark()
        p.reduce()
        members.append(("\(root)/data/\(key)", t.bytes))
    }
    p.setItems()
    if !metadata.isEmpty {
        p.emptyDict()                 // the OrderedDict's __dict__
        p.string("_metadata")
        p.emptyDict()
        p.string("resnet_convert")
        p.emptyDict()
        p.mark()
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) { p.string(k); p.string(v) }
        p.setItems()
        p.setItem()                   // _metadata["resnet_convert"] = {...}
        p.setItem()                   // __dict__["_metadata"] = _metadata
        p.build()
    }
    p.stop()
    var all: [(String, [UInt8])] = [("\(root)/data.pkl", p.bytes), ("\(root)/byteorder", Array("little".utf8))]
    all += members
    all.append(("\(root)/version", Array("3\n".utf8)))
    return try storedZip(all, alignment: 64)
}

/// A zip archive of stored (uncompressed) members whose data start at multiples of `alignment`
/// (padding goes into an extra field, as PyTorch's writer does), so readers may map tensors in place.
func storedZip(_ members: [(name: String, data: [UInt8])], alignment: Int) throws -> Data {
    guard members.count < 65_535 else {
        throw ResNetError.unsupported(file: ResNetError.modelPlaceholder, place: "PyTorch archive", reason: "\(members.count) zip members need zip64, which this writer does not produce")
    }
    var out = Data()
    var central = Data()
    func u16(_ v: Int, _ d: inout Data) { withUnsafeBytes(of: UInt16(v).littleEndian) { d.append(contentsOf: $0) } }
    func u32(_ v: UInt32, _ d: inout Data) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
    for (name, data) in members {
        let nameBytes = Array(name.utf8)
        guard data.count < Int(UInt32.max) - 1, out.count < Int(UInt32.max) - data.count - 65_536, nameBytes.count < 65_536 else {
            throw ResNetError.unsupported(file: name, place: "zip member", reason: "members and archives over 4 GiB need zip64, which this writer does not produce")
        }
        let offset = out.count
        let crc = Data(data).crc32(checksum: 0)
        // Data start = header (30) + name + extra; the extra field is 4 bytes of id/size plus padding.
        let unpadded = offset + 30 + nameBytes.count + 4
        let pad = (alignment - unpadded % alignment) % alignment
        u32(0x0403_4B50, &out); u16(0, &out); u16(0, &out); u16(0, &out)   // signature, version needed, flags, stored
        u16(0, &out); u16(0x21, &out)                                         // time, date (1980-01-01)
        u32(crc, &out); u32(UInt32(data.count), &out); u32(UInt32(data.count), &out)
        u16(nameBytes.count, &out); u16(4 + pad, &out)
        out.append(contentsOf: nameBytes)
        u16(0x4246, &out); u16(pad, &out); out.append(Data(count: pad))      // 'FB' padding field
        out.append(contentsOf: data)

        u32(0x0201_4B50, &central); u16(0, &central); u16(0, &central); u16(0, &central); u16(0, &central)
        u16(0, &central); u16(0x21, &central)
        u32(crc, &central); u32(UInt32(data.count), &central); u32(UInt32(data.count), &central)
        u16(nameBytes.count, &central); u16(0, &central); u16(0, &central)    // name, extra, comment lengths
        u16(0, &central); u16(0, &central); u32(0, &central)                  // disk, internal, external attributes
        u32(UInt32(offset), &central)
        central.append(contentsOf: nameBytes)
    }
    let cdOffset = out.count
    out.append(central)
    u32(0x0605_4B50, &out); u16(0, &out); u16(0, &out)
    u16(members.count, &out); u16(members.count, &out)
    u32(UInt32(central.count), &out); u32(UInt32(cdOffset), &out); u16(0, &out)
    return out
}
