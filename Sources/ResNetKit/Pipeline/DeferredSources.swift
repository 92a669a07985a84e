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
        /// For values stored as aligned little-endian float32 in one piece of the file: calls its
        /// argument with them in place (a range of a mapping of the file, source layout), then drops
        /// them from the resident set. Saves the copy `fill` makes when the values are rearranged anyway.
        var inPlace: InPlaceReader? = nil
    }

    /// See ``Entry/inPlace``.
    typealias InPlaceReader = ((UnsafeBufferPointer<Float>) throws -> Void) throws -> Void

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
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ResNetError.io(file: path, reason: "cannot open: \(errnoText())") }
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
