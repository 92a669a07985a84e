import Foundation

/// A whole file as read-only bytes: a private memory mapping, or a 64-byte-aligned heap copy when
/// mmap is refused (some FUSE or pipe-backed files) or the bytes came from memory. Readers of
/// `.rnw` and PyTorch files look at the bytes in place and never read outside `bytes`.
final class MappedFile: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    /// True for a memory mapping, false for a heap copy.
    let mapped: Bool

    /// Maps `path`; an empty file gives empty bytes (the caller decides whether that is an error).
    init(path: String) throws {
        let fd = try InputFile.open(path)   // regular files only
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ResNetError.io(file: path, reason: "cannot stat: \(String(cString: strerror(errno)))") }
        guard let size = Int(exactly: st.st_size), size >= 0 else {
            throw ResNetError.io(file: path, reason: "file size \(st.st_size) is not addressable")
        }
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            mapped = false
            return
        }
        if let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED {
            bytes = UnsafeRawBufferPointer(start: p, count: size)
            mapped = true
            return
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        var done = 0
        while done < size {
            let n = read(fd, buffer + done, size - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 {
                let reason = n < 0 ? String(cString: strerror(errno)) : "file shrank while being read"
                buffer.deallocate()
                throw ResNetError.io(file: path, reason: "read failed at byte \(done): \(reason)")
            }
            done += n
        }
        bytes = UnsafeRawBufferPointer(start: buffer, count: size)
        mapped = false
    }

    /// A heap copy of `data`, aligned like a mapping so tensor reads see the same alignment.
    /// - Throws: ``ResNetError/io(file:reason:)`` when the copy cannot be allocated (a failed Swift
    ///   allocation would trap).
    init(copying data: Data, name: String) throws {
        mapped = false
        guard !data.isEmpty else {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        try ensureAllocatable(data.count + 64, file: name, place: "the bytes given in memory", what: "an aligned copy")
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: data.count, alignment: 64)
        data.copyBytes(to: buffer.assumingMemoryBound(to: UInt8.self), count: data.count)
        bytes = UnsafeRawBufferPointer(start: buffer, count: data.count)
    }

    /// Maps every page in one system call before a full read (checksums): on a 103 MB `.rnw`
    /// (warm page cache) verified opens took 31 ms with pages faulted in one by one while hashing,
    /// 19-26 ms with this call. Only a hint: on kernels without MADV_POPULATE_READ (Linux < 5.14)
    /// the call fails and nothing changes.
    func prefault() {
        guard mapped, let base = bytes.baseAddress else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, 22 /* MADV_POPULATE_READ */)
    }

    /// ``prefault()`` for part of the file (a range of ``bytes``).
    func prefault(_ part: UnsafeRawBufferPointer) {
        guard mapped, let base = bytes.baseAddress, let start = part.baseAddress,
              start >= base, start + part.count <= base + bytes.count, part.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = Int(bitPattern: start) / page * page
        _ = madvise(UnsafeMutableRawPointer(bitPattern: lo), Int(bitPattern: start) + part.count - lo, 22 /* MADV_POPULATE_READ */)
    }

    /// Drops the whole pages of `part` (a range of ``bytes``) from this process's resident set once
    /// they have been read: the mapping stays valid and a later read faults them in again from the
    /// page cache. Streaming conversion calls it after each tensor so that reading a file from end
    /// to end costs one tensor of memory. Does nothing for heap copies or ranges outside the file.
    func release(_ part: UnsafeRawBufferPointer) {
        guard mapped, let base = bytes.baseAddress, let start = part.baseAddress,
              start >= base, start + part.count <= base + bytes.count else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = (Int(bitPattern: start) + page - 1) / page * page
        let hi = (Int(bitPattern: start) + part.count) / page * page
        guard hi > lo else { return }
        _ = madvise(UnsafeMutableRawPointer(bitPattern: lo), hi - lo, MADV_DONTNEED)
    }

    deinit {
        guard let base = bytes.baseAddress else { return }
        if mapped { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) } else { base.deallocate() }
    }
}
