import CHDF5
import COpenBLAS
import Foundation

// The only Swift file that talks to libhdf5. C handles never leave it: callers get Swift values
// (strings, numbers, SourceTensor) or a ResNetError that carries libhdf5's own error stack.

/// Debian's libhdf5 is the serial (non thread-safe) build, so every call into it is serialised.
/// Recursive because a handle's `deinit` may run while the lock is already held.
private let hdf5Lock = NSRecursiveLock()

private func withHDF5<T>(_ body: () throws -> T) rethrows -> T {
    hdf5Lock.lock()
    defer { hdf5Lock.unlock() }
    // Automatic printing would write HDF5's stack to stderr on every failed probe; we read the
    // stack ourselves instead (see `HDF5File.failure`).
    chdf5_silence_errors()
    chdf5_refuse_external_links()
    chdf5_refuse_filter_plugins()
    return try body()
}

/// What an HDF5 link points at.
enum HDF5ObjectKind: Sendable, Equatable {
    case group
    case dataset
    case other
}

/// An attribute value, decoded.
enum HDF5Attribute: Sendable, Equatable {
    /// A scalar string (fixed or variable length).
    case string(String)
    /// A 1-D (or higher, flattened) array of strings.
    case strings([String])
    /// Integer or floating point values, flattened; a scalar is one element, an empty array none.
    case numbers([Double])

    /// The value as a list of strings: a scalar string is one element and an empty numeric array
    /// (what h5py writes for an empty list) is none.
    var stringList: [String]? {
        switch self {
        case let .string(s): return [s]
        case let .strings(a): return a
        case let .numbers(n): return n.isEmpty ? [] : nil
        }
    }
}

/// Limits on what is read from a file whose content is not trusted.
enum HDF5Limits {
    /// Most members listed for one group.
    static let maxGroupMembers = 1_000_000
    /// Most elements in one attribute.
    static let maxAttributeElements = 50_000_000
    // Bytes of one attribute, one dataset and all datasets together: ``ReadLimits``.
    /// Highest dataset rank accepted (libhdf5's own limit is 32).
    static let maxRank = 32
    /// How far a filtered (compressed) dataset may expand relative to the whole file; deflate
    /// cannot exceed about 1032:1.
    static let maxCompressionRatio = 1100
    /// How long libhdf5 may take to walk a file's metadata in the pre-flight child before the
    /// file is refused as one that makes it hang (the walk of a 100 MB ResNet-50 takes ~10 ms).
    static let preflightTimeoutMilliseconds: Int32 = 10_000
}

/// An HDF5 file opened read-only, from disk or from bytes in memory.
final class HDF5File {
    /// The name used in error messages (the path, or `archive.keras!model.weights.h5`).
    let name: String
    /// Size of the file image in bytes, used to bound what a dataset may claim to hold.
    let fileSize: Int
    /// The child process that runs libhdf5 on the file; this process never does.
    let sandbox: HDF5Sandbox
    /// The file on disk when its superblock is at byte 0, so that libhdf5's raw-data addresses are
    /// file offsets: streaming conversion then reads contiguous float32 datasets by offset.
    private(set) var rawPath: String?
    /// The limits in force when the file was opened (``ReadLimits/current``).
    private let limits = ReadLimits.current
    /// Float32 bytes of the datasets read so far, against ``ReadLimits/maxTotalBytes``.
    private var bytesRead = 0
    /// What reading this file may allocate: its own, or its container's for an image inside a `.keras`.
    let budget: ReadBudget

    /// The 8-byte HDF5 format signature, found at the start of the superblock.
    static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Where the superblock is: libhdf5 looks at offset 0, then 512, 1024, 2048, … (a user block
    /// may precede it). `readAt` returns 8 bytes at an offset, or nil past the end.
    static func superblockOffset(fileSize: Int, readAt: (Int) -> [UInt8]?) -> Int? {
        var offset = 0
        while offset <= fileSize - signature.count {
            if readAt(offset) == signature { return offset }
            offset = offset == 0 ? 512 : offset.multipliedReportingOverflow(by: 2).partialValue
            if offset <= 0 { break }
        }
        return nil
    }

    /// The file size the superblock at `offset` declares (base address + end-of-file address),
    /// or nil when the superblock version is unknown or the address is undefined. `header` holds
    /// the bytes from `offset` on (at least 64 when the file has them).
    ///
    /// Checked before libhdf5 sees the file so that a truncated file is reported by us; libhdf5
    /// 1.10 also leaks its half-opened file on that path and then complains at process exit.
    static func declaredSize(header: [UInt8]) -> UInt64? {
        guard header.count >= 12 else { return nil }
        let version = header[8]
        let offsetSize: Int, addressStart: Int, eofIndex: Int
        switch version {
        case 0, 1:
            guard header.count >= 15 else { return nil }
            offsetSize = Int(header[13])
            addressStart = version == 0 ? 24 : 28
            eofIndex = 2 // base, free-space info, end of file, driver info
        case 2, 3:
            offsetSize = Int(header[9])
            addressStart = 12
            eofIndex = 2 // base, superblock extension, end of file, root object header
        default:
            return nil
        }
        guard [2, 4, 8].contains(offsetSize), header.count >= addressStart + 3 * offsetSize else { return nil }
        func address(_ k: Int) -> UInt64? {
            let start = addressStart + k * offsetSize
            let bytes = header[start ..< start + offsetSize]
            if bytes.allSatisfy({ $0 == 0xFF }) { return nil }
            return bytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        guard let base = address(0), let eof = address(eofIndex) else { return nil }
        let (total, overflow) = base.addingReportingOverflow(eof)
        return overflow ? UInt64.max : total
    }

    /// Checks the superblock fields libhdf5 trusts first, before it parses anything: the version
    /// (0–3 exist), the sizes of file offsets and lengths (libhdf5 writes 8; 2 and 4 are legal),
    /// and the declared end of file against the real size.
    static func checkSuperblock(name: String, fileSize: Int, superblock: Int, header: [UInt8]) throws {
        let place = "superblock at byte \(superblock)"
        guard header.count >= 16 else {
            throw ResNetError.invalidInput(file: name, place: place, reason: "truncated file: \(header.count) bytes from the signature on, a superblock needs more")
        }
        let version = header[8]
        guard version <= 3 else {
            throw ResNetError.unsupported(file: name, place: place, reason: "superblock version \(version) (versions 0-3 are known)")
        }
        let (offsetSize, lengthSize) = version <= 1 ? (header[13], header[14]) : (header[9], header[10])
        for (what, size) in [("offsets", offsetSize), ("lengths", lengthSize)] where ![2, 4, 8].contains(size) {
            throw ResNetError.invalidInput(file: name, place: place, reason: "size of \(what) is \(size) bytes (2, 4 or 8 expected): damaged superblock")
        }
        try checkNotTruncated(name: name, fileSize: fileSize, superblock: superblock, header: header)
    }

    private static func checkNotTruncated(name: String, fileSize: Int, superblock: Int, header: [UInt8]) throws {
        guard let declared = declaredSize(header: header) else { return }
        // The base address is where the superblock sits when a user block precedes it.
        if declared > UInt64(fileSize) {
            throw ResNetError.invalidInput(file: name, place: "superblock at byte \(superblock)",
                reason: "truncated file: the superblock declares \(declared) bytes, the file has \(fileSize)")
        }
    }

    /// Opens the file at `path` read-only.
    init(path: String) throws {
        name = path
        let handle = FileHandle(fileDescriptor: try InputFile.open(path), closeOnDealloc: true)   // regular files only
        defer { try? handle.close() }
        let size: Int
        do {
            size = Int(try handle.seekToEnd())
        } catch {
            throw ResNetError.io(file: path, reason: "cannot read: \(error.localizedDescription)")
        }
        fileSize = size
        budget = ReadBudget(file: path, fileBytes: size)
        let found = HDF5File.superblockOffset(fileSize: size) { offset in
            guard (try? handle.seek(toOffset: UInt64(offset))) != nil,
                  let d = try? handle.read(upToCount: 8), d.count == 8 else { return nil }
            return [UInt8](d)
        }
        guard let superblock = found else {
            throw ResNetError.invalidInput(file: path, place: "",
                reason: "not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, …; \(size) bytes)")
        }
        var header: [UInt8] = []
        if (try? handle.seek(toOffset: UInt64(superblock))) != nil, let d = try? handle.read(upToCount: 64) {
            header = [UInt8](d)
        }
        try HDF5File.checkSuperblock(name: path, fileSize: size, superblock: superblock, header: header)
        PhaseTrace.mark("preflight start")
        // libhdf5 opens the file by its path again: it must still be a regular file (a FIFO
        // swapped in would block its open).
        try InputFile.requireRegular(path)
        try HDF5File.preflight(name: path, path: path, image: nil, budget: budget)
        sandbox = try HDF5Sandbox(name: path, path: path, image: nil, budget: budget, limits: limits)
        PhaseTrace.mark("preflight done")
        rawPath = superblock == 0 ? path : nil
    }

    /// Opens an HDF5 file image held in memory (e.g. `model.weights.h5` inside a `.keras` zip),
    /// through libhdf5's core driver in the reader child; nothing is written to disk.
    /// `budget`: the container's (the `.keras` file), charged libhdf5's copy of the image and every
    /// dataset read; without one the image is its own file. `label` is the name libhdf5 gets (`name`
    /// when nil); the core driver refuses an image whose label names an existing file.
    init(bytes: Data, name: String, label: String? = nil, budget: ReadBudget? = nil) throws {
        self.name = name
        fileSize = bytes.count
        self.budget = budget ?? ReadBudget(file: name, fileBytes: bytes.count)
        try self.budget.charge(bytes.count, place: "", what: "libhdf5's copy of the HDF5 image")
        let found = HDF5File.superblockOffset(fileSize: bytes.count) { offset in
            guard offset >= 0, offset <= bytes.count - 8 else { return nil }
            let start = bytes.startIndex + offset
            return [UInt8](bytes[start ..< start + 8])
        }
        guard let superblock = found else {
            throw ResNetError.invalidInput(file: name, place: "",
                reason: "not an HDF5 file (no HDF5 signature at offset 0, 512, 1024, …; \(bytes.count) bytes)")
        }
        let headerStart = bytes.startIndex + superblock
        let header = [UInt8](bytes[headerStart ..< min(headerStart + 64, bytes.endIndex)])
        try HDF5File.checkSuperblock(name: name, fileSize: bytes.count, superblock: superblock, header: header)
        let budget = self.budget, limits = self.limits
        // The name libhdf5 gets for the image (the core driver refuses one that names an existing file).
        let libraryName = label ?? name
        // The child gets the image with the rest of the address space at fork and copies it into
        // libhdf5; `bytes` need not outlive this call.
        sandbox = try bytes.withUnsafeBytes {
            try HDF5File.preflight(name: name, path: libraryName, image: $0, budget: budget)
            return try HDF5Sandbox(name: name, path: libraryName, image: $0, budget: budget, limits: limits)
        }
    }

    // MARK: - Pre-flight

    /// Lets libhdf5 walk all of the file's metadata (every link, object header, attribute value,
    /// datatype, dataspace and chunk index; no raw data) in a sandboxed child of its own before the
    /// child that serves the reader starts, so that a file that makes libhdf5 crash or hang is
    /// refused up front, as one whose metadata is malformed. Only how the child ended matters:
    /// errors libhdf5 reports are left to the reader, which words them better. `budget` is the
    /// reader's, so both children get the same memory and CPU limits.
    static func preflight(name: String, path: String, image: UnsafeRawBufferPointer?, budget: ReadBudget,
                          timeout: Int32 = HDF5Limits.preflightTimeoutMilliseconds) throws {
        _ = try HDF5Sandbox(name: name, path: path, image: image, budget: budget,
                            limits: .current, walkOnly: true, startTimeout: timeout)
    }

    // MARK: - Errors

    private func failure(_ place: String, _ what: String, _ stack: String) -> ResNetError {
        .invalidInput(file: name, place: place, reason: stack.isEmpty ? what : "\(what): \(stack)")
    }

    /// The refusal for an answer that reported a libhdf5 error (`what`, libhdf5's stack).
    private func failure(_ place: String, _ answer: inout HDF5Answer) throws -> ResNetError {
        let what = try answer.string(), stack = try answer.string()
        return failure(place, what, stack)
    }

    /// Why reading a dataset's values failed: a filter libhdf5 cannot run (plugins are never
    /// loaded, see `chdf5_refuse_filter_plugins`), named, or libhdf5's stack.
    private func readFailure(_ answer: inout HDF5Answer, _ place: String) throws -> ResNetError {
        let stack = try answer.string()
        let id = Int64(bitPattern: try answer.u64())
        let label = try answer.bytes(Int(try answer.u32()))
        guard id >= 0 else {
            return .invalidInput(file: name, place: place,
                                 reason: "cannot read dataset (truncated file?)" + (stack.isEmpty ? "" : ": \(stack)"))
        }
        // The name comes from the file: printable ASCII only.
        let text = String(decoding: label.prefix { $0 != 0 }.filter { (0x20..<0x7f).contains($0) }, as: UTF8.self)
        return .unsupported(file: name, place: place,
            reason: "dataset is compressed with HDF5 filter \(id)\(text.isEmpty ? "" : " (\"\(text)\")"), which libhdf5 does not "
                + "have built in; resnet-convert does not load HDF5 filter plugins (shared libraries), so re-save the "
                + "weights uncompressed or with gzip (deflate), e.g. with h5py")
    }

    // MARK: - Structure

    /// What `path` (absolute, `/a/b`) points at, or nil when it does not exist.
    func kind(at path: String) throws -> HDF5ObjectKind? {
        try kind(in: 0, base: "", relative: path)
    }

    /// What `relative` (`a/b`, below the object `loc` of the child — 0 for the file —, whose
    /// absolute path is `base`) points at, or nil when it does not exist. Every component is
    /// checked: a missing or non-group component gives nil, an external link is refused. Errors
    /// name the absolute path.
    fileprivate func kind(in loc: Int64, base: String, relative: String) throws -> HDF5ObjectKind? {
        let parts = relative.split(separator: "/", omittingEmptySubsequences: true)
        if parts.isEmpty { return .group }
        var prefix = ""   // components so far, relative to `loc`
        for (i, part) in parts.enumerated() {
            prefix += prefix.isEmpty ? String(part) : "/" + part
            func place() -> String { base + "/" + prefix }
            var request = HDF5Request()
            request.i64(loc)
            // From the file itself the name is absolute, as the error places are.
            request.string(base.isEmpty ? "/" + prefix : prefix)
            var answer = try sandbox.ask(CHDF5_OP_KIND, request, place: place())
            guard answer.status == CHDF5_ANSWER_OK else { throw try failure(place(), &answer) }
            let found = Int32(bitPattern: try answer.u32())
            let stack = try answer.string()
            let k: HDF5ObjectKind
            switch found {
            case CHDF5_LINK_LOOKUP_FAILED.rawValue: throw failure(place(), "cannot look up link", stack)
            case CHDF5_LINK_MISSING.rawValue: return nil
            case CHDF5_LINK_EXTERNAL.rawValue:
                throw ResNetError.invalidInput(file: name, place: place(),
                    reason: "an external link (to another file); links out of the file are never followed")
            case CHDF5_LINK_GROUP.rawValue: k = .group
            case CHDF5_LINK_DATASET.rawValue: k = .dataset
            case CHDF5_LINK_OTHER.rawValue: k = .other
            default: throw failure(place(), "cannot read object header (dangling link?)", stack)
            }
            if i == parts.count - 1 { return k }
            if k != .group { return nil }
        }
        return nil
    }

    /// Names of the members of the group at `path`, alphabetical (HDF5's name index, the order
    /// h5py shows).
    func members(of path: String) throws -> [String] {
        try members(of: path, creationOrder: false)!
    }

    /// Names of the members of the group at `path` in the order they were created, or nil when
    /// the group does not track creation order (h5py's default). Object-header addresses are not
    /// a substitute: libhdf5 reuses freed space, so they do not follow creation order.
    func membersInCreationOrder(of path: String) throws -> [String]? {
        try members(of: path, creationOrder: true)
    }

    private func members(of path: String, creationOrder: Bool) throws -> [String]? {
        var request = HDF5Request()
        request.string(path)
        request.u32(creationOrder ? 1 : 0)
        var answer = try sandbox.ask(CHDF5_OP_MEMBERS, request, place: path)
        switch answer.status {
        case 16:
            let tracked = try answer.u32()
            let n = try answer.count(max: HDF5Limits.maxGroupMembers, what: "member count")
            if tracked == 0 {
                guard creationOrder, n == 0 else { throw answer.malformed("an untracked order for a name listing") }
                return nil
            }
            var names: [String] = []
            names.reserveCapacity(n)
            for _ in 0 ..< n { names.append(try answer.string()) }
            try answer.finish()
            return names
        case 17:
            throw ResNetError.invalidInput(file: name, place: path,
                reason: "group claims \(try answer.u64()) members (limit \(HDF5Limits.maxGroupMembers))")
        case 18:
            throw limits.exceeded(.headerBytes, file: name, place: path,
                                  found: "member names of more than \(try answer.u64()) bytes")
        case CHDF5_ANSWER_ERROR:
            throw try failure(path, &answer)
        default:
            throw answer.malformed("status \(answer.status)")
        }
    }

    /// The child's handle of the group `relative` below `loc` (0: the file; absolute path `base`,
    /// "" for the root), or nil when it is not a group.
    fileprivate func openGroup(in loc: Int64, base: String, relative: String, path: String) throws -> Int64? {
        var request = HDF5Request()
        request.i64(loc)
        request.string(HDF5Group.libraryName(relative, from: base))
        var answer = try sandbox.ask(CHDF5_OP_GROUP_OPEN, request, place: path)
        guard answer.status == CHDF5_ANSWER_OK else { throw try failure(path, &answer) }
        let gid = Int64(bitPattern: try answer.u64())
        let text = try answer.string()
        if gid > 0 { return gid }
        guard try kind(in: loc, base: base, relative: relative) == .group else { return nil }
        throw ResNetError.invalidInput(file: name, place: path, reason: text.isEmpty ? "cannot open group" : "cannot open group: \(text)")
    }

    /// Tells the child to close one of its handles (a group or dataset); no answer is awaited.
    fileprivate func close(_ handle: Int64) {
        var request = HDF5Request()
        request.i64(handle)
        sandbox.tell(CHDF5_OP_CLOSE, request)
    }

    // MARK: - Attributes

    /// The attribute `attribute` of the object at `path`, or nil when it is absent.
    func attribute(_ attribute: String, of path: String) throws -> HDF5Attribute? {
        try self.attribute(attribute, of: 0, named: path, place: "\(path)@\(attribute)")
    }

    /// The attribute `attribute` of the object `object` below `loc` (`.` for `loc` itself), or
    /// nil when it is absent; errors name `place`.
    fileprivate func attribute(_ attribute: String, of loc: Int64, named object: String, place: String) throws -> HDF5Attribute? {
        var request = HDF5Request()
        request.i64(loc)
        request.string(object)
        request.string(attribute)
        var answer = try sandbox.ask(CHDF5_OP_ATTRIBUTE, request, place: place)
        switch answer.status {
        case 16:
            return nil
        case 17:
            throw ResNetError.invalidInput(file: name, place: place, reason: "attribute claims \(Int64(bitPattern: try answer.u64())) elements")
        case 18:
            throw ResNetError.unsupported(file: name, place: place,
                reason: "attribute type class \(Int32(bitPattern: try answer.u32())) (only strings and numbers are read)")
        case 19:
            let isScalar = try answer.u32() != 0
            let count = try answer.count(max: HDF5Limits.maxAttributeElements, what: "string count")
            // A String per element and a decoded copy of the strings' bytes, before either is made.
            try budget.charge(count * 24 + answer.bytes.count, place: place, what: "a string attribute of \(count) elements")
            var strings: [String] = []
            strings.reserveCapacity(count)
            var total = 0
            for _ in 0 ..< count {
                let s = try answer.bytes(Int(try answer.u32()))
                total += s.count
                guard total <= limits.maxHeaderBytes else {
                    throw limits.exceeded(.headerBytes, file: name, place: place, found: "string attribute of more than \(total) bytes")
                }
                strings.append(String(decoding: s, as: UTF8.self))
            }
            try answer.finish()
            if isScalar, let s = strings.first { return .string(s) }
            return .strings(strings)
        case 20:
            throw limits.exceeded(.headerBytes, file: name, place: place, found: "string attribute of more than \(try answer.u64()) bytes")
        case 21:
            let isScalar = try answer.u32() != 0
            let count = try answer.count(max: HDF5Limits.maxAttributeElements, what: "string count")
            let size = try answer.count(max: limits.maxHeaderBytes, what: "string size")
            let spacePadded = try answer.u32() != 0
            let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
            guard size > 0, !overflow, bytes <= limits.maxHeaderBytes else { throw answer.malformed("fixed strings of \(count) × \(size) bytes") }
            try budget.charge(bytes &+ count &* 16, place: place, what: "a string attribute of \(count) × \(size) bytes")
            let buffer = try answer.bytes(bytes)
            try answer.finish()
            let strings: [String] = (0 ..< count).map { i in
                var item = buffer[buffer.startIndex + i * size ..< buffer.startIndex + (i + 1) * size]
                if let nul = item.firstIndex(of: 0) { item = item[..<nul] }
                if spacePadded { while item.last == 0x20 { item = item.dropLast() } }
                return String(decoding: item, as: UTF8.self)
            }
            if isScalar, let s = strings.first { return .string(s) }
            return .strings(strings)
        case 22:
            let count = try answer.u64(), size = try answer.u64()
            let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
            guard size > 0, !overflow, bytes <= UInt64(Int.max) else {
                throw ResNetError.invalidInput(file: name, place: place,
                    reason: "fixed-length string attribute of \(count) × \(size) bytes is too large")
            }
            throw limits.exceeded(.headerBytes, file: name, place: place, found: "fixed-length string attribute of \(count) × \(size) bytes")
        case 23:
            _ = try answer.u32()
            let count = try answer.count(max: HDF5Limits.maxAttributeElements, what: "number count")
            try budget.charge(count * 8, place: place, what: "a numeric attribute of \(count) elements")
            let raw = try answer.bytes(count * 8)
            try answer.finish()
            // The values start at an offset that need not be 8-byte aligned.
            return .numbers(raw.withUnsafeBytes { r in (0 ..< count).map { r.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) } })
        case 24:
            throw limits.exceeded(.headerBytes, file: name, place: place, found: "numeric attribute of \(try answer.u64()) elements (8 bytes each)")
        case CHDF5_ANSWER_ERROR:
            throw try failure(place, &answer)
        default:
            throw answer.malformed("status \(answer.status)")
        }
    }

    // MARK: - Datasets

    /// Reads the floating-point dataset at `path` (f16, bf16, f32 or f64 in the file) as float32
    /// in the file's own layout. Other element types are refused.
    func readTensor(at path: String) throws -> SourceTensor {
        guard let t = try readTensor(in: 0, named: path, path: path, isDataset: { true }) else {
            throw ResNetError.invalidInput(file: name, place: path, reason: "not a dataset")   // not reached: `isDataset` is true
        }
        return t
    }

    /// ``readTensor(at:)`` for the dataset `object` below `loc` (0: the file), whose absolute path
    /// is `path`. When it cannot be opened, `isDataset` decides between nil (not a dataset; it may
    /// throw what is wrong with the path instead) and reporting the failed open.
    fileprivate func readTensor(in loc: Int64, named object: String, path: String,
                                isDataset: () throws -> Bool) throws -> SourceTensor? {
        let deferred = DeferredSources.current
        var request = HDF5Request()
        request.i64(loc)
        request.string(object)
        request.u32(deferred != nil && rawPath != nil ? 1 : 0)
        var answer = try sandbox.ask(CHDF5_OP_DATASET_INFO, request, place: path)
        guard answer.status == CHDF5_ANSWER_OK else { throw try failure(path, &answer) }
        var info = try HDF5DatasetInfo(&answer)
        // The child's dataset handle, closed here unless handed back for the read.
        var did = info.did
        defer { if did > 0 { close(did) } }
        // The checks come in the order the values were read, so a damaged dataset is reported by
        // its first problem, as libhdf5's own error when a call failed.
        func failed(_ what: String) -> ResNetError { failure(path, what, info.stack) }
        let step = info.step
        if step == CHDF5_DS_FAILED_OPEN.rawValue {
            guard try isDataset() else { return nil }
            throw failed("cannot open dataset")
        }
        if step == CHDF5_DS_FAILED_TYPE.rawValue { throw failed("cannot read dataset type") }
        let size = info.typeSize
        guard info.typeClass == H5T_FLOAT.rawValue else {
            let what = info.typeClass == H5T_INTEGER.rawValue ? "integer (\(size) bytes)" : "type class \(info.typeClass)"
            throw ResNetError.unsupported(file: name, place: path,
                reason: "dataset holds \(what) elements; weights must be f16, bf16, f32 or f64")
        }
        let dtype: DType
        switch size {
        case 2:
            if step == CHDF5_DS_FAILED_FIELDS.rawValue { throw failed("cannot read float type fields") }
            let (esize, msize) = (info.exponentBits, info.mantissaBits)
            if esize == 5 && msize == 10 { dtype = .float16 }
            else if esize == 8 && msize == 7 { dtype = .bfloat16 }
            else {
                throw ResNetError.unsupported(file: name, place: path,
                    reason: "16-bit float with \(esize) exponent and \(msize) mantissa bits")
            }
        case 4: dtype = .float32
        case 8: dtype = .float64
        default:
            throw ResNetError.unsupported(file: name, place: path, reason: "\(size * 8)-bit floating point elements")
        }
        if step == CHDF5_DS_FAILED_SPACE.rawValue { throw failed("cannot read dataset dataspace") }
        if step == CHDF5_DS_STOPPED_NULL_SPACE.rawValue {
            throw ResNetError.invalidInput(file: name, place: path, reason: "dataset has a null dataspace (no elements)")
        }
        let rank = info.rank
        if step == CHDF5_DS_FAILED_RANK.rawValue { throw failed("cannot read dataset rank (\(rank))") }
        if step == CHDF5_DS_FAILED_DIMS.rawValue { throw failed("cannot read dataset shape") }
        let dims = info.dims
        var shape: [Int] = []
        shape.reserveCapacity(rank)
        var count = 1
        for d in dims {
            guard d <= UInt64(Int.max) else {
                throw ResNetError.invalidInput(file: name, place: path, reason: "dimension \(d) out of range")
            }
            shape.append(Int(d))
            let (c, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow else {
                throw ResNetError.invalidInput(file: name, place: path, reason: "shape \(dims): element count overflows")
            }
            guard ReadLimits.float32Bytes(c) <= limits.maxTensorBytes else {
                throw limits.exceeded(.tensorBytes, file: name, place: path,
                    found: "shape \(dims) needs at least \(ReadLimits.float32Bytes(c)) bytes as float32")
            }
            count = c
        }
        let (total, totalOverflow) = bytesRead.addingReportingOverflow(ReadLimits.float32Bytes(count))
        guard !totalOverflow, total <= limits.maxTotalBytes else {
            throw limits.exceeded(.totalBytes, file: name, place: path,
                found: "the datasets up to this one need \(total) bytes as float32")
        }
        let storedBytes = count * dtype.size
        if step == CHDF5_DS_FAILED_PLIST.rawValue { throw failed("cannot read dataset creation properties") }
        if step == CHDF5_DS_FAILED_FILTERS.rawValue { throw failed("cannot read dataset filters") }
        let filters = info.filters
        let (budget, budgetOverflow) = fileSize.multipliedReportingOverflow(by: filters == 0 ? 1 : HDF5Limits.maxCompressionRatio)
        guard budgetOverflow || storedBytes <= budget else {
            throw ResNetError.invalidInput(file: name, place: path,
                reason: "shape \(shape) needs \(storedBytes) bytes but the whole file has \(fileSize)"
                    + (filters == 0 ? "" : " (compressed; allowed ratio \(HDF5Limits.maxCompressionRatio))"))
        }
        guard step == CHDF5_DS_DONE.rawValue, did > 0 else { throw failed("cannot open dataset") }   // every failed step was reported above
        guard info.externalFiles == 0 else {
            throw ResNetError.invalidInput(file: name, place: path,
                reason: "the dataset's values are stored in \(info.externalFiles) other file(s) (HDF5 external storage); "
                    + "no file but the input is ever opened")
        }
        try self.budget.charge(ReadLimits.float32Bytes(count), place: path, what: "dataset \(shape) as float32", probe: false)
        let cleanName = path.hasPrefix("/") ? String(path.dropFirst()) : path
        if let deferred {
            bytesRead = total
            if !(rawPath != nil && dtype == .float32) { info.isIEEEf32le = false }
            return try deferRead(path, cleanName: cleanName, info: info, shape: shape, count: count, dtype: dtype, into: deferred)
        }
        var data = try checkedFloatArray(count: count, file: name, place: path)
        let handle = did
        did = 0   // the read closes it in the child
        try data.withUnsafeMutableBufferPointer { try readFloats(handle: handle, path, into: $0) }
        bytesRead = total
        return SourceTensor(name: cleanName, sourceDType: dtype, tensor: Tensor(shape: shape, data: data))
    }

    /// Records the dataset in `deferred` and returns a placeholder (streaming conversion). A
    /// contiguous, unfiltered little-endian float32 dataset is later read straight from the file at
    /// the address the child reports, after checking that address and the storage size against the
    /// file (the answer is not trusted); every other dataset is read through the child when its turn comes.
    private func deferRead(_ path: String, cleanName: String, info: HDF5DatasetInfo, shape: [Int], count: Int,
                           dtype: DType, into deferred: DeferredSources) throws -> SourceTensor {
        var offset: Int?
        #if _endian(little)
        // `isIEEEf32le` is set only for unfiltered datasets of a file read by path (`rawPath`).
        if rawPath != nil, dtype == .float32, info.isIEEEf32le, count > 0, info.contiguous {
            let address = info.address   // HADDR_UNDEF (all ones) when not allocated
            if address < UInt64(Int.max), info.storageSize == UInt64(count * 4),
               case let (end, overflow) = Int(address).addingReportingOverflow(count * 4), !overflow, end <= fileSize {
                offset = Int(address)
            }
        }
        #endif
        let name = self.name
        if let offset, let rawPath {
            let fd = try deferred.descriptor(for: rawPath)
            var entry = DeferredSources.Entry(shape: shape, dtype: dtype) { out in
                try preadFully(fd, UnsafeMutableRawBufferPointer(out), at: offset, file: name, place: path)
            }
            // Aligned values can also be rearranged straight from a mapping of the file. The range
            // was checked against the file's size above and is checked against the mapping again
            // (the file could have changed in between).
            if let file = deferred.mapping(for: rawPath) {
                entry.mapped = DeferredSources.MappedRange(file: file, offset: offset, count: count)
            }
            deferred.add(cleanName, entry)
        } else {
            deferred.add(cleanName, .init(shape: shape, dtype: dtype) { [self] out in
                try readFloats(handle: -1, path, into: out)
            })
        }
        return SourceTensor(name: cleanName, sourceDType: dtype, tensor: placeholderTensor(shape: shape))
    }

    /// Reads a dataset as float32 into `out`, which must match its element count: the child's open
    /// dataset `handle` (which the child then closes), or with -1 the dataset at `path`. Internal
    /// for tests, which use it to reach the child without the parent's checks.
    func readFloats(handle: Int64, _ path: String, into out: UnsafeMutableBufferPointer<Float>) throws {
        var request = HDF5Request()
        request.i64(handle)
        request.string(path)
        request.u64(UInt64(out.count))
        var answer = try sandbox.ask(CHDF5_OP_DATASET_READ, request, place: path, into: UnsafeMutableRawBufferPointer(out))
        switch answer.status {
        case CHDF5_ANSWER_OK: return
        case 16: throw ResNetError.invalidInput(file: name, place: path, reason: "dataset changed size between reads")
        case 17: throw try readFailure(&answer, path)
        case CHDF5_ANSWER_ERROR: throw try failure(path, &answer)
        default: throw answer.malformed("status \(answer.status)")
        }
    }
}

/// What the child reports about a dataset before its values are read (`chdf5_sb_dataset_info`).
private struct HDF5DatasetInfo {
    var did: Int64
    var step: UInt32
    var typeClass: Int32
    var typeSize: Int
    var exponentBits: UInt64
    var mantissaBits: UInt64
    var rank: Int
    var dims: [UInt64]
    var filters: Int
    var isIEEEf32le: Bool
    var contiguous: Bool
    var address: UInt64
    var storageSize: UInt64
    /// Files other than the input that hold the values (HDF5 external storage).
    var externalFiles: Int
    var stack: String

    init(_ a: inout HDF5Answer) throws {
        did = Int64(bitPattern: try a.u64())
        step = try a.u32()
        typeClass = Int32(bitPattern: try a.u32())
        typeSize = try a.count(max: 1 << 20, what: "element size")
        exponentBits = try a.u64()
        mantissaBits = try a.u64()
        let r = Int32(bitPattern: try a.u32())
        rank = Int(r)
        let stored = min(max(rank, 0), HDF5Limits.maxRank)
        dims = try (0 ..< stored).map { _ in try a.u64() }
        filters = Int(Int32(bitPattern: try a.u32()))
        isIEEEf32le = try a.u32() != 0
        contiguous = try a.u32() != 0
        address = try a.u64()
        storageSize = try a.u64()
        externalFiles = Int(try a.u32())
        stack = try a.string()
        try a.finish()
        // A rank outside 0…32 is legal in an answer only with the step that reports it.
        if rank != stored && step != CHDF5_DS_FAILED_RANK.rawValue { throw a.malformed("rank \(rank)") }
    }
}

// MARK: - The reader child

/// A request to the reader child (see Sources/CHDF5/sandbox.h for the layout of each).
struct HDF5Request {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    /// NUL-terminated, as libhdf5 takes names (a name with a NUL in it ends there, as before).
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8.prefix { $0 != 0 })
        u32(UInt32(utf8.count + 1))
        bytes += utf8
        bytes.append(0)
    }
}

/// An answer from the reader child: as untrusted as the file it describes. Every read is bounds-
/// checked; anything that does not fit the layout refuses the file.
struct HDF5Answer {
    let status: Int
    let bytes: [UInt8]
    let file: String
    let place: String
    private var at = 0

    init(status: Int, bytes: [UInt8], file: String, place: String) {
        self.status = status
        self.bytes = bytes
        self.file = file
        self.place = place
    }

    func malformed(_ what: String) -> ResNetError {
        .invalidInput(file: file, place: place, reason: "the sandboxed libhdf5 reader sent a malformed answer (\(what)): the file is malformed or hostile")
    }

    mutating func bytes(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - at else { throw malformed("\(n) bytes wanted, \(bytes.count - at) left") }
        defer { at += n }
        return bytes[at ..< at + n]
    }
    mutating func u32() throws -> UInt32 {
        try bytes(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
    mutating func u64() throws -> UInt64 {
        try bytes(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
    /// A count at most `max`.
    mutating func count(max: Int, what: String) throws -> Int {
        let v = try u64()
        guard v <= UInt64(max) else { throw malformed("\(what) \(v) over \(max)") }
        return Int(v)
    }
    mutating func string() throws -> String {
        String(decoding: try bytes(Int(try u32())), as: UTF8.self)
    }
    /// Checks that nothing is left over.
    func finish() throws {
        guard at == bytes.count else { throw malformed("\(bytes.count - at) bytes left over") }
    }
}

/// The child process that runs libhdf5 on one untrusted file (Sources/CHDF5/sandbox.h): started
/// when the file is opened, asked one request at a time, stopped when the file is closed. A child
/// that crashes, breaks its limits or stops answering refuses the file, naming what happened.
final class HDF5Sandbox {
    let name: String
    private var child: chdf5_sandbox_t
    /// Set once the child has ended or misbehaved: every later request throws it.
    private var ended: ResNetError?
    private let lock = NSLock()
    /// CPU seconds the child may use in all (RLIMIT_CPU); requests wait this long plus a margin.
    let cpuSeconds: Int
    /// Bytes the child's address space may grow by after the fork (RLIMIT_AS).
    let addressSpaceExtra: Int
    /// Most bytes of one answer that is not a dataset's values.
    private let maxAnswerBytes: Int
    /// The file's read budget: every answer is charged before it is allocated here.
    private let budget: ReadBudget
    /// How long one answer may take, in wall time: the child's whole CPU allowance plus 10 s, so
    /// that only a child that is stuck (not one that is working) runs into it. Settable for tests.
    var requestTimeoutMilliseconds: Int

    /// Starts the child for `path` (opened by libhdf5 in the child) or for `image`, waits for it to
    /// open the file and walk its metadata (at most `startTimeout` ms), and refuses the file when it
    /// cannot. The limits scale with the file's read budget: the child may allocate what reading
    /// the file may allocate in this process, plus a constant for libhdf5 itself.
    init(name: String, path: String, image: UnsafeRawBufferPointer?, budget: ReadBudget, limits: ReadLimits,
         walkOnly: Bool = false, startTimeout: Int32 = HDF5Limits.preflightTimeoutMilliseconds) throws {
        self.name = name
        self.budget = budget
        let (extra, overflow) = budget.capacity.addingReportingOverflow(256 << 20)
        addressSpaceExtra = overflow ? Int.max : extra
        cpuSeconds = min(30 + budget.capacity / (64 << 20), 3600)
        requestTimeoutMilliseconds = (cpuSeconds + 10) * 1000
        maxAnswerBytes = limits.maxHeaderBytes.addingReportingOverflow(1 << 20).overflow ? Int.max : limits.maxHeaderBytes + (1 << 20)
        let childLimits = chdf5_sb_limits_t(max_header_bytes: UInt64(max(limits.maxHeaderBytes, 0)),
                                            max_group_members: UInt64(HDF5Limits.maxGroupMembers),
                                            max_attribute_elements: UInt64(HDF5Limits.maxAttributeElements))
        let (extraBytes, cpu) = (UInt64(addressSpaceExtra), UInt64(cpuSeconds))
        child = withHDF5 {
            // No OpenBLAS call may run across the fork (see copenblas_fork_guard_begin), and the
            // lock keeps in-process libhdf5 (the writers) out of the child's copy.
            copenblas_fork_guard_begin()
            defer { copenblas_fork_guard_end() }
            return chdf5_sandbox_start(path, image?.baseAddress, image?.count ?? 0, walkOnly ? 1 : 0, childLimits, extraBytes, cpu)
        }
        guard child.pid > 0 else {
            throw ResNetError.io(file: name, reason: "cannot start the child process that reads the file with libhdf5 (errno \(child.error))")
        }
        var answer: HDF5Answer
        do {
            answer = try receive(place: "HDF5 metadata", deadline: chdf5_monotonic_ms() + Int64(startTimeout), into: nil,
                                 during: walkOnly ? "parsing the file's metadata" : "opening the file",
                                 timeoutText: walkOnly ? "did not finish parsing the file's metadata within \(Double(startTimeout) / 1000) s"
                                     : "did not open the file within \(Double(startTimeout) / 1000) s")
        } catch {
            stop()
            throw error
        }
        guard answer.status == CHDF5_ANSWER_OK else {
            stop()
            guard answer.status == CHDF5_ANSWER_ERROR else { throw answer.malformed("status \(answer.status)") }
            _ = try answer.string()
            let stack = try answer.string()
            throw ResNetError.invalidInput(file: name, place: "",
                reason: "libhdf5 cannot open the file\(image == nil ? "" : " image") (truncated or damaged?): \(stack)")
        }
    }

    deinit { stop() }

    /// The child's process id (-1 once it has ended), for tests.
    var processID: Int32 { lock.withLock { child.pid } }

    /// Runs `chdf5_sandbox_selftest`: a child under the reader's filter tries one forbidden thing
    /// (1 execve, 2 open `path` for writing, 3 a socket, 4 a write to stderr, 5 an executable
    /// mapping, 0 nothing). Returns the signal that ended it, or 1000 + its exit code (1000: the
    /// call failed with an error, 1001: it succeeded).
    static func selfTest(_ what: Int32, path: String) -> Int32 {
        withHDF5 {
            copenblas_fork_guard_begin()
            defer { copenblas_fork_guard_end() }
            return chdf5_sandbox_selftest(what, path)
        }
    }

    private func stop() {
        if child.pid > 0 || child.fd >= 0 {
            _ = chdf5_sandbox_finish(child, 1)
            child.pid = -1
            child.fd = -1
        }
    }

    /// Sends a request that gets no answer; a child that is gone is noticed by the next request.
    func tell(_ op: Int, _ request: HDF5Request) {
        lock.withLock {
            guard ended == nil, child.fd >= 0 else { return }
            _ = send(op, request)
        }
    }

    private func send(_ op: Int, _ request: HDF5Request) -> Int32 {
        var message = HDF5Request()
        message.u32(UInt32(op))
        message.u32(0)
        message.u64(UInt64(request.bytes.count))
        message.bytes += request.bytes
        return message.bytes.withUnsafeBytes { chdf5_sandbox_send(child.fd, $0.baseAddress, $0.count) }
    }

    /// Sends a request and waits for its answer. With `into`, an OK answer's payload must be exactly
    /// that buffer's size and is received straight into it (a dataset's values).
    func ask(_ op: Int, _ request: HDF5Request, place: String, into: UnsafeMutableRawBufferPointer? = nil) throws -> HDF5Answer {
        try lock.withLock {
            if let ended { throw ended }
            guard send(op, request) == 0 else {
                // The child is gone; how it ended says why.
                throw fail(place: place, during: "reading the file", reaped: true)
            }
            let deadline = chdf5_monotonic_ms() + Int64(requestTimeoutMilliseconds)
            return try receive(place: place, deadline: deadline, into: into, during: "reading the file",
                               timeoutText: "did not answer within \(Double(requestTimeoutMilliseconds) / 1000) s")
        }
    }

    private func receive(place: String, deadline: Int64, into: UnsafeMutableRawBufferPointer?,
                         during: String, timeoutText: String) throws -> HDF5Answer {
        var header = [UInt32](repeating: 0, count: 4)
        let got = header.withUnsafeMutableBytes { chdf5_sandbox_receive(child.fd, $0.baseAddress, $0.count, deadline) }
        if got == -2 { throw fail(place: place, during: during, timeout: timeoutText) }
        if got != 0 { throw fail(place: place, during: during, reaped: true) }
        let status = Int(UInt32(littleEndian: header[0]))
        let length = UInt64(UInt32(littleEndian: header[2])) | UInt64(UInt32(littleEndian: header[3])) << 32
        if let into, status == CHDF5_ANSWER_OK {
            guard length == UInt64(into.count) else {
                throw fail(place: place, malformed: "\(length) bytes of values for a buffer of \(into.count)")
            }
            if into.count > 0 {
                let r = chdf5_sandbox_receive(child.fd, into.baseAddress, into.count, deadline)
                if r == -2 { throw fail(place: place, during: during, timeout: timeoutText) }
                if r != 0 { throw fail(place: place, during: during, reaped: true) }
            }
            return HDF5Answer(status: status, bytes: [], file: name, place: place)
        }
        guard length <= UInt64(maxAnswerBytes) else {
            throw fail(place: place, malformed: "an answer of \(length) bytes, at most \(maxAnswerBytes) expected")
        }
        // A small file can make libhdf5 answer with much more (many elements naming one heap object).
        try budget.charge(Int(length), place: place, what: "an answer of \(length) bytes from the libhdf5 child")
        var bytes = [UInt8](repeating: 0, count: Int(length))
        if length > 0 {
            let r = bytes.withUnsafeMutableBytes { chdf5_sandbox_receive(child.fd, $0.baseAddress, $0.count, deadline) }
            if r == -2 { throw fail(place: place, during: during, timeout: timeoutText) }
            if r != 0 { throw fail(place: place, during: during, reaped: true) }
        }
        return HDF5Answer(status: status, bytes: bytes, file: name, place: place)
    }

    /// Ends the child and records (and returns) why the file is refused.
    private func fail(place: String, during: String = "", reaped: Bool = false, timeout: String? = nil,
                      malformed: String? = nil) -> ResNetError {
        let end = chdf5_sandbox_finish(child, 1)
        child.pid = -1
        child.fd = -1
        let error: ResNetError
        if let malformed {
            error = .invalidInput(file: name, place: place,
                                  reason: "the sandboxed libhdf5 reader sent a malformed answer (\(malformed)): the file is malformed or hostile")
        } else if let timeout {
            error = .invalidInput(file: name, place: place,
                reason: "libhdf5 \(timeout) (checked in a child process, which was stopped): the file is malformed or hostile")
        } else if end.signal == SIGSYS {
            error = .invalidInput(file: name, place: place,
                reason: "libhdf5 made a system call its sandbox forbids while \(during) (the child process was stopped with SIGSYS): the file is malformed or hostile")
        } else if end.signal == SIGXCPU {
            error = .invalidInput(file: name, place: place,
                reason: "libhdf5 used up its CPU-time limit of \(cpuSeconds) s while \(during) (checked in a child process, stopped with SIGXCPU): the file is malformed or hostile")
        } else if end.signal == SIGKILL {
            error = .invalidInput(file: name, place: place,
                reason: "the child process reading the file with libhdf5 was killed (SIGKILL: out of memory or past its CPU-time limit) while \(during): the file is malformed or hostile")
        } else if end.signal != 0 {
            error = .invalidInput(file: name, place: place,
                reason: "libhdf5 crashed with signal \(end.signal)\(HDF5Sandbox.signalName(end.signal)) while \(during) (checked in a child process): the file is malformed")
        } else if end.code == 3 {
            error = .io(file: name, reason: "cannot confine the child process that reads the file with libhdf5 (this kernel refused the seccomp filter)")
        } else {
            error = .invalidInput(file: name, place: place,
                reason: "the child process reading the file with libhdf5 ended (exit status \(end.code)) while \(during): the file is malformed or hostile")
        }
        ended = error
        return error
    }

    private static func signalName(_ signal: Int32) -> String {
        let names: [Int32: String] = [SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS", SIGABRT: "SIGABRT", SIGILL: "SIGILL",
                                      SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGTRAP: "SIGTRAP"]
        return names[signal].map { ", \($0)" } ?? ""
    }
}

/// A group of an ``HDF5File`` held open in the reader child, so that the lookups below it (a Keras
/// layer's attributes, links and datasets) start from it instead of walking the whole path from
/// the root each time. Places in errors are the same absolute paths the file's own methods report.
///
/// Opening a member optimistically saves most of libhdf5's work per member: a group or dataset
/// that opens is one, reached only through hard and soft links (the external-link class is
/// unregistered, and no user-defined class ever is, so a path through any other link fails to
/// open), which is everything ``HDF5File/kind(at:)`` would have checked component by component.
/// Only when the open fails are the components checked one by one, to report what is wrong.
final class HDF5Group {
    /// The file, kept open while the group is.
    let file: HDF5File
    /// Absolute path of the group, `/a/b` (`/` for the root).
    let path: String
    /// The child's handle.
    private let id: Int64
    /// The path as ``HDF5File/kind(at:)`` spells it in errors (components joined by single
    /// slashes; "" for the root).
    private let base: String

    private init(file: HDF5File, path: String, id: Int64) {
        self.file = file
        self.path = path
        self.id = id
        base = path.split(separator: "/", omittingEmptySubsequences: true).reduce(into: "") { $0 += "/" + $1 }
    }

    /// The group at `path` (absolute) of `file`, or nil when `path` is not a group.
    static func open(_ file: HDF5File, path: String) throws -> HDF5Group? {
        guard let gid = try file.openGroup(in: 0, base: "", relative: path, path: path) else { return nil }
        return HDF5Group(file: file, path: path.isEmpty ? "/" : path, id: gid)
    }

    deinit { file.close(id) }

    /// The name libhdf5 is given for `relative`: absolute from the file itself, else relative to
    /// the group (a leading `/` would make it absolute, which `join`ed paths never meant).
    fileprivate static func libraryName(_ relative: String, from base: String) -> String {
        if base.isEmpty { return relative.hasPrefix("/") ? relative : "/" + relative }
        return relative.hasPrefix("/") ? String(relative.drop { $0 == "/" }) : relative
    }

    /// Absolute path of `relative`, joined as the Keras reader joins paths.
    private func absolute(_ relative: String) -> String { path.hasSuffix("/") ? path + relative : path + "/" + relative }

    /// ``HDF5File/kind(at:)`` for `relative` (`a/b`) below this group.
    func kind(of relative: String) throws -> HDF5ObjectKind? {
        try file.kind(in: id, base: base, relative: relative)
    }

    /// The group `relative` below this one, or nil when that is not a group.
    func group(_ relative: String) throws -> HDF5Group? {
        let full = absolute(relative)
        guard let gid = try file.openGroup(in: id, base: base, relative: relative, path: full) else { return nil }
        return HDF5Group(file: file, path: full.isEmpty ? "/" : full, id: gid)
    }

    /// ``HDF5File/attribute(_:of:)`` for an attribute of this group.
    func attribute(_ attribute: String) throws -> HDF5Attribute? {
        try file.attribute(attribute, of: id, named: ".", place: "\(path)@\(attribute)")
    }

    /// ``HDF5File/readTensor(at:)`` for `relative` below this group, or nil when that is not a dataset.
    func readTensorIfDataset(at relative: String) throws -> SourceTensor? {
        try file.readTensor(in: id, named: HDF5Group.libraryName(relative, from: base), path: absolute(relative)) {
            try file.kind(in: id, base: base, relative: relative) == .dataset
        }
    }
}

/// An HDF5 file being written (created or truncated). Writers stage to a temporary path and
/// rename, so a half-written file never carries the final name.
final class HDF5Writer {
    /// The file errors name.
    let name: String
    private let path: String
    private var id: hid_t

    /// Starts a file that ``close()`` writes to `path` (created or truncated). libhdf5 builds it in
    /// memory (the core driver, no backing store) and never writes to disk itself: when its own
    /// write failed (a full file system), a later `H5Fclose` failed too and libhdf5's exit-time
    /// cleanup crashed on the half-closed file. The finished image is written by ``close()``.
    init(path: String, display: String? = nil) throws {
        name = display ?? path
        self.path = path
        var text = ""
        let fid: hid_t = withHDF5 {
            let fapl = H5Pcreate(chdf5_file_access_class())
            guard fapl >= 0 else { text = HDF5Writer.stack(); return -1 }
            defer { H5Pclose(fapl) }
            guard H5Pset_fapl_core(fapl, 4 << 20, false) >= 0 else { text = HDF5Writer.stack(); return -1 }
            let f = H5Fcreate(path, chdf5_acc_trunc(), chdf5_default(), fapl)
            if f < 0 { text = HDF5Writer.stack() }
            return f
        }
        guard fid >= 0 else { throw ResNetError.io(file: name, reason: "libhdf5 cannot create the file: \(text)") }
        id = fid
    }

    deinit { if id >= 0 { let fid = id; withHDF5 { _ = H5Fclose(fid) } } }

    /// Finishes the file in memory and writes it to the path; errors surface here.
    func close() throws {
        guard id >= 0 else { return }
        let fid = id
        id = -1
        let image: [UInt8] = try withHDF5 {
            defer { H5Fclose(fid) }
            guard H5Fflush(fid, H5F_SCOPE_GLOBAL) >= 0 else { throw ResNetError.io(file: name, reason: "closing: \(HDF5Writer.stack())") }
            let size = H5Fget_file_image(fid, nil, 0)
            guard size >= 0 else { throw ResNetError.io(file: name, reason: "closing: \(HDF5Writer.stack())") }
            var bytes = [UInt8](repeating: 0, count: size)
            guard H5Fget_file_image(fid, &bytes, size) == size else {
                throw ResNetError.io(file: name, reason: "closing: \(HDF5Writer.stack())")
            }
            return bytes
        }
        try image.withUnsafeBytes { try writeWholeFile($0, to: path, display: name) }
    }

    private static func stack() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        buffer.withUnsafeMutableBufferPointer { chdf5_error_stack_text($0.baseAddress, $0.count) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func fail(_ place: String, _ what: String) -> ResNetError {
        .io(file: name, reason: "\(what) at \(place): \(HDF5Writer.stack())")
    }

    /// Creates the group `path` (absolute); its parent must exist.
    func createGroup(_ path: String) throws {
        try withHDF5 {
            let gid = H5Gcreate2(id, path, chdf5_default(), chdf5_default(), chdf5_default())
            guard gid >= 0 else { throw fail(path, "cannot create group") }
            H5Gclose(gid)
        }
    }

    /// Attaches a string attribute to the object at `path`: a fixed-length, NUL-padded ASCII
    /// scalar, or a 1-D array of them when `values` is a list (the layout h5py gives numpy
    /// `bytes` arrays, which Keras reads for `layer_names` / `weight_names`). An empty list is
    /// written as an empty float64 array, as h5py does for `np.asarray([])`.
    func setStringAttribute(_ attribute: String, of path: String, _ values: [String], scalar: Bool = false) throws {
        let place = "\(path)@\(attribute)"
        try withHDF5 {
            let width = max(values.map { $0.utf8.count }.max() ?? 0, 1)
            var dims: [hsize_t] = [hsize_t(values.count)]
            let sid = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dims, nil)
            guard sid >= 0 else { throw fail(place, "cannot create dataspace") }
            defer { H5Sclose(sid) }
            if values.isEmpty {
                let aid = H5Acreate_by_name(id, path, attribute, chdf5_native_double(), sid, chdf5_default(), chdf5_default(), chdf5_default())
                guard aid >= 0 else { throw fail(place, "cannot create attribute") }
                H5Aclose(aid)
                return
            }
            let tid = H5Tcopy(chdf5_c_s1())
            guard tid >= 0 else { throw fail(place, "cannot create string type") }
            defer { H5Tclose(tid) }
            guard H5Tset_size(tid, width) >= 0, H5Tset_strpad(tid, H5T_STR_NULLPAD) >= 0 else { throw fail(place, "cannot size string type") }
            var buffer = [UInt8](repeating: 0, count: width * values.count)
            for (i, v) in values.enumerated() { for (j, b) in v.utf8.enumerated() { buffer[i * width + j] = b } }
            let aid = H5Acreate_by_name(id, path, attribute, tid, sid, chdf5_default(), chdf5_default(), chdf5_default())
            guard aid >= 0 else { throw fail(place, "cannot create attribute") }
            defer { H5Aclose(aid) }
            guard H5Awrite(aid, tid, buffer) >= 0 else { throw fail(place, "cannot write attribute") }
        }
    }

    /// Attaches a scalar variable-length UTF-8 string attribute, as h5py writes a Python `str`.
    /// The text lives in the global heap, so it may exceed the 64 KiB object-header limit that
    /// bounds fixed-length attributes (a ResNet-152 `model_config` is several hundred KB).
    func setTextAttribute(_ attribute: String, of path: String, _ value: String) throws {
        let place = "\(path)@\(attribute)"
        try withHDF5 {
            let sid = H5Screate(H5S_SCALAR)
            guard sid >= 0 else { throw fail(place, "cannot create dataspace") }
            defer { H5Sclose(sid) }
            let tid = H5Tcopy(chdf5_c_s1())
            guard tid >= 0 else { throw fail(place, "cannot create string type") }
            defer { H5Tclose(tid) }
            guard H5Tset_size(tid, chdf5_variable()) >= 0, H5Tset_cset(tid, H5T_CSET_UTF8) >= 0 else {
                throw fail(place, "cannot make a variable-length UTF-8 string type")
            }
            let aid = H5Acreate_by_name(id, path, attribute, tid, sid, chdf5_default(), chdf5_default(), chdf5_default())
            guard aid >= 0 else { throw fail(place, "cannot create attribute") }
            defer { H5Aclose(aid) }
            let status = value.withCString { text -> herr_t in
                var pointer: UnsafePointer<CChar>? = text
                return withUnsafePointer(to: &pointer) { H5Awrite(aid, tid, $0) }
            }
            guard status >= 0 else { throw fail(place, "cannot write attribute") }
        }
    }

    /// Writes a contiguous little-endian float32 dataset at `path` (absolute; parent groups exist).
    func writeFloat32(_ path: String, _ t: Tensor) throws {
        try withHDF5 {
            var dims = t.shape.map { hsize_t($0) }
            let sid = t.shape.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(dims.count), &dims, nil)
            guard sid >= 0 else { throw fail(path, "cannot create dataspace") }
            defer { H5Sclose(sid) }
            let did = H5Dcreate2(id, path, chdf5_ieee_f32le(), sid, chdf5_default(), chdf5_default(), chdf5_default())
            guard did >= 0 else { throw fail(path, "cannot create dataset") }
            defer { H5Dclose(did) }
            if t.count > 0 {
                let status = t.data.withUnsafeBytes {
                    H5Dwrite(did, chdf5_native_float(), chdf5_s_all(), chdf5_s_all(), chdf5_default(), $0.baseAddress)
                }
                guard status >= 0 else { throw fail(path, "cannot write dataset") }
            }
        }
    }
}
