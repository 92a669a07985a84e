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
    private let id: hid_t
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
        try HDF5File.preflight(name: path, path: path, image: nil)
        PhaseTrace.mark("preflight done")
        var failureText = ""
        let fid: hid_t = withHDF5 {
            let f = H5Fopen(path, chdf5_acc_rdonly(), chdf5_default())
            if f < 0 { failureText = HDF5File.errorStackText() }
            return f
        }
        guard fid >= 0 else {
            throw ResNetError.invalidInput(file: path, place: "",
                reason: "libhdf5 cannot open the file (truncated or damaged?): \(failureText)")
        }
        id = fid
        rawPath = superblock == 0 ? path : nil
    }

    /// Opens an HDF5 file image held in memory (e.g. `model.weights.h5` inside a `.keras` zip),
    /// through libhdf5's core driver; nothing is written to disk.
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
        try bytes.withUnsafeBytes { try HDF5File.preflight(name: name, path: name, image: $0) }
        var failureText = ""
        let fid: hid_t = withHDF5 {
            let fapl = H5Pcreate(chdf5_file_access_class())
            guard fapl >= 0 else { failureText = HDF5File.errorStackText(); return -1 }
            defer { H5Pclose(fapl) }
            // No backing store: the image is never written back. H5Pset_file_image copies the
            // buffer, so `bytes` need not outlive this call.
            guard H5Pset_fapl_core(fapl, 1 << 16, false) >= 0 else { failureText = HDF5File.errorStackText(); return -1 }
            let status = bytes.withUnsafeBytes { raw -> herr_t in
                guard let base = raw.baseAddress, raw.count > 0 else { return -1 }
                return H5Pset_file_image(fapl, UnsafeMutableRawPointer(mutating: base), raw.count)
            }
            guard status >= 0 else { failureText = HDF5File.errorStackText(); return -1 }
            let f = H5Fopen(label ?? name, chdf5_acc_rdonly(), fapl)
            if f < 0 { failureText = HDF5File.errorStackText() }
            return f
        }
        guard fid >= 0 else {
            throw ResNetError.invalidInput(file: name, place: "",
                reason: "libhdf5 cannot open the file image (truncated or damaged?): \(failureText)")
        }
        id = fid
    }

    deinit {
        let fid = id
        withHDF5 { _ = H5Fclose(fid) }
    }

    // MARK: - Pre-flight

    /// Lets libhdf5 walk all of the file's metadata (every link, object header, attribute value,
    /// datatype, dataspace and chunk index; no raw data) in a forked child first, so that a file
    /// that makes libhdf5 crash or hang is refused instead of taking this process down. Only how
    /// the child ended matters: errors libhdf5 reports are left to the in-process reader, which
    /// words them better. The lock is held across the fork so that no other thread is inside
    /// libhdf5 when the child is created, and OpenBLAS's fork guard so that none is inside OpenBLAS.
    static func preflight(name: String, path: String, image: UnsafeRawBufferPointer?,
                          timeout: Int32 = HDF5Limits.preflightTimeoutMilliseconds) throws {
        let maxAttributeBytes = ReadLimits.current.maxHeaderBytes
        let result = withHDF5 {
            // No OpenBLAS call may run across the fork (see copenblas_fork_guard_begin).
            copenblas_fork_guard_begin()
            defer { copenblas_fork_guard_end() }
            return path.withCString { chdf5_preflight($0, image?.baseAddress, image?.count ?? 0, maxAttributeBytes, timeout) }
        }
        switch result.outcome {
        case 0:
            return
        case 1:
            let signal = result.signal
            throw ResNetError.invalidInput(file: name, place: "HDF5 metadata",
                reason: "libhdf5 crashed with signal \(signal)\(signalName(signal)) while parsing the file's metadata (checked in a child process): the file is malformed")
        case 2:
            throw ResNetError.invalidInput(file: name, place: "HDF5 metadata",
                reason: "libhdf5 did not finish parsing the file's metadata within \(Double(timeout) / 1000) s (checked in a child process, which was stopped): the file is malformed or hostile")
        default:
            throw ResNetError.io(file: name, reason: "cannot start the child process that checks the file with libhdf5 (errno \(result.error))")
        }
    }

    private static func signalName(_ signal: Int32) -> String {
        let names: [Int32: String] = [SIGSEGV: "SIGSEGV", SIGBUS: "SIGBUS", SIGABRT: "SIGABRT", SIGILL: "SIGILL",
                                      SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGTRAP: "SIGTRAP"]
        return names[signal].map { ", \($0)" } ?? ""
    }

    /// The file's handle, for ``HDF5Group``.
    fileprivate var fileID: hid_t { id }

    // MARK: - Errors

    /// The current HDF5 error stack as one line, innermost failure first. Call with the lock held,
    /// straight after the failing call (the next API call clears the stack).
    fileprivate static func errorStackText() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        buffer.withUnsafeMutableBufferPointer { chdf5_error_stack_text($0.baseAddress, $0.count) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func failure(_ place: String, _ what: String) -> ResNetError {
        let stack = HDF5File.errorStackText()
        return .invalidInput(file: name, place: place, reason: stack.isEmpty ? what : "\(what): \(stack)")
    }

    /// Why reading the values of the open dataset `did` failed: a filter libhdf5 cannot run
    /// (plugins are never loaded, see `chdf5_refuse_filter_plugins`), named, or libhdf5's stack.
    private func readFailure(_ did: hid_t, _ place: String) -> ResNetError {
        let stack = HDF5File.errorStackText()   // before another call replaces it
        var label = [CChar](repeating: 0, count: 64)
        let id = label.withUnsafeMutableBufferPointer { chdf5_missing_filter(did, $0.baseAddress, $0.count) }
        guard id >= 0 else {
            return .invalidInput(file: name, place: place,
                                 reason: "cannot read dataset (truncated file?)" + (stack.isEmpty ? "" : ": \(stack)"))
        }
        // The name comes from the file: printable ASCII only.
        let text = String(decoding: label.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }.filter { (0x20..<0x7f).contains($0) },
                          as: UTF8.self)
        return .unsupported(file: name, place: place,
            reason: "dataset is compressed with HDF5 filter \(id)\(text.isEmpty ? "" : " (\"\(text)\")"), which libhdf5 does not "
                + "have built in; resnet-convert does not load HDF5 filter plugins (shared libraries), so re-save the "
                + "weights uncompressed or with gzip (deflate), e.g. with h5py")
    }

    // MARK: - Structure

    /// What `path` (absolute, `/a/b`) points at, or nil when it does not exist.
    func kind(at path: String) throws -> HDF5ObjectKind? {
        try withHDF5 { try kind(in: id, base: "", relative: path) }
    }

    /// What `relative` (`a/b`, below the object `loc`, whose absolute path is `base`) points at,
    /// or nil when it does not exist. Every component is checked: a missing or non-group
    /// component gives nil, an external link is refused. Errors name the absolute path.
    /// Call with the lock held.
    fileprivate func kind(in loc: hid_t, base: String, relative: String) throws -> HDF5ObjectKind? {
        let parts = relative.split(separator: "/", omittingEmptySubsequences: true)
        if parts.isEmpty { return .group }
        var prefix = ""   // components so far, relative to `loc`
        for (i, part) in parts.enumerated() {
            prefix += prefix.isEmpty ? String(part) : "/" + part
            // From the file itself the name is absolute, as the error places are.
            let found = chdf5_link_kind(loc, base.isEmpty ? "/" + prefix : prefix)
            func place() -> String { base + "/" + prefix }
            let k: HDF5ObjectKind
            switch found {
            case CHDF5_LINK_LOOKUP_FAILED: throw failure(place(), "cannot look up link")
            case CHDF5_LINK_MISSING: return nil
            case CHDF5_LINK_EXTERNAL:
                throw ResNetError.invalidInput(file: name, place: place(),
                    reason: "an external link (to another file); links out of the file are never followed")
            case CHDF5_LINK_GROUP: k = .group
            case CHDF5_LINK_DATASET: k = .dataset
            case CHDF5_LINK_OTHER: k = .other
            default: throw failure(place(), "cannot read object header (dangling link?)")
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
        try withHDF5 {
            let gid = H5Gopen2(id, path, chdf5_default())
            guard gid >= 0 else { throw failure(path, "cannot open group") }
            defer { H5Gclose(gid) }
            var info = H5G_info_t()
            guard H5Gget_info(gid, &info) >= 0 else { throw failure(path, "cannot read group info") }
            guard info.nlinks <= UInt64(HDF5Limits.maxGroupMembers) else {
                throw ResNetError.invalidInput(file: name, place: path,
                    reason: "group claims \(info.nlinks) members (limit \(HDF5Limits.maxGroupMembers))")
            }
            let n = Int(info.nlinks)
            var tracked = false
            if creationOrder {
                let gcpl = H5Gget_create_plist(gid)
                if gcpl >= 0 {
                    var flags: UInt32 = 0
                    if H5Pget_link_creation_order(gcpl, &flags) >= 0 {
                        tracked = flags & UInt32(H5P_CRT_ORDER_TRACKED) != 0
                    }
                    H5Pclose(gcpl)
                }
            }
            if creationOrder && !tracked { return nil }
            let index = tracked ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME
            var names: [String] = []
            names.reserveCapacity(n)
            for i in 0 ..< n {
                let len = H5Lget_name_by_idx(gid, ".", index, H5_ITER_INC, hsize_t(i), nil, 0, chdf5_default())
                guard len >= 0, len < 1 << 16 else { throw failure(path, "cannot read name of member \(i)") }
                var buffer = [CChar](repeating: 0, count: Int(len) + 1)
                guard H5Lget_name_by_idx(gid, ".", index, H5_ITER_INC, hsize_t(i), &buffer, buffer.count, chdf5_default()) >= 0 else {
                    throw failure(path, "cannot read name of member \(i)")
                }
                names.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            return names
        }
    }

    // MARK: - Attributes

    /// The attribute `attribute` of the object at `path`, or nil when it is absent.
    func attribute(_ attribute: String, of path: String) throws -> HDF5Attribute? {
        try withHDF5 { try self.attribute(attribute, of: id, named: path, place: "\(path)@\(attribute)") }
    }

    /// The attribute `attribute` of the object `object` below `loc` (`.` for `loc` itself), or
    /// nil when it is absent; errors name `place`. Call with the lock held.
    fileprivate func attribute(_ attribute: String, of loc: hid_t, named object: String, place: String) throws -> HDF5Attribute? {
        do {
            let exists = H5Aexists_by_name(loc, object, attribute, chdf5_default())
            if exists < 0 { throw failure(place, "cannot look up attribute") }
            if exists == 0 { return nil }
            let aid = H5Aopen_by_name(loc, object, attribute, chdf5_default(), chdf5_default())
            guard aid >= 0 else { throw failure(place, "cannot open attribute") }
            defer { H5Aclose(aid) }
            let tid = H5Aget_type(aid)
            guard tid >= 0 else { throw failure(place, "cannot read attribute type") }
            defer { H5Tclose(tid) }
            let sid = H5Aget_space(aid)
            guard sid >= 0 else { throw failure(place, "cannot read attribute dataspace") }
            defer { H5Sclose(sid) }
            let spaceClass = H5Sget_simple_extent_type(sid)
            let isScalar = spaceClass == H5S_SCALAR
            let points = spaceClass == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(sid)
            guard points >= 0, points <= HDF5Limits.maxAttributeElements else {
                throw ResNetError.invalidInput(file: name, place: place, reason: "attribute claims \(points) elements")
            }
            let count = Int(points)
            switch H5Tget_class(tid) {
            case H5T_STRING:
                let strings = try readStrings(aid, tid, sid, count, place)
                if isScalar, let s = strings.first { return .string(s) }
                return .strings(strings)
            case H5T_INTEGER, H5T_FLOAT:
                try budget.charge(count * 8, place: place, what: "a numeric attribute of \(count) elements")
                var values = [Double](repeating: 0, count: count)
                if count > 0 {
                    guard H5Aread(aid, chdf5_native_double(), &values) >= 0 else {
                        throw failure(place, "cannot read numeric attribute")
                    }
                }
                return .numbers(values)
            default:
                throw ResNetError.unsupported(file: name, place: place,
                    reason: "attribute type class \(H5Tget_class(tid).rawValue) (only strings and numbers are read)")
            }
        }
    }

    private func readStrings(_ aid: hid_t, _ tid: hid_t, _ sid: hid_t, _ count: Int, _ place: String) throws -> [String] {
        if count == 0 { return [] }
        let isVariable = H5Tis_variable_str(tid)
        if isVariable < 0 { throw failure(place, "cannot read string type") }
        if isVariable > 0 {
            let mem = H5Tcopy(chdf5_c_s1())
            guard mem >= 0 else { throw failure(place, "cannot build string type") }
            defer { H5Tclose(mem) }
            guard H5Tset_size(mem, chdf5_variable()) >= 0,
                  H5Tset_cset(mem, H5Tget_cset(tid)) >= 0 else { throw failure(place, "cannot build string type") }
            // A pointer and a String per element, before the strings themselves (charged as read).
            try budget.charge(count.multipliedReportingOverflow(by: 24).overflow ? Int.max : count * 24, place: place,
                              what: "a string attribute of \(count) elements")
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
            guard H5Aread(aid, mem, &pointers) >= 0 else { throw failure(place, "cannot read string attribute") }
            defer { _ = H5Dvlen_reclaim(mem, sid, chdf5_default(), &pointers) }
            var total = 0
            var result: [String] = []
            result.reserveCapacity(count)
            for p in pointers {
                guard let p else { result.append(""); continue }
                let len = strlen(p)
                total += len
                guard total <= limits.maxHeaderBytes else {
                    throw limits.exceeded(.headerBytes, file: name, place: place, found: "string attribute of more than \(total) bytes")
                }
                result.append(String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self))
            }
            return result
        }
        let size = H5Tget_size(tid)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: size)
        guard size > 0, !overflow else {
            throw ResNetError.invalidInput(file: name, place: place,
                reason: "fixed-length string attribute of \(count) × \(size) bytes is too large")
        }
        guard bytes <= limits.maxHeaderBytes else {
            throw limits.exceeded(.headerBytes, file: name, place: place, found: "fixed-length string attribute of \(count) × \(size) bytes")
        }
        try budget.charge(bytes &+ count &* 16, place: place, what: "a string attribute of \(count) × \(size) bytes")
        var buffer = [UInt8](repeating: 0, count: bytes)
        guard H5Aread(aid, tid, &buffer) >= 0 else { throw failure(place, "cannot read string attribute") }
        let spacePadded = H5Tget_strpad(tid) == H5T_STR_SPACEPAD
        return (0 ..< count).map { i in
            var item = buffer[i * size ..< (i + 1) * size]
            if let nul = item.firstIndex(of: 0) { item = item[..<nul] }
            if spacePadded { while item.last == 0x20 { item = item.dropLast() } }
            return String(decoding: item, as: UTF8.self)
        }
    }

    // MARK: - Datasets

    /// Reads the floating-point dataset at `path` (f16, bf16, f32 or f64 in the file) as float32
    /// in the file's own layout. Other element types are refused.
    func readTensor(at path: String) throws -> SourceTensor {
        try withHDF5 {
            guard let t = try readTensor(in: id, named: path, path: path, isDataset: { true }) else {
                throw ResNetError.invalidInput(file: name, place: path, reason: "not a dataset")   // not reached: `isDataset` is true
            }
            return t
        }
    }

    /// ``readTensor(at:)`` for the dataset `object` below `loc`, whose absolute path is `path`.
    /// When it cannot be opened, `isDataset` decides between nil (not a dataset; it may throw
    /// what is wrong with the path instead) and reporting the failed open. Call with the lock held.
    fileprivate func readTensor(in loc: hid_t, named object: String, path: String,
                                isDataset: () throws -> Bool) throws -> SourceTensor? {
        let deferred = DeferredSources.current
        var info = chdf5_dataset_info_t()
        var stack = [CChar](repeating: 0, count: 4096)
        let did = stack.withUnsafeMutableBufferPointer { buffer in
            chdf5_dataset_open_info(loc, object, deferred != nil && rawPath != nil ? 1 : 0, &info, buffer.baseAddress, buffer.count)
        }
        defer { if did >= 0 { H5Dclose(did) } }
        // The checks come in the order the values were read, so a damaged dataset is reported by
        // its first problem, as libhdf5's own error when a call failed.
        func failed(_ what: String) -> ResNetError {
            let text = String(decoding: stack.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            return .invalidInput(file: name, place: path, reason: text.isEmpty ? what : "\(what): \(text)")
        }
        if info.step == CHDF5_DS_FAILED_OPEN {
            guard try isDataset() else { return nil }
            throw failed("cannot open dataset")
        }
        if info.step == CHDF5_DS_FAILED_TYPE { throw failed("cannot read dataset type") }
        let typeClass = info.type_class
        let size = info.type_size
        guard typeClass == H5T_FLOAT else {
            let what = typeClass == H5T_INTEGER ? "integer (\(size) bytes)" : "type class \(typeClass.rawValue)"
            throw ResNetError.unsupported(file: name, place: path,
                reason: "dataset holds \(what) elements; weights must be f16, bf16, f32 or f64")
        }
        let dtype: DType
        switch size {
        case 2:
            if info.step == CHDF5_DS_FAILED_FIELDS { throw failed("cannot read float type fields") }
            let (esize, msize) = (info.exponent_bits, info.mantissa_bits)
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
        if info.step == CHDF5_DS_FAILED_SPACE { throw failed("cannot read dataset dataspace") }
        if info.step == CHDF5_DS_STOPPED_NULL_SPACE {
            throw ResNetError.invalidInput(file: name, place: path, reason: "dataset has a null dataspace (no elements)")
        }
        let rank = Int(info.rank)
        if info.step == CHDF5_DS_FAILED_RANK { throw failed("cannot read dataset rank (\(rank))") }
        if info.step == CHDF5_DS_FAILED_DIMS { throw failed("cannot read dataset shape") }
        let dims = withUnsafeBytes(of: info.dims) { Array($0.bindMemory(to: hsize_t.self).prefix(rank)) }
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
        if info.step == CHDF5_DS_FAILED_PLIST { throw failed("cannot read dataset creation properties") }
        if info.step == CHDF5_DS_FAILED_FILTERS { throw failed("cannot read dataset filters") }
        let filters = Int(info.filters)
        let (budget, budgetOverflow) = fileSize.multipliedReportingOverflow(by: filters == 0 ? 1 : HDF5Limits.maxCompressionRatio)
        guard budgetOverflow || storedBytes <= budget else {
            throw ResNetError.invalidInput(file: name, place: path,
                reason: "shape \(shape) needs \(storedBytes) bytes but the whole file has \(fileSize)"
                    + (filters == 0 ? "" : " (compressed; allowed ratio \(HDF5Limits.maxCompressionRatio))"))
        }
        guard did >= 0 else { throw failed("cannot open dataset") }   // every failed step was reported above
        try self.budget.charge(ReadLimits.float32Bytes(count), place: path, what: "dataset \(shape) as float32", probe: false)
        let cleanName = path.hasPrefix("/") ? String(path.dropFirst()) : path
        if let deferred {
            bytesRead = total
            return try deferRead(path, cleanName: cleanName, info: info, shape: shape, count: count, dtype: dtype, into: deferred)
        }
        var data = try checkedFloatArray(count: count, file: name, place: path)
        if count > 0 {
            // libhdf5 converts any IEEE-style float (f16/bf16 included) to native float itself.
            let status = data.withUnsafeMutableBytes { raw in
                H5Dread(did, chdf5_native_float(), chdf5_s_all(), chdf5_s_all(), chdf5_default(), raw.baseAddress)
            }
            guard status >= 0 else { throw readFailure(did, path) }
        }
        bytesRead = total
        return SourceTensor(name: cleanName, sourceDType: dtype, tensor: Tensor(shape: shape, data: data))
    }

    /// Records the dataset in `deferred` and returns a placeholder (streaming conversion). A
    /// contiguous, unfiltered little-endian float32 dataset is later read straight from the file at
    /// the address libhdf5 reports, after checking that address and the storage size against the
    /// file; every other dataset is read through libhdf5 when its turn comes.
    private func deferRead(_ path: String, cleanName: String, info: chdf5_dataset_info_t, shape: [Int], count: Int,
                           dtype: DType, into deferred: DeferredSources) throws -> SourceTensor {
        var offset: Int?
        #if _endian(little)
        // `is_ieee_f32le` is set only for unfiltered datasets of a file read by path (`rawPath`).
        if rawPath != nil, dtype == .float32, info.is_ieee_f32le != 0, count > 0, info.contiguous != 0 {
            let address = info.address   // HADDR_UNDEF (all ones) when not allocated
            if address < UInt64(Int.max), info.storage_size == UInt64(count * 4),
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
                try readFloats(path, into: out)
            })
        }
        return SourceTensor(name: cleanName, sourceDType: dtype, tensor: placeholderTensor(shape: shape))
    }

    /// Reads the dataset at `path` as float32 into `out`, which must match its element count.
    private func readFloats(_ path: String, into out: UnsafeMutableBufferPointer<Float>) throws {
        try withHDF5 {
            let did = H5Dopen2(id, path, chdf5_default())
            guard did >= 0 else { throw failure(path, "cannot open dataset") }
            defer { H5Dclose(did) }
            let sid = H5Dget_space(did)
            guard sid >= 0 else { throw failure(path, "cannot read dataset dataspace") }
            defer { H5Sclose(sid) }
            guard H5Sget_simple_extent_npoints(sid) == out.count else {
                throw ResNetError.invalidInput(file: name, place: path, reason: "dataset changed size between reads")
            }
            if out.isEmpty { return }
            guard H5Dread(did, chdf5_native_float(), chdf5_s_all(), chdf5_s_all(), chdf5_default(), out.baseAddress) >= 0 else {
                throw readFailure(did, path)
            }
        }
    }
}

/// A group of an ``HDF5File`` held open, so that the lookups below it (a Keras layer's attributes,
/// links and datasets) start from it instead of walking the whole path from the root each time.
/// Places in errors are the same absolute paths the file's own methods report.
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
    private let id: hid_t
    /// The path as ``HDF5File/kind(at:)`` spells it in errors (components joined by single
    /// slashes; "" for the root).
    private let base: String

    private init(file: HDF5File, path: String, id: hid_t) {
        self.file = file
        self.path = path
        self.id = id
        base = path.split(separator: "/", omittingEmptySubsequences: true).reduce(into: "") { $0 += "/" + $1 }
    }

    /// The group at `path` (absolute) of `file`, or nil when `path` is not a group.
    static func open(_ file: HDF5File, path: String) throws -> HDF5Group? {
        try withHDF5 { try open(file, in: file.fileID, base: "", relative: path, path: path) }
    }

    /// The group `relative` below `loc` (absolute path `base`, "" for the root), or nil when it is
    /// not a group. Call with the lock held.
    private static func open(_ file: HDF5File, in loc: hid_t, base: String, relative: String, path: String) throws -> HDF5Group? {
        let gid = H5Gopen2(loc, libraryName(relative, from: base), chdf5_default())
        if gid >= 0 { return HDF5Group(file: file, path: path.isEmpty ? "/" : path, id: gid) }
        let text = HDF5File.errorStackText()
        guard try file.kind(in: loc, base: base, relative: relative) == .group else { return nil }
        throw ResNetError.invalidInput(file: file.name, place: path, reason: text.isEmpty ? "cannot open group" : "cannot open group: \(text)")
    }

    deinit {
        let gid = id
        withHDF5 { _ = H5Gclose(gid) }
    }

    /// The name libhdf5 is given for `relative`: absolute from the file itself, else relative to
    /// the group (a leading `/` would make it absolute, which `join`ed paths never meant).
    private static func libraryName(_ relative: String, from base: String) -> String {
        if base.isEmpty { return relative.hasPrefix("/") ? relative : "/" + relative }
        return relative.hasPrefix("/") ? String(relative.drop { $0 == "/" }) : relative
    }


    /// Absolute path of `relative`, joined as the Keras reader joins paths.
    private func absolute(_ relative: String) -> String { path.hasSuffix("/") ? path + relative : path + "/" + relative }

    /// ``HDF5File/kind(at:)`` for `relative` (`a/b`) below this group.
    func kind(of relative: String) throws -> HDF5ObjectKind? {
        try withHDF5 { try file.kind(in: id, base: base, relative: relative) }
    }

    /// The group `relative` below this one, or nil when that is not a group.
    func group(_ relative: String) throws -> HDF5Group? {
        try withHDF5 { try HDF5Group.open(file, in: id, base: base, relative: relative, path: absolute(relative)) }
    }

    /// ``HDF5File/attribute(_:of:)`` for an attribute of this group.
    func attribute(_ attribute: String) throws -> HDF5Attribute? {
        try withHDF5 { try file.attribute(attribute, of: id, named: ".", place: "\(path)@\(attribute)") }
    }

    /// ``HDF5File/readTensor(at:)`` for `relative` below this group, or nil when that is not a dataset.
    func readTensorIfDataset(at relative: String) throws -> SourceTensor? {
        try withHDF5 {
            try file.readTensor(in: id, named: HDF5Group.libraryName(relative, from: base), path: absolute(relative)) {
                try file.kind(in: id, base: base, relative: relative) == .dataset
            }
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
