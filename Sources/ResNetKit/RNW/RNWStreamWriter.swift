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
/// The write is atomic like ``RNWWriter``'s: a temporary file beside the destination, flushed,
/// checked by `verify`, then renamed; any failure removes it and leaves the destination alone.
enum RNWStreamWriter {
    /// What ``write(spec:to:provenance:sourceHash:fill:verify:failAfterBytes:)`` did.
    struct Outcome {
        var entries: [RNWTensorEntry]
        /// True when the data had to be moved because the guessed data start was wrong.
        var moved: Bool
    }

    /// Writes `spec`'s parameters in the spec's order; `fill(i, buffer)` must put parameter `i`'s
    /// float32 values (canonical layout) into `buffer`, which has exactly its element count.
    /// `provenance` is stored with its `sourceSHA256` replaced by `sourceHash()`, which is called once,
    /// after the last tensor (the hash may still be running on another thread until then).
    /// `verify` sees the finished temporary file before it is renamed over `path`.
    static func write(spec: ResNetSpec, to path: String, provenance: RNWProvenance?, sourceHash: () throws -> String,
                      fill: (Int, UnsafeMutableBufferPointer<Float>) throws -> Void,
                      verify: (String, [RNWTensorEntry]) throws -> Void,
                      failAfterBytes: Int? = nil, guessBias: Int = 0) throws -> Outcome {
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

        let (directory, base) = RNWWriter.split(path)
        guard !base.isEmpty, base != ".", base != ".." else {
            throw ResNetError.io(file: path, reason: "destination is not a file name")
        }
        let (fd, tempPath) = try RNWWriter.createTemporary(directory: directory, base: base, for: path)
        var closed = false
        var renamed = false
        defer {
            if !closed { close(fd) }
            if !renamed { unlink(tempPath) }
        }
        var out = PositionalSink(fd: fd, file: path, failAfter: failAfterBytes)

        let largest = counts.max() ?? 0
        let back = UnsafeMutableRawBufferPointer.allocate(byteCount: max(largest * 4, 1), alignment: 64)
        defer { back.deallocate() }

        var sums: [UInt64] = []
        sums.reserveCapacity(params.count)
        try withoutActuallyEscaping(fill) { fill in
            let prefetch = Prefetcher(counts: counts, largest: largest, fill: fill)
            defer { prefetch.stop() }
            for (i, p) in params.enumerated() {
                let values = try prefetch.take(i)
                defer { prefetch.release(i) }
                let bytes = UnsafeRawBufferPointer(values)
                #if _endian(big)
                for j in values.indices { values[j] = Float(bitPattern: values[j].bitPattern.littleEndian) }
                #endif
                sums.append(xxHash64(bytes))
                let offset = Int(guess[i].offset)
                try out.write(bytes, at: offset)
                // Starts writeback now rather than all at the final fsync, which then waits for the
                // last tensors only (a hint: a failure here resurfaces at fsync).
                _ = clinuxio_start_writeback(fd, Int64(offset), Int64(bytes.count))
                // Read-back: the file must hold exactly the bytes converted from the source.
                guard try fileHolds(bytes, fd: fd, at: offset, back: back, file: path, place: "tensor \(p.name) (read-back)") else {
                    throw ResNetError.parityFailed(reason: "read-back of \(path): tensor \(p.name) differs from what was written")
                }
            }
        }

        PhaseTrace.mark("loop done")
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
            try out.move(from: guessedStart, to: start, count: end - start, back: back)
            guard ftruncate(fd, off_t(end)) == 0 else {
                throw ResNetError.io(file: path, reason: "cannot truncate temporary file: \(errnoText())")
            }
            moved = true
            // The per-tensor read-back saw the old place; check every tensor where it is now.
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
        closed = true
        guard close(fd) == 0 else { throw ResNetError.io(file: path, reason: "close of temporary file failed: \(errnoText())") }
        PhaseTrace.mark("fsynced")
        try verify(tempPath, final.entries)
        PhaseTrace.mark("verified")
        guard rename(tempPath, path) == 0 else {
            throw ResNetError.io(file: path, reason: "cannot replace destination: \(errnoText())")
        }
        renamed = true
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 { _ = fsync(dirFD); close(dirFD) }
        PhaseTrace.mark("renamed, directory synced")
        return Outcome(entries: final.entries, moved: moved)
    }

}

/// Whether the file's bytes at `offset` equal `bytes`: compared through a shared mapping of those
/// pages (no copy: the page cache pages themselves), or read into `back` when mapping fails.
private func fileHolds(_ bytes: UnsafeRawBufferPointer, fd: Int32, at offset: Int, back: UnsafeMutableRawBufferPointer,
                       file: String, place: String) throws -> Bool {
    if bytes.isEmpty { return true }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = offset / page * page
    let length = offset + bytes.count - start
    if let map = mmap(nil, length, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, off_t(start)), map != MAP_FAILED {
        defer { munmap(map, length) }
        return memcmp(map + (offset - start), bytes.baseAddress!, bytes.count) == 0
    }
    let readBack = UnsafeMutableRawBufferPointer(rebasing: back[0 ..< bytes.count])
    try preadFully(fd, readBack, at: offset, file: file, place: place)
    return memcmp(readBack.baseAddress!, bytes.baseAddress!, bytes.count) == 0
}

/// Fills tensor i+1 on its own thread while tensor i is written and read back: reading and
/// rearranging a tensor costs about as much as writing it, so the two overlap on the two cores.
/// Two buffers alternate; `take(i)` waits for tensor i (or rethrows its fill error), `release(i)`
/// hands its buffer back, `stop()` ends the thread and waits for it (always call it, also on failure).
private final class Prefetcher: @unchecked Sendable {
    private let counts: [Int]
    private let buffers: [UnsafeMutableBufferPointer<Float>]
    private var fill: ((Int, UnsafeMutableBufferPointer<Float>) throws -> Void)?
    private let ready = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
    // Created at 0 and signalled once: libdispatch traps when a semaphore is freed below its initial value.
    private let free = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
    private let finished = DispatchSemaphore(value: 0)
    private var failures: [Error?] = [nil, nil]   // guarded by `lock` (the slots share one array)
    private var cancelled = false
    private let lock = NSLock()
    private var stopped = false

    init(counts: [Int], largest: Int, fill: @escaping (Int, UnsafeMutableBufferPointer<Float>) throws -> Void) {
        self.counts = counts
        self.fill = fill
        buffers = (0 ..< 2).map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: max(largest, 1)) }
        free[0].signal(); free[1].signal()
        let thread = Thread { [self] in run() }
        thread.start()
    }

    private func run() {
        for i in counts.indices {
            let slot = i % 2
            free[slot].wait()
            lock.lock(); let stop = cancelled; lock.unlock()
            if stop { break }
            do {
                try fill!(i, UnsafeMutableBufferPointer(rebasing: buffers[slot][0 ..< counts[i]]))
            } catch {
                // Under the lock: `take` may be reading the other slot's entry of the same array.
                lock.lock(); failures[slot] = error; lock.unlock()
                ready[slot].signal()
                break
            }
            ready[slot].signal()
        }
        // Drop the caller's closure before saying so: it must not outlive the write call.
        fill = nil
        finished.signal()
    }

    func take(_ i: Int) throws -> UnsafeMutableBufferPointer<Float> {
        let slot = i % 2
        ready[slot].wait()
        lock.lock(); let failure = failures[slot]; lock.unlock()
        if let failure { throw failure }
        return UnsafeMutableBufferPointer(rebasing: buffers[slot][0 ..< counts[i]])
    }

    func release(_ i: Int) { free[i % 2].signal() }

    func stop() {
        guard !stopped else { return }
        stopped = true
        lock.lock(); cancelled = true; lock.unlock()
        free[0].signal(); free[1].signal()
        finished.wait()
        for b in buffers { b.deallocate() }
    }
}

/// Positioned writes with the OS error in every failure; `failAfter` injects a failure once that
/// many bytes were written (tests of the no-output-on-failure rule).
private struct PositionalSink {
    let fd: Int32
    let file: String
    let failAfter: Int?
    private(set) var written = 0

    init(fd: Int32, file: String, failAfter: Int?) {
        self.fd = fd; self.file = file; self.failAfter = failAfter
    }

    mutating func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            var chunk = min(bytes.count - done, 1 << 24)
            if let limit = failAfter {
                if written >= limit {
                    throw ResNetError.io(file: file, reason: "write failed: injected failure after \(limit) bytes")
                }
                chunk = min(chunk, limit - written)
            }
            let n = pwrite(fd, bytes.baseAddress! + done, chunk, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ResNetError.io(file: file, reason: "write failed at byte \(offset + done): \(errnoText())")
            }
            done += n
            written += n
        }
    }

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
