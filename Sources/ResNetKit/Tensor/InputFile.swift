import Foundation

/// Opening the files the tool reads (weights, goldens, naming tables): only regular files.
///
/// A FIFO would block `open` and every read until a writer appears (the tool hung), a directory
/// reads as nothing and was reported as a wrong format, a device can be endless. Each input is
/// therefore opened non-blocking, so that opening a FIFO returns at once, and refused by kind
/// unless `fstat` says it is a regular file. Readers that hand a path to a library (libhdf5,
/// ZIPFoundation) call ``requireRegular(_:)`` first.
enum InputFile {
    /// A read-only descriptor of the regular file at `path`, in blocking mode; the caller closes it.
    static func open(_ path: String) throws -> Int32 {
        let fd = Foundation.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else {
            let e = errno
            // A socket cannot be opened at all (ENXIO): say what it is rather than why open failed.
            var st = stat()
            if e != ENOENT, stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
                throw ResNetError.invalidInput(file: path, place: "", reason: "\(kind(st.st_mode)), not a regular file")
            }
            throw ResNetError.io(file: path, reason: e == ENOENT ? "no such file" : "cannot open: \(String(cString: strerror(e)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw ResNetError.io(file: path, reason: "cannot stat: \(String(cString: strerror(e)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw ResNetError.invalidInput(file: path, place: "", reason: "\(kind(st.st_mode)), not a regular file")
        }
        // Regular files never block; the flag only mattered for the open itself.
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        return fd
    }

    /// Throws unless `path` is a regular file that can be opened for reading.
    static func requireRegular(_ path: String) throws {
        close(try open(path))
    }

    /// The whole file at `path`, which must be regular; `limit` bounds what is read (the size is
    /// taken from `fstat`, and a file that grows past it while being read is refused).
    static func contents(_ path: String, limit: Int = Int.max, tooLarge: (Int) -> ResNetError) throws -> Data {
        let fd = try open(path)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ResNetError.io(file: path, reason: "cannot stat: \(String(cString: strerror(errno)))") }
        let size = Int(st.st_size)
        guard size <= limit else { throw tooLarge(size) }
        var data = Data(count: size)
        var done = 0
        while done < size {
            let n = data.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw ResNetError.io(file: path, reason: "read failed at byte \(done): \(String(cString: strerror(errno)))") }
            if n == 0 { data.count = done; break }   // shrank while being read: what is there is checked like any input
            done += n
        }
        return data
    }

    /// What a non-regular file is, for the refusal.
    static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "is a directory"
        case S_IFIFO: return "is a FIFO"
        case S_IFCHR: return "is a character device"
        case S_IFBLK: return "is a block device"
        case S_IFSOCK: return "is a socket"
        default: return "is not a regular file (mode \(String(mode, radix: 8)))"
        }
    }
}
