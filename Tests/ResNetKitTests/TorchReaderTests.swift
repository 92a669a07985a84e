import Foundation
import Testing
@testable import ResNetKit

// MARK: - hand-made checkpoints

/// Writes pickle opcodes by hand, so each test states exactly which bytes it feeds the reader.
struct PickleBytes {
    var bytes: [UInt8] = [0x80, 0x02] // PROTO 2, as torch.save writes

    mutating func op(_ b: UInt8...) { bytes += b }
    mutating func str(_ s: String) { // BINUNICODE
        let u = Array(s.utf8)
        op(0x58); bytes += withUnsafeBytes(of: UInt32(u.count).littleEndian, Array.init); bytes += u
    }
    mutating func int(_ i: Int) { op(0x4A); bytes += withUnsafeBytes(of: Int32(i).littleEndian, Array.init) } // BININT
    mutating func global(_ module: String, _ name: String) { op(0x63); bytes += Array("\(module)\n\(name)\n".utf8) }
    mutating func mark() { op(0x28) }
    mutating func tuple() { op(0x74) }
    mutating func emptyTuple() { op(0x29) }
    mutating func emptyDict() { op(0x7D) }
    mutating func setItems() { op(0x75) }
    mutating func reduce() { op(0x52) }
    mutating func stop() { op(0x2E) }
    mutating func ints(_ v: [Int]) { mark(); for i in v { int(i) }; tuple() }
    mutating func orderedDict() { global("collections", "OrderedDict"); emptyTuple(); reduce() }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` on storage `key`.
    mutating func tensor(key: String, storage: String = "FloatStorage", count: Int, offset: Int = 0, size: [Int], stride: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        mark()
        mark(); str("storage"); global("torch", storage); str(key); str("cpu"); int(count); tuple()
        op(0x51) // BINPERSID
        int(offset); ints(size); ints(stride); op(0x89); orderedDict()
        tuple(); reduce()
    }

    /// `{name: tensor, …}` as an OrderedDict state dict, then STOP.
    static func stateDict(_ entries: [(String, (inout PickleBytes) -> Void)]) -> [UInt8] {
        var p = PickleBytes()
        p.orderedDict()
        p.mark()
        for (name, value) in entries { p.str(name); value(&p) }
        p.setItems()
        p.stop()
        return p.bytes
    }
}

/// A stored (uncompressed) zip as torch writes it: members 64-byte aligned through padding in
/// the local header's extra field.
func torchZip(root: String = "archive", pickle: [UInt8], storages: [(String, [UInt8])], byteorder: String? = "little") -> [UInt8] {
    var members: [(String, [UInt8])] = [("\(root)/data.pkl", pickle)]
    if let byteorder { members.append(("\(root)/byteorder", Array(byteorder.utf8))) }
    for (key, bytes) in storages { members.append(("\(root)/data/\(key)", bytes)) }
    members.append(("\(root)/version", Array("3\n".utf8)))
    var out: [UInt8] = []
    var central: [UInt8] = []
    func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)] }
    func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    for (name, data) in members {
        let n = Array(name.utf8)
        let offset = out.count
        let pad = (64 - (offset + 30 + n.count + 4) % 64) % 64
        let extra: [UInt8] = le16(0x4B50) + le16(pad) + [UInt8](repeating: 0, count: pad)
        let crc = crc32(data)
        let common = le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc) + le32(UInt32(data.count)) + le32(UInt32(data.count)) + le16(n.count)
        out += le32(0x0403_4B50) + common + le16(extra.count) + n + extra + data
        central += le32(0x0201_4B50) + le16(20) + common + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(UInt32(offset)) + n
    }
    let cdOffset = out.count
    out += central
    out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(members.count) + le16(members.count) + le32(UInt32(central.count)) + le32(UInt32(cdOffset)) + le16(0)
    return out
}

func crc32(_ data: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in data {
        c ^= UInt32(b)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
    }
    return ~c
}

func f32Bytes(_ v: [Float], bigEndian: Bool = false) -> [UInt8] {
    v.flatMap { x in withUnsafeBytes(of: bigEndian ? x.bitPattern.bigEndian : x.bitPattern.littleEndian, Array.init) }
}

/// Reads hand-made bytes as a checkpoint.
func readBytes(_ bytes: [UInt8], allowModuleRecords: Bool = true) throws -> TorchCheckpoint {
    try readTorchCheckpoint(data: Data(bytes), name: "test.pth", allowModuleRecords: allowModuleRecords)
}

/// Expects the bytes to be refused as invalid input with a message containing every fragment.
func expectRefused(_ bytes: [UInt8], _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let c = try readBytes(bytes)
        Issue.record("accepted a file that should be refused; read \(c.tensors.count) tensors", sourceLocation: sourceLocation)
    } catch let e as ResNetError {
        #expect(e.exitCode == 3, "\(e)", sourceLocation: sourceLocation)
        let text = e.description
        for f in fragments { #expect(text.contains(f), "message \"\(text)\" lacks \"\(f)\"", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("threw a non-ResNetError: \(error)", sourceLocation: sourceLocation)
    }
}

/// A zip checkpoint around a hand-made pickle with no storages.
func zipped(_ pickle: [UInt8]) -> [UInt8] { torchZip(pickle: pickle, storages: []) }

// MARK: - tensors and containers

@Suite("Torch reader: tensors and containers")
struct TorchTensorTests {
    @Test("a contiguous float32 tensor reads back with its values, shape and dtype")
    func contiguous() throws {
        let pickle = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 6, size: [2, 3], stride: [3, 1]) })])
        let c = try readBytes(torchZip(pickle: pickle, storages: [("0", f32Bytes([1, 2, 3, 4, 5, 6]))]))
        #expect(c.tensors.count == 1)
        #expect(c.tensors[0].name == "w")
        #expect(c.tensors[0].sourceDType == .float32)
        #expect(c.tensors[0].tensor == Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6]))
        #expect(c.container.contains("root 'archive/'") && c.container.contains("little-endian"))
        #expect(c.container.contains("storages 64-byte aligned"))
    }

    @Test("a transposed view with an offset is materialised in row-major order")
    func stridedView() throws {
        // Storage 0..<8; view offset 2, size [3, 2], stride [1, 3] picks (2,5),(3,6),(4,7).
        let pickle = PickleBytes.stateDict([("t", { $0.tensor(key: "s", count: 8, offset: 2, size: [3, 2], stride: [1, 3]) })])
        let c = try readBytes(torchZip(pickle: pickle, storages: [("s", f32Bytes([0, 1, 2, 3, 4, 5, 6, 7]))]))
        #expect(c.tensors[0].tensor == Tensor(shape: [3, 2], data: [2, 5, 3, 6, 4, 7]))
    }

    @Test("several tensors sharing one storage each read their own slice")
    func sharedStorage() throws {
        let pickle = PickleBytes.stateDict([
            ("a", { $0.tensor(key: "0", count: 4, size: [2], stride: [1]) }),
            ("b", { $0.tensor(key: "0", count: 4, offset: 2, size: [2], stride: [1]) }),
            ("c", { $0.tensor(key: "0", count: 4, offset: 1, size: [], stride: []) }),
        ])
        let c = try readBytes(torchZip(pickle: pickle, storages: [("0", f32Bytes([10, 20, 30, 40]))]))
        #expect(c.tensors.map(\.name) == ["a", "b", "c"])
        #expect(c.tensors.map(\.tensor.data) == [[10, 20], [30, 40], [20]])
        #expect(c.tensors[2].tensor.shape == [])
    }

    @Test("big-endian storages are byte-swapped when the archive says byteorder big")
    func bigEndian() throws {
        let pickle = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 3, size: [3], stride: [1]) })])
        let c = try readBytes(torchZip(pickle: pickle, storages: [("0", f32Bytes([1.5, -2, 1e-3], bigEndian: true))], byteorder: "big"))
        #expect(c.tensors[0].tensor.data == [1.5, -2, 1e-3])
        #expect(c.container.contains("big-endian"))
    }

    @Test("f16, bf16, f64, i64, i32, u8 and bool storages convert to float32 and keep their dtype")
    func dtypes() throws {
        let cases: [(String, DType, [UInt8], [Float])] = [
            ("HalfStorage", .float16, [0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00], [1, -2, Float(bitPattern: 0x3380_0000)]), // 1, -2, smallest subnormal 2^-24
            ("BFloat16Storage", .bfloat16, [0x80, 0x3F, 0x40, 0xC0, 0x00, 0x00], [1, -3, 0]),
            ("DoubleStorage", .float64, withUnsafeBytes(of: 0.25.bitPattern.littleEndian, Array.init) + withUnsafeBytes(of: (-8.0).bitPattern.littleEndian, Array.init)
                + withUnsafeBytes(of: 1e300.bitPattern.littleEndian, Array.init), [0.25, -8, .infinity]),
            ("LongStorage", .int64, withUnsafeBytes(of: Int64(-5).littleEndian, Array.init) + withUnsafeBytes(of: Int64(7).littleEndian, Array.init)
                + withUnsafeBytes(of: Int64(1 << 20).littleEndian, Array.init), [-5, 7, 1_048_576]),
            ("IntStorage", .int32, withUnsafeBytes(of: Int32(-1).littleEndian, Array.init) + withUnsafeBytes(of: Int32(3).littleEndian, Array.init)
                + withUnsafeBytes(of: Int32(0).littleEndian, Array.init), [-1, 3, 0]),
            ("ByteStorage", .uint8, [0, 200, 255], [0, 200, 255]),
            ("BoolStorage", .bool, [0, 1, 2], [0, 1, 1]),
        ]
        for (storage, dtype, raw, expected) in cases {
            let pickle = PickleBytes.stateDict([("x", { $0.tensor(key: "0", storage: storage, count: 3, size: [3], stride: [1]) })])
            let c = try readBytes(torchZip(pickle: pickle, storages: [("0", raw)]))
            #expect(c.tensors[0].sourceDType == dtype, "\(storage)")
            #expect(c.tensors[0].tensor.data == expected, "\(storage)")
        }
    }

    @Test("halfToFloat is exact for every finite half (round-trips through Float16 arithmetic rules)")
    func halfConversion() {
        // Property: every finite half is k * 2^(e-25) for its integer significand; check by reconstruction.
        for bits in UInt16(0)...UInt16(0x7BFF) {
            let e = Int(bits >> 10), m = Int(bits & 0x3FF)
            let value = e == 0 ? Float(m) * powf(2, -24) : Float(m + 1024) * powf(2, Float(e - 25))
            #expect(halfToFloat(bits) == value)
            #expect(halfToFloat(bits | 0x8000) == -value)
            if halfToFloat(bits) != value { break }
        }
        #expect(halfToFloat(0x7C00) == .infinity)
        #expect(halfToFloat(0x7E00).isNaN)
    }

    @Test("wrappers, prefixes, EMA copies, _metadata and num_batches_tracked are unwrapped and reported")
    func unwrapping() throws {
        var p = PickleBytes()
        p.emptyDict(); p.mark()
        p.str("epoch"); p.int(151)
        for key in ["state_dict", "state_dict_ema"] {
            p.str(key)
            p.orderedDict(); p.mark()
            p.str("module._orig_mod.fc.weight"); p.tensor(key: "0", count: 2, size: [2], stride: [1])
            p.str("module._orig_mod.bn.num_batches_tracked"); p.tensor(key: "1", storage: "LongStorage", count: 1, size: [], stride: [])
            p.setItems()
            // BUILD {'_metadata': OrderedDict()} as torch stores module versions on the state dict.
            p.emptyDict(); p.str("_metadata"); p.orderedDict(); p.op(0x73); p.op(0x62)
        }
        p.setItems(); p.stop()
        let c = try readBytes(torchZip(pickle: p.bytes, storages: [("0", f32Bytes([3, 4])), ("1", [9, 0, 0, 0, 0, 0, 0, 0])]))
        #expect(c.tensors.map(\.name) == ["fc.weight"])
        #expect(c.tensors[0].tensor.data == [3, 4])
        #expect(c.ignored.contains("epoch") && c.ignored.contains("state_dict_ema") && c.ignored.contains("bn.num_batches_tracked"))
        let notes = c.notes.joined(separator: "\n")
        #expect(notes.contains("'state_dict'"))
        #expect(notes.contains("EMA copy 'state_dict_ema' not used"))
        #expect(notes.contains("prefix 'module.'") && notes.contains("prefix '_orig_mod.'"))
        #expect(notes.contains("_metadata"))
    }

    @Test("a whole pickled nn.Module yields dotted names from _parameters, _buffers and _modules")
    func wholeModule() throws {
        var p = PickleBytes()
        func module(_ p: inout PickleBytes, _ cls: String, params: [(String, Int)], children: [(String, (inout PickleBytes) -> Void)]) {
            p.global("torch.nn.modules.linear", cls); p.emptyTuple(); p.op(0x81) // NEWOBJ
            p.emptyDict(); p.mark()
            p.str("training"); p.op(0x88)
            p.str("_parameters"); p.orderedDict(); p.mark()
            for (name, offset) in params { p.str(name); p.tensor(key: "0", count: 4, offset: offset, size: [1], stride: [1]) }
            p.str("bias"); p.op(0x4E)
            p.setItems()
            p.str("_buffers"); p.orderedDict()
            p.str("_non_persistent_buffers_set"); p.global("__builtin__", "set"); p.op(0x5D); p.op(0x85); p.reduce()
            p.str("_modules"); p.orderedDict(); p.mark()
            for (name, child) in children { p.str(name); child(&p) }
            p.setItems()
            p.setItems(); p.op(0x62) // BUILD
        }
        module(&p, "Outer", params: [("w", 0)], children: [
            ("0", { module(&$0, "Linear", params: [("weight", 1)], children: []) }),
            ("head", { module(&$0, "Linear", params: [("weight", 3)], children: []) }),
        ])
        p.stop()
        let c = try readBytes(torchZip(pickle: p.bytes, storages: [("0", f32Bytes([5, 6, 7, 8]))]))
        #expect(c.tensors.map(\.name) == ["w", "0.weight", "head.weight"])
        #expect(c.tensors.map(\.tensor.data) == [[5], [6], [8]])
        #expect(c.notes.contains { $0.contains("inert records") })
        // The same bytes with module records switched off are refused at the class's GLOBAL.
        #expect(throws: ResNetError.self) { try readBytes(torchZip(pickle: p.bytes, storages: [("0", f32Bytes([5, 6, 7, 8]))]), allowModuleRecords: false) }
    }

    @Test("a legacy stream with a storage view reads like torch's legacy loader")
    func legacyStream() throws {
        var stream: [UInt8] = [0x80, 0x02, 0x8A, 0x0A] + TorchLegacy.magic + [0x2E]
        stream += [0x80, 0x02, 0x4D, 0xE9, 0x03, 0x2E] // 1001
        var sys = PickleBytes(); sys.emptyDict(); sys.str("little_endian"); sys.op(0x88); sys.op(0x73); sys.stop()
        stream += sys.bytes
        var p = PickleBytes()
        p.emptyDict(); p.mark(); p.str("conv.weight")
        p.global("torch._utils", "_rebuild_tensor"); p.mark()
        p.mark(); p.str("storage"); p.global("torch", "FloatStorage"); p.str("123"); p.str("cuda:0"); p.int(6)
        p.mark(); p.str("view"); p.int(2); p.int(4); p.tuple() // view of elements 2..<6
        p.tuple(); p.op(0x51)
        p.int(1); p.ints([2]); p.ints([2]); p.tuple(); p.reduce()
        p.setItems(); p.stop()
        stream += p.bytes
        var keys = PickleBytes(); keys.op(0x5D); keys.mark(); keys.str("123"); keys.op(0x65); keys.stop()
        stream += keys.bytes
        stream += withUnsafeBytes(of: Int64(6).littleEndian, Array.init) + f32Bytes([0, 1, 2, 3, 4, 5])
        let c = try readBytes(stream)
        #expect(c.container.hasPrefix("torch-legacy"))
        // view starts at 2; tensor offset 1, stride 2 → elements 3 and 5.
        #expect(c.tensors.map(\.tensor.data) == [[3, 5]])
    }
}

// MARK: - hostile input

@Suite("Torch reader: hostile pickles are refused and nothing runs")
struct TorchHostileTests {
    /// A file any executed payload would create; it must never appear.
    static let marker = FileManager.default.temporaryDirectory.appendingPathComponent("resnet-torch-pwned-\(getpid())").path

    func expectNoSideEffect() { #expect(!FileManager.default.fileExists(atPath: Self.marker)) }

    @Test("GLOBAL posix.system is refused, naming the global and its byte offset")
    func posixSystem() {
        var p = PickleBytes()
        p.global("posix", "system"); p.str("touch \(Self.marker)"); p.op(0x85); p.reduce(); p.stop()
        expectRefused(zipped(p.bytes), "posix.system", "archive/data.pkl byte 2 (GLOBAL)", "nothing was executed")
        expectNoSideEffect()
    }

    @Test("STACK_GLOBAL builtins.eval is refused")
    func stackGlobalEval() {
        var p = PickleBytes()
        p.bytes = [0x80, 0x04]
        p.op(0x8C, 8); p.bytes += Array("builtins".utf8)
        p.op(0x8C, 4); p.bytes += Array("eval".utf8)
        p.op(0x93); p.str("__import__('os').system('touch \(Self.marker)')"); p.op(0x85); p.reduce(); p.stop()
        expectRefused(zipped(p.bytes), "builtins.eval", "(STACK_GLOBAL)")
        expectNoSideEffect()
    }

    @Test("INST os.system and INST of a module class are refused")
    func inst() {
        var p = PickleBytes()
        p.mark(); p.str("touch \(Self.marker)"); p.op(0x69); p.bytes += Array("os\nsystem\n".utf8); p.stop()
        expectRefused(zipped(p.bytes), "os.system", "(INST)")
        var q = PickleBytes()
        q.mark(); q.op(0x69); q.bytes += Array("__main__\nNet\n".utf8); q.stop()
        expectRefused(zipped(q.bytes), "INST would call '__main__.Net'")
        expectNoSideEffect()
    }

    @Test("OBJ with subprocess.Popen is refused at its GLOBAL, OBJ of a module class at OBJ")
    func obj() {
        var p = PickleBytes()
        p.mark(); p.global("subprocess", "Popen"); p.str("touch"); p.op(0x6F); p.stop()
        expectRefused(zipped(p.bytes), "subprocess.Popen", "(GLOBAL)")
        var q = PickleBytes()
        q.mark(); q.global("__main__", "Net"); q.op(0x6F); q.stop()
        expectRefused(zipped(q.bytes), "OBJ would call '__main__.Net'")
        expectNoSideEffect()
    }

    @Test("REDUCE on storage classes and module classes is refused; __import__ never resolves")
    func reduce() {
        var p = PickleBytes()
        p.global("torch", "FloatStorage"); p.op(0x29); p.reduce(); p.stop()
        expectRefused(zipped(p.bytes), "REDUCE would call 'torch.FloatStorage'")
        var q = PickleBytes()
        q.global("torchvision.models.resnet", "ResNet"); q.op(0x29); q.reduce(); q.stop()
        expectRefused(zipped(q.bytes), "REDUCE would call 'torchvision.models.resnet.ResNet'")
        var r = PickleBytes()
        r.global("builtins", "__import__"); r.str("os"); r.op(0x85); r.reduce(); r.stop()
        expectRefused(zipped(r.bytes), "builtins.__import__")
        var s = PickleBytes()
        s.global("torch", "load"); s.stop()
        expectRefused(zipped(s.bytes), "torch.load")
        expectNoSideEffect()
    }

    @Test("a memo get of an index never set is refused")
    func memoGet() {
        var p = PickleBytes()
        p.op(0x68, 5); p.stop()
        expectRefused(zipped(p.bytes), "memo index 5 was never set", "(BINGET)")
    }

    @Test("deep MARK nesting is refused; deep and cyclic containers end in errors, not crashes")
    func nesting() {
        var p = PickleBytes()
        for _ in 0..<100_000 { p.mark() }
        expectRefused(zipped(p.bytes), "nested MARKs")
        // A million nested 1-tuples: decoded flat, refused as not a state dict.
        var q = PickleBytes()
        q.emptyTuple()
        for _ in 0..<1_000_000 { q.op(0x85) }
        q.stop()
        expectRefused(zipped(q.bytes), "not a state dict")
        // A dict that contains itself under 'state_dict'.
        var r = PickleBytes()
        r.emptyDict(); r.op(0x71, 0); r.str("state_dict"); r.op(0x68, 0); r.op(0x73); r.stop()
        expectRefused(zipped(r.bytes), "no state dict (a dict of tensors) or nn.Module found", "state_dict (dict)")
        // A module whose _modules holds itself.
        var m = PickleBytes()
        m.global("torch.nn.modules.container", "Sequential"); m.emptyTuple(); m.op(0x81); m.op(0x71, 0)
        m.emptyDict(); m.mark(); m.str("_parameters"); m.emptyDict(); m.str("_modules"); m.emptyDict(); m.str("0"); m.op(0x68, 0); m.op(0x73)
        m.setItems(); m.op(0x62); m.stop()
        expectRefused(zipped(m.bytes), "submodule '0' contains the module it belongs to (a cycle)")
    }

    @Test("an unknown opcode is refused with its value and byte offset")
    func unknownOpcode() {
        expectRefused(zipped([0x80, 0x02, 0xFF]), "opcode 0xFF", "byte 2")
    }

    @Test("a storage larger than its data is refused (zip member and legacy stream)")
    func storageTooLarge() {
        let pickle = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 1_000_000, size: [1_000_000], stride: [1]) })])
        expectRefused(torchZip(pickle: pickle, storages: [("0", f32Bytes([1, 2]))]), "storage larger than its data")
        // A view reaching past its storage is refused at unpickling.
        let view = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 2, size: [3], stride: [1]) })])
        expectRefused(torchZip(pickle: view, storages: [("0", f32Bytes([1, 2]))]), "reaches element 2 but the storage has 2 elements")
        // Negative strides and absurd element counts too.
        let negative = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 2, size: [2], stride: [-1]) })])
        expectRefused(torchZip(pickle: negative, storages: [("0", f32Bytes([1, 2]))]), "negative")
        let huge = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 2, size: [1 << 20, 1 << 20], stride: [0, 0]) })])
        expectRefused(torchZip(pickle: huge, storages: [("0", f32Bytes([1, 2]))]), "--max-tensor-bytes")
        // Legacy: the stored count claims far more bytes than the file has.
        var stream: [UInt8] = [0x80, 0x02, 0x8A, 0x0A] + TorchLegacy.magic + [0x2E] + [0x80, 0x02, 0x4D, 0xE9, 0x03, 0x2E]
        stream += [0x80, 0x02, 0x7D, 0x2E]
        var p = PickleBytes()
        p.emptyDict(); p.str("w"); p.global("torch._utils", "_rebuild_tensor"); p.mark()
        p.mark(); p.str("storage"); p.global("torch", "FloatStorage"); p.str("1"); p.str("cpu"); p.int(1 << 30); p.op(0x4E); p.tuple(); p.op(0x51)
        p.int(0); p.ints([1]); p.ints([1]); p.tuple(); p.reduce(); p.op(0x73); p.stop()
        stream += p.bytes
        var keys = PickleBytes(); keys.op(0x5D); keys.str("1"); keys.op(0x61); keys.stop()
        stream += keys.bytes + withUnsafeBytes(of: Int64(1 << 30).littleEndian, Array.init) + f32Bytes([1])
        expectRefused(stream, "storage larger than the file")
    }

    @Test("a zip member whose local header offset points outside the file is refused")
    func zipOffsetOutside() {
        let pickle = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 2, size: [2], stride: [1]) })])
        var zip = torchZip(pickle: pickle, storages: [("0", f32Bytes([1, 2]))])
        // Patch the storage member's central directory entry: local header offset → far past the end.
        let name = Array("archive/data/0".utf8)
        var i = zip.count - 22
        while i > 0 && !(zip[i] == 0x50 && zip[i + 1] == 0x4B && zip[i + 2] == 0x01 && zip[i + 3] == 0x02 && Array(zip[(i + 46)..<min(zip.count, i + 46 + name.count)]) == name) { i -= 1 }
        #expect(i > 0)
        zip.replaceSubrange((i + 42)..<(i + 46), with: [0xF0, 0xFF, 0xFF, 0x7F])
        expectRefused(zip, "archive/data/0 (zip member)", "points outside the file")
        // And a member size that runs past the end of the file.
        var big = torchZip(pickle: pickle, storages: [("0", f32Bytes([1, 2]))])
        big.replaceSubrange((i + 20)..<(i + 28), with: [0, 0, 0, 0x10, 0, 0, 0, 0x10])
        expectRefused(big, "archive/data/0 (zip member)", "stored size 268435456 points outside the file")
        // A flipped storage byte is caught by the CRC.
        var flipped = torchZip(pickle: pickle, storages: [("0", f32Bytes([1, 2]))])
        let payload = f32Bytes([1, 2])
        if let at = (0..<(flipped.count - 8)).first(where: { Array(flipped[$0..<($0 + 8)]) == payload }) { flipped[at] ^= 1 }
        expectRefused(flipped, "CRC-32")
    }

    @Test("truncated files and random bytes are refused without crashing")
    func truncation() {
        let pickle = PickleBytes.stateDict([("w", { $0.tensor(key: "0", count: 2, size: [2], stride: [1]) })])
        let zip = torchZip(pickle: pickle, storages: [("0", f32Bytes([1, 2]))])
        for cut in stride(from: 1, to: zip.count, by: 7) {
            #expect(throws: ResNetError.self) { try readBytes(Array(zip.prefix(cut))) }
        }
        for cut in 3..<pickle.count {
            #expect(throws: ResNetError.self) { try readBytes(zipped(Array(pickle.prefix(cut)))) }
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var bytes = pickle
            for _ in 0..<3 { bytes[Int.random(in: 2..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? readBytes(torchZip(pickle: bytes, storages: [("0", f32Bytes([1, 2]))]))
        }
    }
}

// MARK: - real checkpoints

@Suite("Torch reader: real external checkpoints")
struct TorchExternalTests {
    struct Expectation {
        var path: String
        var container: String
        var tensors: Int
        var elements: Int
        var ignored: [String]
        var shapes: [String: [Int]]
        var notes: [String]
    }

    // Counts from SOURCES.md; num_batches_tracked counters are moved to `ignored`.
    static let files: [Expectation] = [
        Expectation(path: "akamaster-resnet20/resnet20-12fca82f.th", container: "torch-legacy", tensors: 97, elements: 271_098,
                    ignored: ["best_prec1"], shapes: ["conv1.weight": [16, 3, 3, 3], "bn1.running_var": [16], "layer1.0.conv1.weight": [16, 16, 3, 3],
                                                      "layer2.0.conv1.weight": [32, 16, 3, 3], "linear.weight": [10, 64], "linear.bias": [10]],
                    notes: ["prefix 'module.'", "'state_dict'"]),
        Expectation(path: "akamaster-resnet56/resnet56-4bfd9763.th", container: "torch-legacy", tensors: 277, elements: 857_082,
                    ignored: ["best_prec1"], shapes: ["layer3.8.bn2.running_var": [64]], notes: ["prefix 'module.'"]),
        Expectation(path: "bognev-pruning/checkpoint.th", container: "root 'archive/'", tensors: 116 - 19, elements: 271_117 - 19,
                    ignored: ["epoch", "best_prec1", "layer3.2.bn2.num_batches_tracked"],
                    shapes: ["conv1.weight": [16, 3, 3, 3], "layer2.0.conv1.weight": [32, 16, 3, 3], "linear.weight": [10, 64]],
                    notes: ["prefix 'module.'", "_metadata", "19 num_batches_tracked"]),
        Expectation(path: "atreides-basic-ic/resnet_neo_v1_5e4_20.pth", container: "root 'resnet_neo_v1_5e4_20/', little-endian", tensors: 135 - 19,
                    elements: 271_805 - 19, ignored: ["convs.8.bn2.num_batches_tracked"],
                    shapes: ["conv0.weight": [16, 3, 3, 3], "conv0.bias": [16], "bn0.running_mean": [16], "convs.0.conv1.weight": [16, 16, 3, 3],
                             "convs.3.conv1.weight": [32, 16, 3, 3], "convs.3.conv1.bias": [32], "fc.weight": [10, 64], "fc.bias": [10]],
                    notes: ["_metadata"]),
        Expectation(path: "ehanw-advrob/resnet20.pth", container: "root 'archive/'", tensors: 128 - 21, elements: 274_063 - 21,
                    ignored: ["stage_2.0.downsample.1.num_batches_tracked"],
                    shapes: ["conv_1.weight": [16, 3, 3, 3], "stage_2.0.conv_1.weight": [32, 16, 3, 3], "stage_2.0.downsample.0.weight": [32, 16, 1, 1],
                             "stage_3.0.downsample.0.weight": [64, 32, 1, 1], "fc.weight": [10, 64], "fc.bias": [10]],
                    notes: ["_metadata"]),
    ]

    @Test("every external torch checkpoint reads with the tensor counts, names and shapes SOURCES.md states",
          arguments: files.indices)
    func external(_ index: Int) throws {
        let e = Self.files[index]
        guard let path = Paths.externalFile(e.path) else { return }
        let c = try readTorchCheckpoint(path: path)
        #expect(c.container.contains(e.container), "\(c.container)")
        #expect(c.tensors.count == e.tensors)
        #expect(c.tensors.reduce(0) { $0 + $1.tensor.count } == e.elements)
        #expect(Set(c.tensors.map(\.name)).count == c.tensors.count)
        #expect(c.tensors.allSatisfy { $0.sourceDType == .float32 && !$0.name.hasPrefix("module.") })
        let byName = Dictionary(uniqueKeysWithValues: c.tensors.map { ($0.name, $0.tensor) })
        for (name, shape) in e.shapes { #expect(byName[name]?.shape == shape, "\(name)") }
        for name in e.ignored { #expect(c.ignored.contains(name), "\(name) not in ignored \(c.ignored.prefix(8))") }
        let notes = c.notes.joined(separator: "\n")
        for n in e.notes { #expect(notes.contains(n), "notes lack \(n): \(notes)") }
        // Values: every element finite; BatchNorm variances positive, as training keeps them.
        #expect(c.tensors.allSatisfy { $0.tensor.data.allSatisfy(\.isFinite) })
        let variances = c.tensors.filter { $0.name.hasSuffix("running_var") }
        #expect(!variances.isEmpty)
        #expect(variances.allSatisfy { $0.tensor.data.allSatisfy { $0 > 0 } })
    }

    @Test("akamaster resnet20 (legacy torch) holds the same conv1 and linear weights as its Keras conversion")
    func crossFormat() throws {
        guard let torchPath = Paths.externalFile("akamaster-resnet20/resnet20-12fca82f.th"),
              let kerasPath = Paths.externalFile("leogem-keras-injector/ResNet20.keras") else { return }
        let torch = try readTorchCheckpoint(path: torchPath)
        let keras = try readKerasFile(path: kerasPath)
        let byName = Dictionary(uniqueKeysWithValues: torch.tensors.map { ($0.name, $0.tensor) })
        let kerasConv = try #require(keras.layerWeights.first { $0.layer.hasSuffix("conv2d") }?.variables.first?.tensor)
        #expect(kerasConv.shape == [3, 3, 3, 16])
        #expect(byName["conv1.weight"]?.permuted([2, 3, 1, 0]) == kerasConv) // OIHW → HWIO
        let kerasDense = try #require(keras.layerWeights.first { $0.layer.hasSuffix("dense") }?.variables.first?.tensor)
        #expect(byName["linear.weight"]?.permuted([1, 0]) == kerasDense) // (out, in) → (in, out)
    }
}

// MARK: - committed fixtures from the real torch (tools/make_torch_fixtures.py)

@Suite("Torch reader: committed fixtures")
struct TorchFixtureTests {
    struct FixtureEntry: Decodable, Sendable, CustomTestStringConvertible {
        var path: String
        var container: String
        var wrapper: String
        var tensors: Int
        var elements: Int
        var stored_dtypes: [String]
        var key_prefix: String
        var testDescription: String { path }
    }

    struct HostileEntry: Decodable, Sendable, CustomTestStringConvertible {
        var file: String
        var global: String?
        var marker: String?
        var testDescription: String { file }
    }

    struct Listing<T: Decodable>: Decodable { var files: [T] }

    static func load<T: Decodable>(_ relative: String, as: T.Type) -> [T] {
        let url = Paths.fixtures.appendingPathComponent(relative)
        guard let data = try? Data(contentsOf: url) else { return [] }
        return (try? JSONDecoder().decode(Listing<T>.self, from: data).files) ?? []
    }

    static let manifest = load("torch/MANIFEST.json", as: FixtureEntry.self)
    static let hostile = load("hostile/EXPECTED.json", as: HostileEntry.self)

    @Test("the fixture manifests are present and list files")
    func manifestsPresent() {
        #expect(Self.manifest.count >= 14)
        #expect(Self.hostile.count >= 40)
    }

    @Test("every committed torch fixture reads with the tensor count, elements, dtypes and prefix its manifest states",
          arguments: manifest)
    func fixture(_ entry: FixtureEntry) throws {
        let c = try readTorchCheckpoint(path: Paths.fixtures.appendingPathComponent("torch/\(entry.path)").path)
        let counters = c.ignored.filter { $0.hasSuffix("num_batches_tracked") }
        // The manifest counts the model's state dict, counters included (one element each).
        #expect(c.tensors.count + counters.count == entry.tensors)
        #expect(c.tensors.reduce(0) { $0 + $1.tensor.count } + counters.count == entry.elements)
        #expect(c.container.hasPrefix("torch-\(entry.container)"), "\(c.container)")
        let stored = Set(entry.stored_dtypes)
        let names: [DType: String] = [.float32: "float32", .float16: "float16", .bfloat16: "bfloat16", .int64: "int64"]
        #expect(c.tensors.allSatisfy { names[$0.sourceDType].map(stored.contains) == true })
        if !entry.key_prefix.isEmpty {
            let prefix = entry.key_prefix
            #expect(c.tensors.allSatisfy { !$0.name.hasPrefix(prefix) })
            #expect(c.notes.contains { $0.contains("prefix '\(prefix)'") })
        }
        #expect(c.tensors.allSatisfy { $0.tensor.data.allSatisfy(\.isFinite) })
        let variances = c.tensors.filter { $0.name.hasSuffix("running_var") }
        #expect(variances.allSatisfy { $0.tensor.data.allSatisfy { $0 > 0 } })
        let w = entry.wrapper
        if w == "whole nn.Module" { #expect(c.notes.contains { $0.contains("whole pickled nn.Module") }) }
        func took(_ key: String) -> Bool { c.notes.contains { $0.hasPrefix("weights taken from checkpoint['\(key)']") } && c.weightsPath == key }
        if w.contains("model_state_dict") { #expect(took("model_state_dict") && c.ignored.contains("optimizer_state_dict")) }
        if w.contains("'model'") { #expect(took("model") && c.ignored.contains("optimizer")) }
        if w.contains("'state_dict'") { #expect(took("state_dict") && c.ignored.contains("best_acc")) }
    }

    @Test("the legacy, DataParallel and whole-module copies of one model hold the same tensors as its state dict")
    func sameWeightsAcrossContainers() throws {
        let dir = Paths.fixtures.appendingPathComponent("torch/cifar-resnet20-optionA")
        let reference = try readTorchCheckpoint(path: dir.appendingPathComponent("cifar-resnet20-optionA.pth").path)
        for other in ["legacy.th", "checkpoint-dataparallel.th", "whole-module.pth"] {
            let c = try readTorchCheckpoint(path: dir.appendingPathComponent(other).path)
            #expect(c.tensors.map(\.name) == reference.tensors.map(\.name), "\(other)")
            #expect(c.tensors.map(\.tensor) == reference.tensors.map(\.tensor), "\(other)")
            #expect(c.ignored.filter { $0.hasSuffix("num_batches_tracked") } == reference.ignored.filter { $0.hasSuffix("num_batches_tracked") })
        }
    }

    @Test("every hostile file is refused with exit code 3, names the global it tries, and runs nothing",
          arguments: hostile)
    func hostileFile(_ entry: HostileEntry) throws {
        let relative = entry.file
        let path = Paths.fixtures.appendingPathComponent("hostile/\(relative)").path
        var message = ""
        do {
            if relative.hasPrefix("pickles/") {
                // Bare pickles go straight to the pickle machine.
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                try data.withUnsafeBytes { raw in
                    var m = PickleMachine(bytes: raw, start: 0, file: relative, member: "pickle", policy: .moduleRecords)
                    let v = try m.run()
                    var u = TorchUnwrapper(arena: m.arena, file: relative)
                    try u.unwrap(v)
                }
            } else {
                _ = try readTorchCheckpoint(path: path)
            }
            Issue.record("\(relative) was accepted")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3)
            message = e.description
        }
        if let global = entry.global {
            #expect(message.contains("'\(global)'"), "\(relative): \(message)")
            #expect(message.contains("nothing was executed"), "\(relative): \(message)")
        }
        if let marker = entry.marker {
            #expect(!FileManager.default.fileExists(atPath: marker), "\(relative) left its marker")
        }
        testLog("refused \(relative): \(message)")
    }
}
