// NumPy `.npy` (format versions 1.0, 2.0, 3.0) and `.npz` archives, as written by `numpy.save`,
// `numpy.savez` and `numpy.savez_compressed`. Used for golden inputs/outputs; every size in the
// file is checked before it is used.
//
// .npy layout: "\x93NUMPY", major, minor, header length (u16 LE for v1, u32 LE for v2/v3), then an
// ASCII (v1/v2: latin-1, v3: UTF-8) Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and ended by '\n', then the raw elements.

import Foundation
import ZIPFoundation

/// The contents of one NumPy array: numbers (converted to float32) or a 0-d string.
public enum NPYValues: Sendable, Equatable {
    /// Every element converted to float32, in C (row-major) order whatever the file's order.
    case numbers([Float])
    /// A 0-d unicode (`<U…`) or bytes (`|S…`) array, trailing NULs removed.
    case string(String)
}

/// One array read from a `.npy` file or an `.npz` member.
public struct NPYArray: Sendable, Equatable {
    /// The dtype as the file spelled it, e.g. `<f4`, `>f8`, `<U4`.
    public var descr: String
    /// Dimensions, outermost first; empty for a 0-d array.
    public var shape: [Int]
    /// The elements.
    public var values: NPYValues

    /// Creates an array; for `.numbers`, the count must match the product of `shape` (otherwise
    /// `tensor` is nil and encoding it writes a file numpy rejects).
    public init(descr: String, shape: [Int], values: NPYValues) {
        self.descr = descr; self.shape = shape; self.values = values
    }

    /// A float32 array holding `tensor` (written as `<f4`).
    public init(_ tensor: Tensor) {
        self.init(descr: "<f4", shape: tensor.shape, values: .numbers(tensor.data))
    }

    /// A 0-d unicode string array (written as `<U<n>`), like numpy's `np.array('NCHW')`.
    public init(string: String) {
        self.init(descr: "<U\(max(string.unicodeScalars.count, 1))", shape: [], values: .string(string))
    }

    /// The numbers as a float32 tensor, or nil for a string array.
    public var tensor: Tensor? {
        guard case let .numbers(v) = values, shape.reduce(1, *) == v.count else { return nil }
        return Tensor(shape: shape, data: v)
    }

    /// The string of a 0-d string array, or nil for a numeric array.
    public var string: String? {
        guard case let .string(s) = values else { return nil }
        return s
    }
}

/// Reading and writing single `.npy` arrays.
public enum NPY {
    /// Longest header accepted. numpy itself refuses headers over 10 000 bytes unless told otherwise;
    /// this is generous but still stops a length field from asking for gigabytes.
    static let maxHeaderLength = 1 << 20

    /// Parses a whole `.npy` file held in `data`; `file` and `place` name it in errors.
    public static func read(_ data: Data, file: String = "<data>", place: String = "") throws -> NPYArray {
        let budget = ReadBudget(file: file, fileBytes: data.count)
        return try data.withUnsafeBytes { try NPYParser(bytes: $0, file: file, place: place, budget: budget).parse() }
    }

    /// Reads and parses the `.npy` file at `path`.
    public static func read(path: String) throws -> NPYArray {
        let image = try MappedFile(path: path)
        let budget = ReadBudget(file: path, fileBytes: image.bytes.count)
        return try NPYParser(bytes: image.bytes, file: path, place: "", budget: budget).parse()
    }

    /// Serialises `array` as a version 1.0 `.npy` (little-endian `<f4` numbers or `<U` string, C order).
    public static func encode(_ array: NPYArray) -> Data {
        let payload: [UInt8]
        let descr: String
        switch array.values {
        case let .numbers(values):
            descr = "<f4"
            var out = [UInt8]()
            out.reserveCapacity(values.count * 4)
            for v in values {
                let b = v.bitPattern.littleEndian
                out += [UInt8(b & 0xFF), UInt8((b >> 8) & 0xFF), UInt8((b >> 16) & 0xFF), UInt8(b >> 24)]
            }
            payload = out
        case let .string(s):
            let scalars = Array(s.unicodeScalars)
            let n = max(scalars.count, 1)
            descr = "<U\(n)"
            var out = [UInt8](repeating: 0, count: n * 4)
            for (i, u) in scalars.enumerated() {
                for j in 0..<4 { out[i * 4 + j] = UInt8((u.value >> (8 * UInt32(j))) & 0xFF) }
            }
            payload = out
        }
        let shape: String
        switch array.shape.count {
        case 0: shape = "()"
        case 1: shape = "(\(array.shape[0]),)"
        default: shape = "(" + array.shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        // numpy pads so that the data starts on a 64-byte boundary, and ends the header with '\n'.
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0]
        let length = header.utf8.count
        out += [UInt8(length & 0xFF), UInt8(length >> 8)]
        out += Array(header.utf8)
        out += payload
        return Data(out)
    }
}

/// The arrays of a `.npz` archive (a zip of `.npy` members, stored or deflated).
public struct NPZ: Sendable {
    /// Arrays by member name without the `.npy` suffix (`input`, `output`, `layout`).
    public private(set) var arrays: [String: NPYArray]

    /// Wraps arrays, e.g. to encode them.
    public init(arrays: [String: NPYArray]) { self.arrays = arrays }

    /// The array stored as `<name>.npy`, if any.
    public subscript(name: String) -> NPYArray? { arrays[name] }

    /// Member names without `.npy`, sorted.
    public var names: [String] { arrays.keys.sorted() }

    /// Largest member accepted (uncompressed). Goldens are kilobytes; the file's budget bounds the rest.
    static let maxMemberSize = 1 << 32

    /// Reads the `.npz` file at `path`.
    public static func read(path: String) throws -> NPZ {
        try read(image: MappedFile(path: path), file: path)
    }

    /// Reads an `.npz` archive held in memory; `file` names it in errors.
    public static func read(data: Data, file: String = "<data>") throws -> NPZ {
        try read(image: MappedFile(copying: data, name: file), file: file)
    }

    /// The directory is checked in full first (local headers, duplicate names); each member is
    /// inflated with a cap and decoded, both charged to the file's ``ReadBudget`` before they are
    /// allocated, so a small archive cannot make this process allocate gigabytes.
    static func read(image: MappedFile, file: String) throws -> NPZ {
        let budget = ReadBudget(file: file, fileBytes: image.bytes.count)
        let zip = try ZipImage(bytes: image.bytes, file: file, plainSizeWithinFile: false)
        var arrays: [String: NPYArray] = [:]
        for m in zip.members where m.name.hasSuffix(".npy") {   // numpy ignores other members too
            let place = "member '\(m.name)'"
            let name = String(m.name.dropLast(4))
            guard arrays[name] == nil else {
                throw ResNetError.invalidInput(file: file, place: place, reason: "the archive holds '\(m.name)' twice")
            }
            guard m.uncompressedSize <= maxMemberSize else {
                throw ResNetError.invalidInput(file: file, place: place, reason: "declares \(m.uncompressedSize) uncompressed bytes, over the \(maxMemberSize)-byte limit")
            }
            arrays[name] = try zip.withMember(m, budget: budget) { raw in
                try NPYParser(bytes: raw, file: file, place: place, budget: budget).parse()
            }
        }
        return NPZ(arrays: arrays)
    }

    /// Serialises the arrays as an `.npz` (members `<name>.npy`, sorted by name), deflated like
    /// `numpy.savez_compressed` when `compressed`, stored like `numpy.savez` otherwise.
    public func encode(compressed: Bool = false) throws -> Data {
        let archive: Archive
        do {
            archive = try Archive(data: Data(), accessMode: .create)
            for (name, array) in arrays.sorted(by: { $0.key < $1.key }) {
                let bytes = NPY.encode(array)
                try archive.addEntry(with: "\(name).npy", type: .file, uncompressedSize: Int64(bytes.count),
                                     compressionMethod: compressed ? .deflate : .none) { position, size in
                    bytes.subdata(in: Int(position)..<Int(position) + size)
                }
            }
        } catch {
            throw ResNetError.io(file: "<npz>", reason: "cannot build the archive: \(error)")
        }
        guard let data = archive.data else { throw ResNetError.io(file: "<npz>", reason: "the in-memory archive has no data") }
        return data
    }
}

// MARK: - Parsing

/// Element kinds the reader understands.
private enum NPYKind {
    case float, signed, unsigned, bool, unicode, bytes
}

private struct NPYParser {
    let bytes: UnsafeRawBufferPointer
    let file: String
    let place: String
    let budget: ReadBudget

    func fail(_ reason: String) -> ResNetError {
        .invalidInput(file: file, place: place.isEmpty ? "npy header" : "\(place) npy header", reason: reason)
    }
    func unsupported(_ reason: String) -> ResNetError {
        .unsupported(file: file, place: place.isEmpty ? "npy header" : "\(place) npy header", reason: reason)
    }

    func parse() throws -> NPYArray {
        let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
        guard bytes.count >= 10 else { throw fail("file is \(bytes.count) bytes, too short for the 10-byte npy preamble") }
        guard Array(bytes[0..<6]) == magic else { throw fail("missing the \\x93NUMPY magic: not an .npy array") }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail("file is \(bytes.count) bytes, too short for the 12-byte npy \(major).x preamble") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw unsupported("npy format version \(major).\(bytes[7]); versions 1, 2 and 3 are supported")
        }
        guard headerLength <= NPY.maxHeaderLength else {
            throw fail("header length \(headerLength) is over the \(NPY.maxHeaderLength)-byte limit")
        }
        let dataStart = headerStart + headerLength
        guard dataStart <= bytes.count else {
            throw fail("header claims \(headerLength) bytes but only \(bytes.count - headerStart) follow the preamble (truncated)")
        }
        let headerBytes = bytes[headerStart..<dataStart]
        let header: String
        if major == 3 {
            guard let s = String(bytes: headerBytes, encoding: .utf8) else { throw fail("header is not valid UTF-8") }
            header = s
        } else {
            header = String(headerBytes.map { Character(Unicode.Scalar($0)) })   // latin-1
        }
        var headerParser = HeaderParser(text: header, fail: fail)
        let dict = try headerParser.parseDict()

        guard Set(dict.keys) == ["descr", "fortran_order", "shape"] else {
            throw fail("header keys are \(dict.keys.sorted()), expected exactly descr, fortran_order, shape")
        }
        guard case let .string(descr)? = dict["descr"] else {
            throw unsupported("descr is not a simple dtype string (structured arrays are not supported)")
        }
        guard case let .bool(fortran)? = dict["fortran_order"] else { throw fail("fortran_order is not True or False") }
        guard case let .tuple(shapeValues)? = dict["shape"] else { throw fail("shape is not a tuple") }
        var shape: [Int] = []
        for v in shapeValues {
            guard case let .int(d) = v else { throw fail("shape \(header) holds a non-integer") }
            shape.append(d)
        }
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw fail("shape \(shape): the element count overflows") }
            count = p
        }

        let (littleEndian, kind, itemSize) = try parseDescr(descr)
        let (needed, overflow) = count.multipliedReportingOverflow(by: itemSize)
        guard !overflow else { throw fail("shape \(shape) of \(descr): the byte count overflows") }
        let available = bytes.count - dataStart
        guard available >= needed else {
            throw ResNetError.invalidInput(file: file, place: place.isEmpty ? "npy data" : "\(place) npy data",
                                           reason: "shape \(shape) of \(descr) needs \(needed) bytes of data, the file has \(available) (truncated)")
        }
        guard available == needed else {
            throw ResNetError.invalidInput(file: file, place: place.isEmpty ? "npy data" : "\(place) npy data",
                                           reason: "\(available - needed) unexpected bytes after the \(needed) bytes of data")
        }

        switch kind {
        case .unicode, .bytes:
            guard shape.isEmpty else { throw unsupported("string arrays of shape \(shape); only 0-d string arrays are supported") }
            let s = try decodeString(at: dataStart, itemSize: itemSize, unicode: kind == .unicode, littleEndian: littleEndian)
            return NPYArray(descr: descr, shape: shape, values: .string(s))
        default:
            // Fortran order needs a second array for the transpose.
            let copies = fortran && shape.count > 1 ? 2 : 1
            try budget.charge(ReadLimits.float32Bytes(count) &* copies, place: place.isEmpty ? "npy data" : "\(place) npy data",
                              what: "the array \(shape) as float32")
            var values = [Float](repeating: 0, count: count)
            for i in 0..<count {
                let raw = readUInt(at: dataStart + i * itemSize, size: itemSize, littleEndian: littleEndian)
                values[i] = convert(raw, kind: kind, size: itemSize)
            }
            if fortran && shape.count > 1 {
                // Fortran order is C order of the reversed shape; transpose it back.
                let reversed = Tensor(shape: Array(shape.reversed()), data: values)
                values = reversed.permuted(Array((0..<shape.count).reversed())).data
            }
            return NPYArray(descr: descr, shape: shape, values: .numbers(values))
        }
    }

    /// Splits a dtype string such as `<f4`, `|u1`, `>i8`, `<U4`, `|S7`.
    func parseDescr(_ descr: String) throws -> (littleEndian: Bool, kind: NPYKind, itemSize: Int) {
        var chars = Substring(descr)
        var little = true
        if let first = chars.first, "<>|=".contains(first) {
            little = first != ">"          // '=' is native order, little-endian on every supported platform
            chars = chars.dropFirst()
        }
        guard let code = chars.first, let size = Int(chars.dropFirst()), size > 0 else {
            throw unsupported("dtype '\(descr)' is not understood")
        }
        let kind: NPYKind
        switch code {
        case "f": kind = .float; guard [2, 4, 8].contains(size) else { throw unsupported("float dtype '\(descr)'") }
        case "i": kind = .signed; guard [1, 2, 4, 8].contains(size) else { throw unsupported("integer dtype '\(descr)'") }
        case "u": kind = .unsigned; guard [1, 2, 4, 8].contains(size) else { throw unsupported("integer dtype '\(descr)'") }
        case "b": kind = .bool; guard size == 1 else { throw unsupported("bool dtype '\(descr)'") }
        case "U":
            kind = .unicode
            guard size <= NPY.maxHeaderLength else { throw unsupported("string dtype '\(descr)' is too long") }
            return (little, kind, size * 4)     // UTF-32 code units
        case "S":
            kind = .bytes
            guard size <= NPY.maxHeaderLength * 4 else { throw unsupported("bytes dtype '\(descr)' is too long") }
        default:
            throw unsupported("dtype '\(descr)' is not supported (floats, integers, bool and 0-d strings are)")
        }
        return (little, kind, size)
    }

    func readUInt(at offset: Int, size: Int, littleEndian: Bool) -> UInt64 {
        var v: UInt64 = 0
        for j in 0..<size {
            let b = UInt64(bytes[offset + (littleEndian ? j : size - 1 - j)])
            v |= b << (8 * UInt64(j))
        }
        return v
    }

    func convert(_ raw: UInt64, kind: NPYKind, size: Int) -> Float {
        switch (kind, size) {
        case (.float, 2): return Float(Float16(bitPattern: UInt16(raw)))
        case (.float, 4): return Float(bitPattern: UInt32(raw))
        case (.float, 8): return Float(Double(bitPattern: raw))
        case (.signed, _):
            let shift = UInt64(64 - 8 * size)
            return Float(Int64(bitPattern: raw << shift) >> Int64(shift))     // sign-extend
        case (.bool, _): return raw != 0 ? 1 : 0
        default: return Float(raw)
        }
    }

    func decodeString(at offset: Int, itemSize: Int, unicode: Bool, littleEndian: Bool) throws -> String {
        if unicode {
            var scalars = String.UnicodeScalarView()
            var units: [UInt32] = []
            for i in 0..<(itemSize / 4) {
                units.append(UInt32(readUInt(at: offset + 4 * i, size: 4, littleEndian: littleEndian)))
            }
            while units.last == 0 { units.removeLast() }
            for u in units {
                guard let s = Unicode.Scalar(u) else { throw fail("string holds an invalid code point \(u)") }
                scalars.append(s)
            }
            return String(scalars)
        } else {
            var raw = Array(bytes[offset..<offset + itemSize])
            while raw.last == 0 { raw.removeLast() }
            guard let s = String(bytes: raw, encoding: .utf8) else { throw fail("bytes string is not valid UTF-8") }
            return s
        }
    }
}

/// The Python literal subset an npy header uses.
private enum PyValue: Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case none
    case tuple([PyValue])
}

/// A small recursive-descent parser for the header dict; no `eval`, nothing but literals.
private struct HeaderParser {
    let chars: [Character]
    var i = 0
    let fail: (String) -> ResNetError

    init(text: String, fail: @escaping (String) -> ResNetError) {
        self.chars = Array(text)
        self.fail = fail
    }

    mutating func skipSpace() {
        while i < chars.count, chars[i].isWhitespace { i += 1 }
    }

    mutating func expect(_ c: Character) throws {
        skipSpace()
        guard i < chars.count, chars[i] == c else {
            throw fail("header is not a Python dict literal: expected '\(c)' at character \(i)")
        }
        i += 1
    }

    mutating func peek() -> Character? {
        skipSpace()
        return i < chars.count ? chars[i] : nil
    }

    mutating func parseDict() throws -> [String: PyValue] {
        try expect("{")
        var dict: [String: PyValue] = [:]
        while peek() != "}" {
            guard case let .string(key) = try parseValue(depth: 0) else { throw fail("header dict key is not a string") }
            try expect(":")
            guard dict[key] == nil else { throw fail("header repeats key '\(key)'") }
            dict[key] = try parseValue(depth: 0)
            if peek() == "," { i += 1 } else { break }
        }
        try expect("}")
        guard peek() == nil else { throw fail("unexpected text after the header dict at character \(i)") }
        return dict
    }

    mutating func parseValue(depth: Int) throws -> PyValue {
        guard depth < 8 else { throw fail("header nests too deeply") }
        guard let c = peek() else { throw fail("header ends in the middle of a value") }
        switch c {
        case "'", "\"":
            i += 1
            var s = ""
            while i < chars.count, chars[i] != c {
                guard chars[i] != "\\" else { throw fail("escapes in header strings are not supported") }
                s.append(chars[i]); i += 1
            }
            guard i < chars.count else { throw fail("unterminated string in header") }
            i += 1
            return .string(s)
        case "(", "[":
            let close: Character = c == "(" ? ")" : "]"
            i += 1
            var items: [PyValue] = []
            while peek() != close {
                items.append(try parseValue(depth: depth + 1))
                if peek() == "," { i += 1 } else { break }
            }
            try expect(close)
            return .tuple(items)
        case "0"..."9", "-":
            var digits = ""
            if c == "-" { digits.append(c); i += 1 }
            while i < chars.count, let d = chars[i].wholeNumberValue, (0...9).contains(d), chars[i].isASCII {
                digits.append(chars[i]); i += 1
                guard digits.count <= 19 else { throw fail("integer in header is too large") }
            }
            if i < chars.count, chars[i] == "L" { i += 1 }     // Python 2 long suffix
            guard let v = Int(digits) else { throw fail("'\(digits)' is not an integer") }
            guard v >= 0 else { throw fail("negative dimension \(v) in shape") }
            return .int(v)
        default:
            for (word, value) in [("True", PyValue.bool(true)), ("False", .bool(false)), ("None", .none)] {
                let w = Array(word)
                if i + w.count <= chars.count, Array(chars[i..<i + w.count]) == w {
                    i += w.count
                    return value
                }
            }
            throw fail("unexpected character '\(c)' in header at position \(i)")
        }
    }
}
