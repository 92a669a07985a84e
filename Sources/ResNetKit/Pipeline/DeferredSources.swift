import Foundation

/// Source tensors seen while a file was read for its structure only, each with a way to read its
/// values later, one at a time.
///
/// Streaming conversion (``convert(input:output:options:progress:)`` with `skipVerification`) reads
/// a file twice: first every reader and mapper runs as usual while this registry is active
/// (``DeferredSources/$current``), so readers record where each tensor lives instead of reading it
/// and hand the mapper a ``placeholderTensor(shape:)``; then the writer fills one scratch buffer
/// per tensor from here, transforms it and writes it. Peak memory is then one tensor, not the model.
final class DeferredSources: @unchecked Sendable {
    /// One source tensor not yet read.
    struct Entry {
        /// Shape in the source layout.
        var shape: [Int]
        /// Element type in the file.
        var dtype: DType
        /// Writes the tensor's values as float32, source layout, into a buffer of exactly
        /// `shape.product` elements, then drops what it read from the process's resident memory.
        var fill: (UnsafeMutableBufferPointer<Float>) throws -> Void
        /// Where the values lie in a mapping of the file, when they are stored there as aligned
        /// little-endian float32 in one piece: then they can be rearranged straight from the file.
        var mapped: MappedRange? = nil
    }

    /// Float32 values lying in place in a mapped file (a range checked against the mapping).
    struct MappedRange {
        let file: MappedFile
        let offset: Int
        let count: Int

        /// Nil unless `count` floats at byte `offset` lie inside the mapping, suitably aligned.
        init?(file: MappedFile, offset: Int, count: Int) {
            guard file.mapped, offset >= 0, count >= 0, offset % MemoryLayout<Float>.alignment == 0,
                  case let (bytes, o1) = count.multipliedReportingOverflow(by: 4), !o1,
                  case let (end, o2) = offset.addingReportingOverflow(bytes), !o2, end <= file.bytes.count else { return nil }
            self.file = file; self.offset = offset; self.count = count
        }

        var raw: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: file.bytes[offset ..< offset + count * 4]) }
        /// The values, source layout.
        var floats: UnsafeBufferPointer<Float> { raw.assumingMemoryBound(to: Float.self) }
        /// Maps all their pages now (one system call instead of a fault per few pages).
        func prefault() { file.prefault(raw) }
        /// Drops their pages from this process's resident set once read.
        func release() { file.release(raw) }
    }

    /// The registry the current load records into; nil for an ordinary (materialising) load.
    @TaskLocal static var current: DeferredSources?

    private(set) var entries: [String: Entry] = [:]
    /// Names recorded twice: their tensors cannot be told apart by name, so streaming is refused.
    private(set) var ambiguous: Set<String> = []
    /// Open descriptors of files read by offset, closed with the registry.
    private var files: [String: Int32] = [:]
    /// Mappings of files read in place, unmapped with the registry.
    private var mappings: [String: MappedFile] = [:]
    private let lock = NSLock()

    func add(_ name: String, _ entry: Entry) {
        lock.lock(); defer { lock.unlock() }
        if entries[name] != nil { ambiguous.insert(name) }
        entries[name] = entry
    }

    /// A read-only descriptor for `path`, opened once per registry.
    func descriptor(for path: String) throws -> Int32 {
        lock.lock(); defer { lock.unlock() }
        if let fd = files[path] { return fd }
        let fd = try InputFile.open(path)
        files[path] = fd
        return fd
    }

    /// A read-only mapping of `path`, made once per registry; nil when the file cannot be mapped.
    func mapping(for path: String) -> MappedFile? {
        lock.lock(); defer { lock.unlock() }
        if let m = mappings[path] { return m }
        guard let m = try? MappedFile(path: path), m.mapped else { return nil }
        mappings[path] = m
        return m
    }

    deinit { for fd in files.values { close(fd) } }
}

/// A tensor with a real shape whose elements are never read: what readers hand the mapper while
/// ``DeferredSources/current`` is set. The storage is allocated but left untouched, so large ones
/// stay out of the resident set (fresh anonymous pages); its values are unspecified.
func placeholderTensor(shape: [Int]) -> Tensor {
    let count = shape.reduce(1, *)
    let data = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    return Tensor(shape: shape, data: data)
}

/// `tensor.permuted(axes)`, or a placeholder of the permuted shape while only structure is read.
func layoutChanged(_ tensor: Tensor, _ axes: [Int]) -> Tensor {
    guard DeferredSources.current != nil else { return tensor.permuted(axes) }
    return placeholderTensor(shape: axes.map { tensor.shape[$0] })
}

/// Reads exactly `buffer.count` bytes at `offset` of `fd`; a short file is an error naming `place`.
func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int, file: String, place: String) throws {
    var done = 0
    while done < buffer.count {
        let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        if n < 0 {
            if errno == EINTR { continue }
            throw ResNetError.io(file: file, reason: "read failed at byte \(offset + done) (\(place)): \(errnoText())")
        }
        if n == 0 {
            throw ResNetError.invalidInput(file: file, place: place,
                reason: "file ends at byte \(offset + done), the data runs to byte \(offset + buffer.count) (file changed while being read?)")
        }
        done += n
    }
}
