import CLinuxIO
import Foundation

/// An output file that appears under its name complete, or not at all: every file this tool
/// writes (`convert`, the streaming writer, `export` in every format, HTML reports) goes through it.
///
/// Where the file system supports it the data goes to an unnamed file (`O_TMPFILE`) in the
/// destination's directory. It has no name while it is written, so nothing is left behind however
/// the process ends, SIGKILL and power loss included. ``commit()`` flushes it, links it under a
/// short temporary name and renames that over the destination (a new destination is linked
/// directly). Readers that need a path (read-back checks, libhdf5) open it as `/proc/self/fd/N`.
///
/// Elsewhere (no `O_TMPFILE`, no `/proc`) the data goes to a named temporary file beside the
/// destination, registered with the handler ``Interruption/install(activity:)`` installs, which
/// removes it on SIGINT, SIGTERM and SIGHUP. Only SIGKILL (or a crash) can leave that one behind.
///
/// A replaced destination keeps its permission bits; a new one gets `0666 & ~umask`. Temporary
/// names are short (`.resnet-convert-XXXXXXXXXX.tmp`), so a destination name of any length the
/// file system allows works.
public final class AtomicOutput {
    /// The file that appears on ``commit()``.
    public let destination: String
    /// Descriptor of the unfinished file, open for reading and writing.
    let fd: Int32
    /// A path the unfinished file can be opened by (`/proc/self/fd/N`, or the temporary name).
    let path: String
    /// True when the unfinished file has no name (`O_TMPFILE`).
    let unnamed: Bool
    private let directory: String
    /// The named fallback: its temporary path and cleanup slot.
    private var temporary: String?
    private var slot: Int32 = -1
    private var finished = false
    /// Permission bits of the file being replaced.
    private let keptMode: mode_t?
    /// False when nothing is at the destination (it is then linked there directly).
    private let destinationExisted: Bool
    /// False when an existing destination must be left alone (``replacesExisting``).
    private let replaces: Bool

    /// Whether outputs created in this scope may replace an existing file (the default). Without,
    /// an existing destination is refused when the output is opened, and the commit links the file
    /// under its name, which fails rather than replaces should the name appear meanwhile.
    @TaskLocal static var replacesExisting = true

    /// Where the next outputs go: `.unnamed` uses `O_TMPFILE` when available, `.named` always the
    /// fallback. `RESNET_CONVERT_NAMED_TEMP=1` in the environment selects the fallback, so tests
    /// and tools/signal_sweep.py can prove the signal handler's cleanup on any file system.
    enum Strategy { case unnamed, named }
    nonisolated(unsafe) static var strategy: Strategy =
        ProcessInfo.processInfo.environment["RESNET_CONVERT_NAMED_TEMP"] == "1" ? .named : .unnamed

    /// Opens the unfinished file in `destination`'s directory.
    /// - Throws: ``ResNetError/io(file:reason:)`` when the destination is not a file name or no
    ///   file can be created in its directory.
    public init(destination: String) throws {
        self.destination = destination
        let (dir, base) = AtomicOutput.split(destination)
        guard !base.isEmpty, base != ".", base != ".." else {
            throw ResNetError.io(file: destination, reason: "destination is not a file name")
        }
        directory = dir
        var st = stat()
        destinationExisted = lstat(destination, &st) == 0
        replaces = AtomicOutput.replacesExisting
        if destinationExisted && !replaces {
            throw ResNetError.io(file: destination, reason: AtomicOutput.existsReason)
        }
        if stat(destination, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG {
            keptMode = st.st_mode & 0o7777
        } else {
            keptMode = nil
        }

        if AtomicOutput.strategy == .unnamed {
            let u = clinuxio_open_unnamed(dir, 0o666)
            if u >= 0 {
                let proc = "/proc/self/fd/\(u)"
                if access(proc, F_OK) == 0 {
                    fd = u; path = proc; unnamed = true
                    return
                }
                close(u)   // no /proc: the file could never be given a name
            }
        }
        // Created with the three signals blocked in this thread and the slot in state 2, so a
        // handler on another thread cannot run between the creation and the registration.
        clinuxio_block_interrupts(1)
        defer { clinuxio_block_interrupts(0) }
        var lastError: Int32 = 0
        for _ in 0..<16 {
            let candidate = AtomicOutput.temporaryName(in: dir)
            let s = clinuxio_cleanup_register(candidate, 2)
            let f = open(candidate, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            if f >= 0 {
                clinuxio_cleanup_set_state(s, 1)
                fd = f; path = candidate; unnamed = false; temporary = candidate; slot = s
                return
            }
            lastError = errno
            clinuxio_cleanup_set_state(s, 0)
            if lastError != EEXIST { break }
        }
        throw ResNetError.io(file: destination, reason: "cannot create a temporary file in \(dir): \(errnoText(lastError))")
    }

    deinit { discard() }

    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ResNetError.io(file: destination, reason: "write failed at byte \(offset + done): \(errnoText())")
            }
            done += n
        }
    }

    /// Writes `data` at the start of the (empty) file.
    func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0, at: 0) }
    }

    /// Flushes the file to disk and puts it in place; afterwards the destination holds it.
    public func commit() throws {
        precondition(!finished, "AtomicOutput committed or discarded already")
        // The mode first, so the fsync makes it durable with the data.
        if let keptMode, fchmod(fd, keptMode) != 0 {
            throw ResNetError.io(file: destination, reason: "cannot keep the replaced file's permissions: \(errnoText())")
        }
        guard fsync(fd) == 0 else { throw ResNetError.io(file: destination, reason: "fsync failed: \(errnoText())") }
        // The link and rename run with the signals blocked in this thread; a handler on another
        // thread waits for them (slot state 2), then reports whether the output was written.
        clinuxio_block_interrupts(1)
        defer { clinuxio_block_interrupts(0) }
        if !replaces {
            try linkWithoutReplacing()
            return
        }
        if unnamed {
            if !destinationExisted {
                // A slot without a path makes a handler on another thread wait for the link too,
                // so its message cannot say "nothing was written" once the file is there.
                let s = clinuxio_cleanup_register("", 2)
                AtomicOutput.holdIfInterrupted(s, restoring: 0)
                if linkat(AT_FDCWD, path, AT_FDCWD, destination, AT_SYMLINK_FOLLOW) == 0 {
                    clinuxio_mark_written()
                    clinuxio_cleanup_set_state(s, 0)
                    finish()
                    return
                }
                clinuxio_cleanup_set_state(s, 0)
            }
            var lastError: Int32 = 0
            for _ in 0..<16 {
                let candidate = AtomicOutput.temporaryName(in: directory)
                let s = clinuxio_cleanup_register(candidate, 2)
                AtomicOutput.holdIfInterrupted(s, restoring: 0)
                if linkat(AT_FDCWD, path, AT_FDCWD, candidate, AT_SYMLINK_FOLLOW) == 0 {
                    temporary = candidate; slot = s
                    break
                }
                lastError = errno
                clinuxio_cleanup_set_state(s, 0)
                if lastError != EEXIST { break }
            }
            guard temporary != nil else {
                throw ResNetError.io(file: destination, reason: "cannot link the written file into \(directory): \(errnoText(lastError))")
            }
        } else {
            clinuxio_cleanup_set_state(slot, 2)
            AtomicOutput.holdIfInterrupted(slot, restoring: 1)
        }
        guard rename(temporary!, destination) == 0 else {
            let reason = errnoText()
            clinuxio_cleanup_set_state(slot, 1)   // discard() removes it
            throw ResNetError.io(file: destination, reason: "cannot replace destination: \(reason)")
        }
        clinuxio_mark_written()
        clinuxio_cleanup_set_state(slot, 0)
        temporary = nil
        finish()
    }

    static let existsReason = "the output exists already and replacing it was not allowed (--no-clobber)"

    /// The commit when the destination must not be replaced: a link fails on an existing name
    /// where a rename would replace it. Runs with the signals blocked, like ``commit()``.
    private func linkWithoutReplacing() throws {
        let s = unnamed ? clinuxio_cleanup_register("", 2) : slot
        if !unnamed { clinuxio_cleanup_set_state(slot, 2) }
        AtomicOutput.holdIfInterrupted(s, restoring: unnamed ? 0 : 1)
        if linkat(AT_FDCWD, unnamed ? path : temporary!, AT_FDCWD, destination, unnamed ? AT_SYMLINK_FOLLOW : 0) != 0 {
            let code = errno
            clinuxio_cleanup_set_state(s, unnamed ? 0 : 1)   // discard() removes a named temporary
            throw ResNetError.io(file: destination, reason: code == EEXIST ? AtomicOutput.existsReason : "cannot link the written file: \(errnoText(code))")
        }
        clinuxio_mark_written()
        if !unnamed {
            unlink(temporary!)
            temporary = nil
        }
        clinuxio_cleanup_set_state(s, 0)
        finish()
    }

    /// Called with `slot` just set to 2 (the signals blocked in this thread): when a handler has
    /// begun meanwhile on another thread, it may have passed the slot already, so nothing may be
    /// linked or renamed. The slot goes back to `state` (1: the handler removes the named file)
    /// and this thread waits for the handler to end the process.
    private static func holdIfInterrupted(_ slot: Int32, restoring state: Int32) {
        guard clinuxio_interrupt_begun() != 0 else { return }
        clinuxio_cleanup_set_state(slot, state)
        while true { pause() }
    }

    /// Closes the file and makes the new directory entry durable. The file is complete and in
    /// place already, so a failed directory fsync is not reported: it could only turn a
    /// successful write into a false error.
    private func finish() {
        finished = true
        close(fd)
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 { _ = fsync(dirFD); close(dirFD) }
    }

    /// Drops the unfinished file; the destination is untouched. Called by `deinit` too.
    public func discard() {
        guard !finished else { return }
        finished = true
        close(fd)
        if let temporary { unlink(temporary) }
        clinuxio_cleanup_set_state(slot, 0)
        temporary = nil
    }

    /// Writes `data` to `path` atomically.
    public static func write(_ data: Data, to path: String) throws {
        let out = try AtomicOutput(destination: path)
        try out.write(data)
        try out.commit()
    }

    /// Splits a path into its directory (`.` when none) and last component.
    static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    /// A short hidden name in `directory`; random, so concurrent writers do not collide.
    private static func temporaryName(in directory: String) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        let tag = String((0..<10).map { _ in alphabet.randomElement()! })
        return (directory == "/" ? "" : directory) + "/.resnet-convert-\(tag).tmp"
    }
}

/// What the CLI does on SIGINT, SIGTERM and SIGHUP while it works.
public enum Interruption {
    /// Installs the handler (once per process; later calls only change `activity`). On one of the
    /// three signals it removes the named temporary files of unfinished ``AtomicOutput``s, prints
    /// `interrupted: <activity> stopped; nothing was written` (or, when an output was already put
    /// in place, that it was written), and ends the process by the same signal, so the shell sees
    /// 130 for SIGINT and 143 for SIGTERM. Signals the parent ignored (`nohup`) stay ignored.
    public static func install(activity: String) {
        clinuxio_interrupt_set_activity(activity)
        _ = installed
    }

    private static let installed: Bool = clinuxio_interrupt_install() == 0
}

/// Writes `bytes` as the whole content of the file at `path` (created or truncated; for the
/// unfinished file of an ``AtomicOutput``, its `path`). Errors name `display`.
func writeWholeFile(_ bytes: UnsafeRawBufferPointer, to path: String, display: String) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666)
    guard fd >= 0 else { throw ResNetError.io(file: display, reason: "cannot open for writing: \(errnoText())") }
    var done = 0
    while done < bytes.count {
        let n = write(fd, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
        if n < 0 {
            if errno == EINTR { continue }
            let reason = errnoText()
            close(fd)
            throw ResNetError.io(file: display, reason: "write failed at byte \(done): \(reason)")
        }
        done += n
    }
    guard close(fd) == 0 else { throw ResNetError.io(file: display, reason: "close failed: \(errnoText())") }
}

/// ``writeWholeFile(_:to:display:)`` for `Data`.
func writeWholeFile(_ data: Data, to path: String, display: String) throws {
    try data.withUnsafeBytes { try writeWholeFile($0, to: path, display: display) }
}

/// The whole content of the file at `path`; errors name `display`.
func readWholeFile(_ path: String, display: String) throws -> Data {
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw ResNetError.io(file: display, reason: "cannot read the written file back: \(error.localizedDescription)")
    }
}
