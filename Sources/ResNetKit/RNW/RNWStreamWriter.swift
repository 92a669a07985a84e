import CLinuxIO
import Foundation

/// Writes a float32 `.rnw` file one tensor at a time, byte for byte what ``RNWWriter`` writes for
/// the same model, while holding one tensor in memory instead of the model.
///
/// The manifest records each tensor's checksum, and its length (varints) decides where the data
/// starts, so it is known only after the last tensor. The data is therefore written at the start
/// the manifest most likely needs (each unknown checksum taken as 9 or 10 varint bytes, alternately),
/// each tensor read back from the file and compared with what was meant to be written; at the end
/// the real header and manifest go in front. When the real data start differs from the guess (a
/// few 64-byte steps at most), the data is moved within the file and every tensor is checked
/// again against its checksum.
///
/// The write is atomic like ``RNWWriter``'s (``AtomicOutput``): the unfinished file is flushed,
/// checked by `verify`, then put in place; any failure leaves the destination alone and nothing else.
enum RNWStreamWriter {
    /// What ``write(spec:to:provenance:sourceHash:fill:verify:failAfterBytes:)`` did.
    struct Outcome {
        var entries: [RNWTensorEntry]
        /// True when the data had to be moved because the guessed data start was wrong.
        var moved: Bool
        /// True when the tensor data went out with direct I/O (see ``ChunkWriter``).
        var direct: Bool
    }

    /// How one parameter's float32 values (canonical layout) are produced.
    enum Producer {
        /// All at once into a buffer of exactly the tensor's element count.
        case whole((UnsafeMutableBufferPointer<Float>) throws -> Void)
        /// A few rows at a time: the tensor is `rows` rows of `length` elements each (rows × length
        /// = its element count); `fill(range, buffer)` puts rows `range` into `buffer`, which has
        /// exactly `range.count × length` elements. Lets large tensors pass through small buffers.
        case rows(length: Int, fill: (Range<Int>, UnsafeMutableBufferPointer<Float>) throws -> Void)
    }

    /// ``write(spec:to:provenance:sourceHash:produce:verify:failAfterBytes:guessBias:directIO:chunkBytes:)``
    /// with every parameter produced whole by `fill(i, buffer)`.
    static func write(spec: ResNetSpec, to path: String, provenance: RNWProvenance?, sourceHash: () throws -> String,
                      fill: @escaping (Int, UnsafeMutableBufferPointer<Float>) throws -> Void,
                      verify: (String, [RNWTensorEntry]) throws -> Void,
                      failAfterBytes: Int? = nil, guessBias: Int = 0, directIO: Bool = true,
                      chunkBytes: Int = 2 << 20) throws -> Outcome {
        try write(spec: spec, to: path, provenance: provenance, sourceHash: sourceHash,
                  produce: { i in .whole { try fill(i, $0) } }, verify: verify, failAfterBytes: failAfterBytes,
                  guessBias: guessBias, directIO: directIO, chunkBytes: chunkBytes)
    }

    /// Writes `spec`'s parameters in the spec's order, parameter `i` as `produce(i)` says.
    /// `provenance` is stored with its `sourceSHA256` replaced by `sourceHash()`, which is called once,
    /// after the last tensor (the hash may still be running on another thread until then).
    /// `verify` gets a path to the finished, unnamed file before it is put in place at `path`.
    static func write(spec: ResNetSpec, to path: String, provenance: RNWProvenance?, sourceHash: () throws -> String,
                      produce: (Int) -> Producer,
                      verify: (String, [RNWTensorEntry]) throws -> Void,
                      failAfterBytes: Int? = nil, guessBias: Int = 0, directIO: Bool = true,
                      chunkBytes: Int = 2 << 20) throws -> Outcome {
        let params = spec.parameters
        var counts: [Int] = []
        for p in params {
            var n = 1
            for d in p.shape {
                let (m, overflow) = n.multipliedReportingOverflow(by: d)
                guard d >= 0, !overflow, m <= Int.max / 4 else {
                    throw ResNetError.mapping(file: path, reason: "\(p.name): shape \(p.shape) is too large")
                }
                n = m
            }
            counts.append(n)
        }
        func described(_ sums: [UInt64]) -> [RNWStoredTensor] {
            zip(params, zip(counts, sums)).map { p, cs in
                RNWStoredTensor(name: p.name, dtype: .float32, shape: p.shape, length: UInt64(cs.0 * 4), checksum: cs.1, scales: [])
            }
        }
        // The guess: a provenance of the same length (the hash is hex of fixed width) and checksums
        // whose varints take 10 and 9 bytes alternately (half of all 64-bit values need 10).
        let guessedSums = params.indices.map { $0 % 2 == 0 ? UInt64.max : UInt64(1) << 62 }
        var placeholder = provenance
        placeholder?.sourceSHA256 = String(repeating: "0", count: 64)
        // `guessBias` (a multiple of 64) lets tests force a wrong guess and so the move below.
        let guess = try RNWWriter.layout(spec: spec, described: described(guessedSums), provenance: placeholder,
                                         parity: [], metadata: [:], file: path).entries
            .map { e -> RNWTensorEntry in var e = e; e.offset = UInt64(Int(e.offset) + guessBias); return e }

        let output = try AtomicOutput(destination: path)
        defer { output.discard() }
        let fd = output.fd
        // Each tensor is produced straight into small aligned staging buffers at its place in the
        // file, a few rows at a time; full buffers are written in file order by a writer thread,
        // with direct I/O where the file system supports it (see ChunkWriter).
        let dataStart = Int(guess.first?.offset ?? 0)
        let staged = ChunkWriter(fd: fd, file: path, start: dataStart, chunkBytes: chunkBytes,
                                 direct: directIO, failAfter: failAfterBytes)
        var sums: [UInt64] = []
        sums.reserveCapacity(params.count)
        var stagingError: Error?
        // Whole tensors larger than a staging buffer are produced here first, then copied in pieces.
        var scratch: UnsafeMutableBufferPointer<Float>?
        defer { scratch?.deallocate() }
        do {
            for i in params.indices {
                var hash = XXHash64Stream()
                var offset = Int(guess[i].offset)
                let total = counts[i]
                // Stages `rows` rows of `length` floats, as many per buffer as fit, through `fill`.
                func stage(rows: Int, length: Int, _ fill: (Range<Int>, UnsafeMutableBufferPointer<Float>) throws -> Void) throws {
                    var done = 0
                    while done < rows {
                        let region = try staged.reserve(upTo: (rows - done) * length * 4, unit: length * 4, at: offset)
                        let n = region.count / (length * 4)
                        let values = region.bindMemory(to: Float.self)
                        try fill(done ..< done + n, values)
                        #if _endian(big)
                        for j in values.indices { values[j] = Float(bitPattern: values[j].bitPattern.littleEndian) }
                        #endif
                        hash.update(UnsafeRawBufferPointer(region))
                        try staged.advance(by: region.count)
                        offset += region.count
                        done += n
                    }
                }
                // Produces the whole tensor in `scratch` first, then copies it in pieces (for tensors,
                // or rows, larger than a staging buffer).
                func viaScratch(_ fill: (UnsafeMutableBufferPointer<Float>) throws -> Void) throws {
                    if (scratch?.count ?? 0) < total {
                        scratch?.deallocate()
                        scratch = .allocate(capacity: counts.max() ?? total)
                    }
                    let values = UnsafeMutableBufferPointer(rebasing: scratch![0 ..< total])
                    try fill(values)
                    try stage(rows: total, length: 1) { rows, out in _ = out.initialize(from: values[rows]) }
                }
                switch produce(i) {
                case let .rows(length, fill) where length > 0 && total % length == 0:
                    if length * 4 <= staged.largestUnit {
                        try stage(rows: total / length, length: length, fill)
                    } else {
                        try viaScratch { try fill(0 ..< total / length, $0) }
                    }
                case .rows:
                    preconditionFailure("parameter \(i): rows do not divide its \(total) elements")
                case let .whole(fill) where total == 0:
                    try fill(UnsafeMutableBufferPointer(start: nil, count: 0))
                case let .whole(fill):
                    if total * 4 <= staged.largestUnit {
                        try stage(rows: 1, length: total) { _, out in try fill(out) }
                    } else {
                        try viaScratch(fill)
                    }
                }
                sums.append(hash.finish())
            }
        } catch {
            stagingError = error
        }
        // Always ends the writer thread; a staging error wins over the writer's own.
        let finishError: Error?
        do { try staged.finish(); finishError = nil } catch { finishError = error }
        if let error = stagingError ?? finishError { throw error }
        PhaseTrace.mark("tensor data written (\(staged.direct ? "direct I/O" : "page cache"))")
        var out = PositionalSink(fd: fd, file: path, failAfter: failAfterBytes.map { max(0, $0 - staged.bytesWritten) })
        var finished = provenance
        let hash = try sourceHash()
        finished?.sourceSHA256 = hash
        PhaseTrace.mark("source hash ready")
        let final = try RNWWriter.layout(spec: spec, described: described(sums), provenance: finished,
                                         parity: [], metadata: [:], file: path)
        let start = Int(final.entries.first?.offset ?? UInt64(final.header.count + final.manifest.count))
        let guessedStart = Int(guess.first?.offset ?? 0)
        let end = Int(final.entries.last.map { $0.offset + $0.length } ?? UInt64(start))
        var moved = false
        if !params.isEmpty && start != guessedStart {
            let back = UnsafeMutableRawBufferPointer.allocate(byteCount: max((counts.max() ?? 0) * 4, 1), alignment: 64)
            defer { back.deallocate() }
            try out.move(from: guessedStart, to: start, count: end - start, back: back)
            guard ftruncate(fd, off_t(end)) == 0 else {
                throw ResNetError.io(file: path, reason: "cannot truncate temporary file: \(errnoText())")
            }
            moved = true
            // Moved data is read back: every tensor must still match its checksum where it is now.
            for e in final.entries {
                let chunk = UnsafeMutableRawBufferPointer(rebasing: back[0 ..< Int(e.length)])
                try preadFully(fd, chunk, at: Int(e.offset), file: path, place: "tensor \(e.name) (read-back)")
                guard xxHash64(UnsafeRawBufferPointer(chunk)) == e.checksum else {
                    throw ResNetError.parityFailed(reason: "read-back of \(path): tensor \(e.name) differs from what was written")
                }
            }
        }
        try out.write(final.header, at: 0)
        try out.write(final.manifest, at: final.header.count)
        let manifestEnd = final.header.count + final.manifest.count
        if start > manifestEnd { try out.write([UInt8](repeating: 0, count: start - manifestEnd), at: manifestEnd) }

        PhaseTrace.mark("header and manifest written")
        guard fsync(fd) == 0 else { throw ResNetError.io(file: path, reason: "fsync of temporary file failed: \(errnoText())") }
        PhaseTrace.mark("fsynced")
        try verify(output.path, final.entries)
        PhaseTrace.mark("verified")
        try output.commit()
        PhaseTrace.mark("in place, directory synced")
        return Outcome(entries: final.entries, moved: moved, direct: staged.direct)
    }

}

/// The in-place moves of tensor data when the data start was guessed wrong.
extension PositionalSink {
    /// Moves `count` bytes at `from` to `to` within the file, in chunks of `back`'s size, in the
    /// order that never overwrites bytes not yet moved.
    mutating func move(from: Int, to: Int, count: Int, back: UnsafeMutableRawBufferPointer) throws {
        let step = back.count
        var chunks: [(Int, Int)] = []
        var at = 0
        while at < count { chunks.append((at, min(step, count - at))); at += step }
        if to > from { chunks.reverse() }
        for (rel, n) in chunks {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: back[0 ..< n])
            try preadFully(fd, chunk, at: from + rel, file: file, place: "moving tensor data")
            try write(UnsafeRawBufferPointer(chunk), at: to + rel)
        }
    }
}

/// Tensor data on its way to the file: staged in place in a few small aligned buffers, each
/// covering the next stretch of the file, and written in file order by a writer thread while the
/// caller fills the next buffer. Small buffers, reused, stay in the CPU caches and out of fresh
/// memory (on the test machine fresh pages cost a hypervisor fault on first touch).
///
/// Where the file system supports direct I/O (statx reports its alignment), the buffers go to the
/// device without the page cache: no second copy of the data in the kernel, no writeback left for
/// the final fsync, and no cache pages to allocate. A buffer is written up to its last whole 4 KB
/// block; the bytes after that are carried to the front of the next buffer. The last buffer is
/// padded with zeros to the block size and the file truncated to its real end. Where direct I/O is
/// not available, or a direct write is refused, the same buffers are written through the page cache.
private final class ChunkWriter: @unchecked Sendable {
    static let depth = 3
    static let block = 4096

    let fd: Int32
    let file: String
    /// Bytes each buffer holds (at least four blocks).
    let capacity: Int
    /// The largest reservation unit: what always fits in a fresh buffer after the carried tail.
    var largestUnit: Int { capacity - 2 * Self.block }
    /// Whether the buffers go out with direct I/O (false after a fallback).
    private(set) var direct: Bool
    /// Bytes handed to the kernel so far (padding included).
    var bytesWritten: Int { lock.lock(); defer { lock.unlock() }; return written }

    private let failAfter: Int?
    private var buffers: [UnsafeMutableRawBufferPointer] = []
    private var memory: [LargeBuffer] = []
    /// The buffer being filled, the file offset of its first byte (a block boundary) and the next
    /// file offset to stage.
    private var current = 0
    private var bufferStart: Int
    private var cursor: Int
    // Shared with the writer thread, under `lock`.
    private let lock = NSLock()
    private var queue: [(buffer: Int, offset: Int, length: Int)?] = []
    private var freeBuffers: [Int]
    private var failure: Error?
    private var written = 0
    /// Writer-thread time spent in write calls and the number of calls (for the phase trace).
    private var writeSeconds = 0.0
    private var writeCalls = 0
    private let queued = DispatchSemaphore(value: 0)
    private let freed = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private var finished = false

    /// Stages data from file offset `start` on, in buffers of `chunkBytes` (a multiple of the
    /// block size); bytes before `start` (header, manifest) are left to the caller.
    init(fd: Int32, file: String, start: Int, chunkBytes: Int, direct wantDirect: Bool, failAfter: Int?) {
        precondition(chunkBytes > 0 && chunkBytes % Self.block == 0)
        self.fd = fd
        self.file = file
        let capacity = max(chunkBytes, 4 * Self.block)
        self.capacity = capacity
        self.failAfter = failAfter
        var memory: Int64 = 0
        let offsetAlignment = Int(clinuxio_direct_alignment(fd, &memory))
        let usable = wantDirect && offsetAlignment > 0 && Self.block % offsetAlignment == 0
            && memory > 0 && Self.block % Int(memory) == 0
        direct = usable && clinuxio_set_direct(fd, 1) == 0
        self.memory = (0 ..< Self.depth).map { _ in allocateLargeBuffer(capacity) }
        buffers = self.memory.map { UnsafeMutableRawBufferPointer(rebasing: $0.bytes[0 ..< capacity]) }
        freeBuffers = Array(1 ..< Self.depth)
        bufferStart = start / Self.block * Self.block
        cursor = bufferStart
        // Created at 0 and signalled: libdispatch traps when a semaphore is freed below its initial value.
        for _ in 1 ..< Self.depth { freed.signal() }
        let thread = Thread { [self] in run() }
        thread.start()
    }

    deinit { for b in memory { b.free() } }

    /// Room at file offset `offset` (not before anything staged already) for a whole number of
    /// `unit`-byte pieces, at least one and at most `count` bytes, in a staging buffer, for the
    /// caller to fill and then ``advance(by:)`` past. Bytes skipped since the last piece are zeros
    /// (alignment padding).
    func reserve(upTo count: Int, unit: Int, at offset: Int) throws -> UnsafeMutableRawBufferPointer {
        precondition(offset >= cursor, "tensors are staged in file order")
        precondition(unit > 0 && unit <= largestUnit && count >= unit, "reservation unit does not fit a buffer")
        // Padding runs of any length (tests shift the data start): zeros, a buffer at a time.
        while offset > bufferStart + capacity - Self.block {
            zero(from: cursor, to: bufferStart + capacity - Self.block)
            cursor = bufferStart + capacity - Self.block
            try rotate()
        }
        zero(from: cursor, to: offset)
        cursor = offset
        if offset + unit > bufferStart + capacity { try rotate() }
        let room = bufferStart + capacity - offset
        let n = min(count, room / unit * unit)
        return UnsafeMutableRawBufferPointer(start: buffers[current].baseAddress! + (offset - bufferStart), count: n)
    }

    /// Says the last reservation's first `count` bytes are filled; a full buffer goes to the writer.
    func advance(by count: Int) throws {
        cursor += count
        precondition(cursor <= bufferStart + capacity)
        if bufferStart + capacity - cursor < Self.block { try rotate() }
    }

    /// Writes the last buffer, waits for the writer thread and leaves the file ending at the last
    /// staged byte, with direct I/O turned off again. Call it once, also after a failure.
    func finish() throws {
        guard !finished else { return }
        finished = true
        let end = cursor
        if cursor > bufferStart {
            let length = cursor - bufferStart
            let padded = (length + Self.block - 1) / Self.block * Self.block
            // Padded either way (direct I/O needs it; the truncation below removes it), so this
            // thread never reads `direct` while the writer may still be changing it.
            zero(from: cursor, to: bufferStart + padded)
            enqueue((current, bufferStart, padded))
        }
        enqueue(nil)
        done.wait()
        PhaseTrace.mark(String(format: "writer thread: %d writes, %.1f ms in them", writeCalls, writeSeconds * 1000))
        lock.lock(); let failed = failure; lock.unlock()
        if direct { _ = clinuxio_set_direct(fd, 0) }
        if let failed { throw failed }
        guard ftruncate(fd, off_t(end)) == 0 else {
            throw ResNetError.io(file: file, reason: "cannot truncate temporary file: \(errnoText())")
        }
    }

    private func zero(from: Int, to: Int) {
        guard to > from else { return }
        (buffers[current].baseAddress! + (from - bufferStart)).initializeMemory(as: UInt8.self, repeating: 0, count: to - from)
    }

    /// Hands the current buffer's whole blocks to the writer and moves the rest (less than a
    /// block) to the front of a free buffer, waiting for one.
    private func rotate() throws {
        let cut = cursor / Self.block * Self.block
        guard cut > bufferStart else { return }
        freed.wait()
        lock.lock()
        let error = failure
        let next = freeBuffers.removeFirst()
        lock.unlock()
        if cursor > cut {
            buffers[next].baseAddress!.copyMemory(from: buffers[current].baseAddress! + (cut - bufferStart), byteCount: cursor - cut)
        }
        enqueue((current, bufferStart, cut - bufferStart))
        current = next
        bufferStart = cut
        if let error { throw error }
    }

    private func enqueue(_ job: (buffer: Int, offset: Int, length: Int)?) {
        lock.lock(); queue.append(job); lock.unlock()
        queued.signal()
    }

    private func run() {
        while true {
            queued.wait()
            lock.lock()
            let job = queue.removeFirst()
            let failedAlready = failure != nil
            lock.unlock()
            guard let job else { break }
            if !failedAlready {
                do { try write(job) } catch { lock.lock(); failure = error; lock.unlock() }
            }
            lock.lock(); freeBuffers.append(job.buffer); lock.unlock()
            freed.signal()
        }
        done.signal()
    }

    private func write(_ job: (buffer: Int, offset: Int, length: Int)) throws {
        let base = UnsafeRawPointer(buffers[job.buffer].baseAddress!)
        var done = 0
        while done < job.length {
            var n = job.length - done
            if let limit = failAfter {
                lock.lock(); let sofar = written; lock.unlock()
                if sofar >= limit {
                    throw ResNetError.io(file: file, reason: "write failed: injected failure after \(limit) bytes")
                }
                n = min(n, max(limit - sofar, 1))
                if direct { n = min(job.length - done, (n + Self.block - 1) / Self.block * Self.block) }
            }
            let began = DispatchTime.now().uptimeNanoseconds
            let r = pwrite(fd, base + done, n, off_t(job.offset + done))
            writeSeconds += Double(DispatchTime.now().uptimeNanoseconds - began) / 1e9
            writeCalls += 1
            if r < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL && direct {
                    // The file system refused this direct write after all: the rest goes through the page cache.
                    _ = clinuxio_set_direct(fd, 0)
                    direct = false
                    continue
                }
                throw ResNetError.io(file: file, reason: "write failed at byte \(job.offset + done): \(errnoText())")
            }
            done += r
            lock.lock(); written += r; lock.unlock()
        }
        if !direct { _ = clinuxio_start_writeback(fd, Int64(job.offset), Int64(job.length)) }
    }
}

/// An anonymous mapping of at least `bytes` bytes (rounded up to 2 MB) that the kernel may back
/// with 2 MB pages (MADV_HUGEPAGE; a hint). Fresh memory is expensive on first touch: 40 MB of
/// 4 KB pages took 30-36 ms to touch on the test machine (a virtual machine), 8-12 ms as 2 MB
/// pages. Falls back to the heap when mmap fails.
func allocateLargeBuffer(_ bytes: Int) -> LargeBuffer {
    let huge = 2 << 20
    let size = (max(bytes, 1) + huge - 1) / huge * huge
    // Over-allocate by one huge page so the start can be aligned to it.
    if let raw = mmap(nil, size + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED {
        let start = (Int(bitPattern: raw) + huge - 1) / huge * huge
        let head = start - Int(bitPattern: raw)
        if head > 0 { munmap(raw, head) }
        let tail = huge - head
        if tail > 0 { munmap(UnsafeMutableRawPointer(bitPattern: start + size), tail) }
        let base = UnsafeMutableRawPointer(bitPattern: start)!
        _ = madvise(base, size, 14 /* MADV_HUGEPAGE */)
        return LargeBuffer(bytes: UnsafeMutableRawBufferPointer(start: base, count: size), mapped: true)
    }
    return LargeBuffer(bytes: .allocate(byteCount: bytes, alignment: 4096), mapped: false)
}

/// Memory from ``allocateLargeBuffer(_:)``; `free()` it once.
struct LargeBuffer {
    let bytes: UnsafeMutableRawBufferPointer
    let mapped: Bool

    func free() {
        if mapped { munmap(bytes.baseAddress, bytes.count) } else { bytes.deallocate() }
    }
}
