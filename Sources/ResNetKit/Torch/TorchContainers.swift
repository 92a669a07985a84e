import Foundation

/// What a container yields: the unpickled object and a way to reach each storage's bytes.
struct TorchDecoded {
    var root: PickleValue
    var arena: PickleArena
    var recordClasses: [String]
    /// Data classes decoded as inert records (`argparse.Namespace`, `collections.Counter` …).
    var dataRecordClasses: [String]
    /// Describes the container for ``TorchCheckpoint/container``.
    var container: String
    var notes: [String]
    /// Whether stored elements are big-endian.
    var bigEndian: Bool
}

/// Gives access to the stored bytes of a storage key.
protocol TorchStorageSource {
    /// Calls `body` with the stored bytes of `key`, which must hold at least `minimumBytes`.
    func withStorage<R>(_ key: String, minimumBytes: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R
}

// MARK: - zip archives (torch >= 1.6)

/// One member as the zip directory describes it, after its ranges were checked against the file.
struct ZipMember {
    var name: String
    var compressed: Bool
    var compressedSize: Int
    var uncompressedSize: Int
    var crc32: UInt32
    /// Where the member's stored bytes are in the file.
    var data: Range<Int>
}

/// Walks the end-of-central-directory record (zip64 aware), every central directory entry and
/// every local header, checking each offset and size against the file, and that each local header
/// agrees with its directory entry (name, method, CRC and sizes) and no name appears twice: a
/// zip two readers could read differently is refused.
///
/// `plainSizeWithinFile`: also require each member's uncompressed size to fit in the file. The
/// torch reader wants that (torch stores its members uncompressed); `.keras` and `.npz` members
/// may be deflated, and their inflated sizes are charged to the file's ``ReadBudget`` instead.
func checkedZipDirectory(_ b: UnsafeRawBufferPointer, file: String, plainSizeWithinFile: Bool = true) throws -> [ZipMember] {
    func bad(_ place: String, _ reason: String) -> ResNetError { .invalidInput(file: file, place: place, reason: reason) }
    func u16(_ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
    func u32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[o + $1]) << (8 * $1) } }
    func u64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[o + $1]) << (8 * $1) } }
    func int(_ v: UInt64, _ place: String, _ what: String) throws -> Int {
        guard v <= UInt64(b.count) else { throw bad(place, "\(what) \(v) points outside the file (\(b.count) bytes)") }
        return Int(v)
    }
    guard b.count >= 22 else { throw bad("zip directory", "file too short for a zip archive") }
    let lowest = max(0, b.count - 22 - 0xFFFF)
    var eocd = b.count - 22
    while eocd >= lowest && u32(eocd) != 0x0605_4B50 { eocd -= 1 }
    guard eocd >= lowest else { throw bad("zip directory", "no end-of-central-directory record") }
    var count = UInt64(u16(eocd + 10))
    var cdSize = UInt64(u32(eocd + 12))
    var cdOffset = UInt64(u32(eocd + 16))
    var cdLimit = eocd
    let saturated = count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF
    let locator = eocd - 20
    let hasLocator = locator >= 0 && u32(locator) == 0x0706_4B50
    guard hasLocator || !saturated else { throw bad("zip directory", "zip64 sizes without a zip64 locator") }
    if hasLocator {
        // Readers take the zip64 record whenever a locator is present, so both records must be
        // valid and agree: the directory checked here is the one every reader sees.
        let record = try int(u64(locator + 8), "zip64 locator", "end record offset")
        guard record <= locator - 56, u32(record) == 0x0606_4B50 else { throw bad("zip64 end record at byte \(record)", "missing or outside the file") }
        let count64 = u64(record + 32), size64 = u64(record + 40), offset64 = u64(record + 48)
        guard count == 0xFFFF || count == count64, cdSize == 0xFFFF_FFFF || cdSize == size64,
              cdOffset == 0xFFFF_FFFF || cdOffset == offset64 else {
            throw bad("zip64 end record at byte \(record)",
                      "disagrees with the end-of-central-directory record (\(count64) members, \(size64) bytes at \(offset64) against \(count), \(cdSize) at \(cdOffset))")
        }
        count = count64
        cdSize = size64
        cdOffset = offset64
        cdLimit = record
    }
    guard count <= UInt64(TorchLimits.maxZipMembers) else {
        throw bad("zip directory", "declares \(count) members (limit \(TorchLimits.maxZipMembers))")
    }
    let start = try int(cdOffset, "zip directory", "central directory offset")
    let size = try int(cdSize, "zip directory", "central directory size")
    guard size <= cdLimit - start, start <= cdLimit else {
        throw bad("zip directory", "central directory [\(start), +\(size)) overlaps its end record or lies outside the file")
    }
    let end = start + size
    var members: [ZipMember] = []
    var seen = Set<String>()
    var pos = start
    for i in 0..<Int(count) {
        let place = "zip directory entry \(i) at byte \(pos)"
        guard end - pos >= 46, u32(pos) == 0x0201_4B50 else { throw bad(place, "not a central directory entry") }
        let flags = u16(pos + 8)
        let method = u16(pos + 10)
        let crc = u32(pos + 16)
        var compressed = UInt64(u32(pos + 20))
        var uncompressed = UInt64(u32(pos + 24))
        let nameLength = u16(pos + 28), extraLength = u16(pos + 30), commentLength = u16(pos + 32)
        var local = UInt64(u32(pos + 42))
        guard 46 + nameLength + extraLength + commentLength <= end - pos else { throw bad(place, "entry runs past the central directory") }
        guard let name = String(validating: UnsafeRawBufferPointer(rebasing: b[(pos + 46)..<(pos + 46 + nameLength)]), as: UTF8.self) else {
            throw bad(place, "member name is not UTF-8")
        }
        let memberPlace = "\(name) (zip member)"
        guard seen.insert(name).inserted else {
            throw bad(memberPlace, "two members named '\(name)': Python's zipfile (and so Keras, numpy and torch's Python tools) reads the last, other readers the first; refusing to guess")
        }
        guard flags & 1 == 0 else { throw bad(memberPlace, "encrypted") }
        // Zip64 extra field: the 64-bit values of whichever 32-bit fields are saturated, in this order.
        var extra = pos + 46 + nameLength
        let extraEnd = extra + extraLength
        while extraEnd - extra >= 4 {
            let id = u16(extra), length = u16(extra + 2)
            guard length <= extraEnd - extra - 4 else { throw bad(memberPlace, "extra field runs past its entry") }
            if id == 0x0001 {
                var field = extra + 4
                for value in [0, 1, 2] {
                    let saturated = value == 0 ? uncompressed == 0xFFFF_FFFF : value == 1 ? compressed == 0xFFFF_FFFF : local == 0xFFFF_FFFF
                    guard saturated else { continue }
                    guard field + 8 <= extra + 4 + length else { throw bad(memberPlace, "zip64 extra field too short") }
                    if value == 0 { uncompressed = u64(field) } else if value == 1 { compressed = u64(field) } else { local = u64(field) }
                    field += 8
                }
            }
            extra += 4 + length
        }
        pos += 46 + nameLength + extraLength + commentLength
        let header = try int(local, memberPlace, "local header offset")
        guard header <= b.count - 30, u32(header) == 0x0403_4B50 else {
            throw bad(memberPlace, "local header offset \(local) points outside the file or at bytes that are not a local header")
        }
        let stored = try int(compressed, memberPlace, "stored size")
        let plain = plainSizeWithinFile ? try int(uncompressed, memberPlace, "uncompressed size") : Int(clamping: uncompressed)
        // The local header must tell the same story as the directory entry: readers that walk
        // local headers (streaming unzippers) and readers that trust the directory would
        // otherwise see different members.
        let localNameLength = u16(header + 26), localExtraLength = u16(header + 28)
        guard localNameLength + localExtraLength <= b.count - header - 30 else {
            throw bad(memberPlace, "local header at byte \(header) runs past the end of the file")
        }
        guard localNameLength == nameLength,
              memcmp(b.baseAddress! + header + 30, b.baseAddress! + pos - extraLength - commentLength - nameLength, nameLength) == 0 else {
            let localName = String(decoding: UnsafeRawBufferPointer(rebasing: b[(header + 30)..<(header + 30 + localNameLength)]), as: UTF8.self)
            throw bad(memberPlace, "its local header at byte \(header) names it '\(localName)': the directory and the local header disagree, refusing to guess")
        }
        let localFlags = u16(header + 6), localMethod = u16(header + 8)
        guard localMethod == method else {
            throw bad(memberPlace, "compression method \(method) in the directory, \(localMethod) in the local header: refusing to guess")
        }
        guard localFlags & 1 == 0 else { throw bad(memberPlace, "encrypted (local header)") }
        var localCompressed = UInt64(u32(header + 18)), localPlain = UInt64(u32(header + 22))
        let localCRC = u32(header + 14)
        if localCompressed == 0xFFFF_FFFF || localPlain == 0xFFFF_FFFF {
            // A local zip64 extra field holds both sizes, plain first.
            var at = header + 30 + localNameLength
            let localExtraEnd = at + localExtraLength
            var found = false
            while localExtraEnd - at >= 4 {
                let id = u16(at), length = u16(at + 2)
                guard length <= localExtraEnd - at - 4 else { throw bad(memberPlace, "local extra field runs past its header") }
                if id == 0x0001 && length >= 16 {
                    localPlain = u64(at + 4)
                    localCompressed = u64(at + 12)
                    found = true
                }
                at += 4 + length
            }
            guard found else { throw bad(memberPlace, "local header has saturated sizes but no zip64 extra field") }
        }
        // With a data descriptor (flag bit 3) the local header may leave CRC and sizes zero.
        let deferredSizes = localFlags & 8 != 0
        for (what, local, central) in [("CRC-32", UInt64(localCRC), UInt64(crc)), ("stored size", localCompressed, compressed),
                                       ("plain size", localPlain, uncompressed)]
        where local != central && !(deferredSizes && local == 0) {
            throw bad(memberPlace, "\(what) \(central) in the directory, \(local) in the local header: refusing to guess")
        }
        let dataStart = header + 30 + localNameLength + localExtraLength
        guard dataStart <= b.count, stored <= b.count - dataStart else {
            throw bad(memberPlace, "data [\(dataStart), +\(stored)) extends past the end of the file (\(b.count) bytes)")
        }
        guard flags & 8 == 0 || b.count - (dataStart + stored) >= 16 else { throw bad(memberPlace, "data descriptor outside the file") }
        guard method == 0 || method == 8 else { throw bad(memberPlace, "compression method \(method) (only stored and deflate are read)") }
        guard method == 8 || stored == plain else { throw bad(memberPlace, "stored member declares \(stored) stored and \(plain) plain bytes") }
        members.append(ZipMember(name: name, compressed: method == 8, compressedSize: stored, uncompressedSize: plain,
                                 crc32: crc, data: dataStart..<(dataStart + stored)))
    }
    return members
}

/// A torch zip archive: `<root>/data.pkl`, `<root>/data/<key>`, `<root>/version`, optional
/// `<root>/byteorder`, `.format_version`, `.storage_alignment`, `.data/serialization_id`.
/// Torch stores members uncompressed: those are read in place from the mapped file and their CRC
/// checked; deflated members (re-zipped files) are inflated with a cap, charged to the budget (``ZipImage``).
final class TorchZip: TorchStorageSource {
    let file: String
    let image: MappedFile
    private let zip: ZipImage
    /// What reading the archive may allocate (inflated members; the tensors are charged by the caller).
    let budget: ReadBudget
    let root: String
    /// How many `data/` members start on a 64-byte boundary, of how many.
    let aligned: (Int, Int)

    init(image: MappedFile, file: String, budget: ReadBudget) throws {
        self.file = file
        self.image = image
        self.budget = budget
        zip = try ZipImage(bytes: image.bytes, file: file, plainSizeWithinFile: true)
        let list = zip.members
        let roots = list.map(\.name).filter { $0.hasSuffix("/data.pkl") && $0.split(separator: "/", omittingEmptySubsequences: false).count == 2 }
        guard roots.count == 1, let pkl = roots.first else {
            let reason = roots.isEmpty ? "no <root>/data.pkl member: not a PyTorch zip checkpoint"
                                       : "several data.pkl roots: \(roots.sorted().joined(separator: ", "))"
            throw ResNetError.invalidInput(file: file, place: "zip directory", reason: reason)
        }
        let root = String(pkl.dropLast("data.pkl".count))
        self.root = root
        if zip["\(root)constants.pkl"] != nil || list.contains(where: { $0.name.hasPrefix("\(root)code/") }) {
            throw ResNetError.unsupported(file: file, place: "\(root)constants.pkl",
                reason: "a TorchScript archive (torch.jit.save); save the model's state_dict with torch.save instead")
        }
        let storages = list.filter { $0.name.hasPrefix("\(root)data/") }
        aligned = (storages.filter { $0.data.lowerBound % 64 == 0 }.count, storages.count)
    }

    /// Calls `body` with the bytes of `<root>name`, or returns nil when the member is absent.
    /// `flag` names the ``ReadLimits`` entry `limit` comes from, for the refusal.
    func withMember<R>(_ name: String, limit: Int, flag: ReadLimits.Limit? = nil, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R? {
        let path = root + name
        guard let m = zip[path] else { return nil }
        let place = "\(path) (zip member)"
        guard m.uncompressedSize <= limit else {
            if let flag {
                throw ReadLimits.current.exceeded(flag, file: file, place: place, found: "declares \(m.uncompressedSize) bytes")
            }
            throw ResNetError.invalidInput(file: file, place: place, reason: "declares \(m.uncompressedSize) bytes (limit \(limit))")
        }
        return try zip.withMember(m, budget: budget, body)
    }

    func withStorage<R>(_ key: String, minimumBytes: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let place = "\(root)data/\(key) (zip member)"
        let result = try withMember("data/\(key)", limit: Int(clamping: TorchLimits.maxMemberBytes)) { raw -> R in
            guard raw.count >= minimumBytes else {
                throw ResNetError.invalidInput(file: file, place: place,
                    reason: "storage '\(key)' declares \(minimumBytes) bytes but the member holds \(raw.count): storage larger than its data")
            }
            return try body(raw)
        }
        guard let result else {
            throw ResNetError.invalidInput(file: file, place: place, reason: "storage '\(key)' named in data.pkl has no member")
        }
        return result
    }

    /// Unpickles `data.pkl` and reads the small records that describe the archive.
    func decode(policy: PicklePolicy) throws -> TorchDecoded {
        var notes: [String] = []
        func text(_ name: String) throws -> String? {
            try withMember(name, limit: 64) { raw in
                guard let s = String(validating: raw, as: UTF8.self) else {
                    throw ResNetError.invalidInput(file: file, place: root + name, reason: "not text")
                }
                return s.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        var bigEndian = false
        var orderText = "little-endian (no byteorder record)"
        if let order = try text("byteorder") {
            switch order {
            case "little": orderText = "little-endian"
            case "big": bigEndian = true; orderText = "big-endian"
            default: throw ResNetError.invalidInput(file: file, place: root + "byteorder", reason: "'\(order)' is neither 'little' nor 'big'")
            }
        }
        var details = ["root '\(root)'", orderText]
        if let version = try text("version") {
            guard let v = Int(version), v >= 1 else {
                throw ResNetError.invalidInput(file: file, place: root + "version", reason: "'\(version)' is not a format version")
            }
            details.append("version \(v)")
        }
        if let format = try text(".format_version") { details.append("format_version \(format)") }
        if let alignment = try text(".storage_alignment") { details.append("storage alignment \(alignment)") }
        if aligned.1 > 0 { details.append(aligned.0 == aligned.1 ? "storages 64-byte aligned" : "\(aligned.0) of \(aligned.1) storages 64-byte aligned") }
        let decoded = try withMember("data.pkl", limit: ReadLimits.current.maxHeaderBytes, flag: .headerBytes) { raw in
            var machine = PickleMachine(bytes: raw, start: 0, file: file, member: root + "data.pkl", policy: policy)
            let value = try machine.run()
            if machine.position != raw.count {
                notes.append("\(raw.count - machine.position) bytes after the pickle's STOP in data.pkl ignored")
            }
            return TorchDecoded(root: value, arena: machine.arena, recordClasses: machine.recordClasses, dataRecordClasses: machine.dataRecordClasses,
                                container: "torch-zip (\(details.joined(separator: ", ")))", notes: notes, bigEndian: bigEndian)
        }
        guard let decoded else { throw ResNetError.invalidInput(file: file, place: root + "data.pkl", reason: "missing") }
        return decoded
    }
}

// MARK: - legacy stream (torch < 1.6)

/// The pre-1.6 stream: pickled magic number, protocol version, sys_info, the object, the list of
/// storage keys, then per key an int64 element count and the raw elements. torch's own reader
/// takes counts and elements as little-endian whatever sys_info says (its writer converts), so
/// this reader does too and only reports sys_info.
final class TorchLegacy: TorchStorageSource {
    let file: String
    let image: MappedFile
    /// Byte range of each stored storage in the file.
    private var ranges: [String: Range<Int>] = [:]

    static let magic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19] // 0x1950a86a20f9469cfc6c, little-endian
    static let protocolVersion = 1001

    init(image: MappedFile, file: String) {
        self.file = file
        self.image = image
    }

    func withStorage<R>(_ key: String, minimumBytes: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let range = ranges[key] else {
            throw ResNetError.invalidInput(file: file, place: "storage list", reason: "storage '\(key)' named in the pickle has no stored data")
        }
        guard range.count >= minimumBytes else {
            throw ResNetError.invalidInput(file: file, place: "storage '\(key)' at byte \(range.lowerBound)",
                reason: "holds \(range.count) bytes, \(minimumBytes) needed")
        }
        return try body(UnsafeRawBufferPointer(rebasing: image.bytes[range]))
    }

    func decode(policy: PicklePolicy) throws -> TorchDecoded {
        let bytes = image.bytes
        var position = 0
        func next(_ what: String, policy: PicklePolicy = .stateDict, legacy: Bool = false) throws -> (PickleValue, PickleMachine) {
            var m = PickleMachine(bytes: bytes, start: position, file: file, member: "legacy stream (\(what))",
                                  policy: policy, legacyPersistentIds: legacy)
            let v = try m.run()
            position = m.position
            return (v, m)
        }
        let (magic, _) = try next("magic number")
        guard case let .bigInt(m) = magic, m == Self.magic else {
            throw ResNetError.invalidInput(file: file, place: "byte 0", reason: "not the torch legacy magic number 0x1950a86a20f9469cfc6c")
        }
        let (version, _) = try next("protocol version")
        guard case let .int(v) = version, v == Self.protocolVersion else {
            throw ResNetError.unsupported(file: file, place: "protocol version", reason: "legacy protocol \(version) (only \(Self.protocolVersion) is known)")
        }
        let (sysInfo, sysMachine) = try next("sys_info")
        var endian = "little-endian"
        if let d = sysMachine.arena.dict(sysInfo), case .bool(false)? = d.value(forString: "little_endian") {
            endian = "written on a big-endian machine; elements read little-endian as torch does"
        }
        let (object, machine) = try next("object", policy: policy, legacy: true)
        let (keysValue, keysMachine) = try next("storage keys")
        guard let keyItems = keysMachine.arena.sequence(keysValue) else {
            throw ResNetError.invalidInput(file: file, place: "storage key list", reason: "not a list")
        }
        for item in keyItems {
            guard case let .string(key) = item else {
                throw ResNetError.invalidInput(file: file, place: "storage key list", reason: "key is \(keysMachine.arena.kindName(item)), not a string")
            }
            let place = "storage '\(key)' at byte \(position)"
            guard let ref = machine.storages[key] else {
                throw ResNetError.invalidInput(file: file, place: place, reason: "listed but never named by the pickle")
            }
            guard ranges[key] == nil else { throw ResNetError.invalidInput(file: file, place: place, reason: "listed twice") }
            guard bytes.count - position >= 8 else {
                throw ResNetError.invalidInput(file: file, place: place, reason: "truncated before its element count")
            }
            var raw: UInt64 = 0
            for i in 0..<8 { raw |= UInt64(bytes[position + i]) << (8 * i) }
            position += 8
            guard raw == UInt64(ref.count) else {
                throw ResNetError.invalidInput(file: file, place: place, reason: "stores \(raw) elements but the pickle declares \(ref.count)")
            }
            let (size, overflow) = ref.count.multipliedReportingOverflow(by: ref.dtype.size)
            guard !overflow, size <= bytes.count - position else {
                throw ResNetError.invalidInput(file: file, place: place,
                    reason: "declares \(ref.count) × \(ref.dtype.size) bytes but only \(bytes.count - position) remain: storage larger than the file")
            }
            ranges[key] = position..<(position + size)
            position += size
        }
        var notes: [String] = []
        if position < bytes.count { notes.append("\(bytes.count - position) bytes after the last storage ignored") }
        return TorchDecoded(root: object, arena: machine.arena, recordClasses: machine.recordClasses, dataRecordClasses: machine.dataRecordClasses,
                            container: "torch-legacy (protocol \(Self.protocolVersion), \(endian))", notes: notes, bigEndian: false)
    }
}
