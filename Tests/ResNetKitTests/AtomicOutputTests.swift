import Foundation
import Testing
@testable import ResNetKit

/// The one helper every output goes through: nothing appears before commit, nothing is left after
/// a discard, names up to NAME_MAX work, a replaced file keeps its mode. Each test runs with the
/// unnamed (O_TMPFILE) path and with the named fallback, which the signal handler cleans up.
@Suite(.serialized) struct AtomicOutputTests {
    static let strategies: [AtomicOutput.Strategy] = [.unnamed, .named]

    /// Runs `body` with `strategy` selected; the suite is serialized, so no other test of it sees it.
    func with<T>(_ strategy: AtomicOutput.Strategy, _ body: () throws -> T) rethrows -> T {
        let saved = AtomicOutput.strategy
        AtomicOutput.strategy = strategy
        defer { AtomicOutput.strategy = saved }
        return try body()
    }

    func listing(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    @Test("nothing appears before commit; after it only the destination", arguments: strategies)
    func commitPutsOnlyTheDestinationInPlace(strategy: AtomicOutput.Strategy) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.bin").path
        try with(strategy) {
            let out = try AtomicOutput(destination: target)
            #expect(out.unnamed == (strategy == .unnamed), "tmpfs and ext4 support O_TMPFILE")
            try out.write(Data("hello".utf8))
            // The unfinished file reads back through its path before it has a name.
            #expect(try Data(contentsOf: URL(fileURLWithPath: out.path)) == Data("hello".utf8))
            #expect(try listing(dir) == (strategy == .unnamed ? [] : [URL(fileURLWithPath: out.path).lastPathComponent]))
            try out.commit()
            #expect(try listing(dir) == ["out.bin"])
            #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("hello".utf8))
        }
    }

    /// Without replacing: an existing destination is refused when the output is opened, and one
    /// that appears before the commit is left alone (the commit links, which fails on a name).
    @Test("an output that may not replace refuses an existing name, at open and at commit", arguments: strategies)
    func withoutReplacingNothingIsReplaced(strategy: AtomicOutput.Strategy) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.bin").path
        try with(strategy) {
            try AtomicOutput.$replacesExisting.withValue(false) {
                // A new name is written as usual.
                let fresh = try AtomicOutput(destination: target)
                try fresh.write(Data("first".utf8))
                try fresh.commit()
                #expect(try listing(dir) == ["out.bin"])
                // Now it exists: refused at once.
                #expect(throws: ResNetError.self) { _ = try AtomicOutput(destination: target) }
                // A name that appears while the output is written is not replaced either.
                let other = dir.appendingPathComponent("late.bin").path
                let late = try AtomicOutput(destination: other)
                try late.write(Data("mine".utf8))
                try Data("theirs".utf8).write(to: URL(fileURLWithPath: other))
                #expect(throws: ResNetError.self) { try late.commit() }
                late.discard()
                #expect(try Data(contentsOf: URL(fileURLWithPath: other)) == Data("theirs".utf8))
                #expect(try listing(dir) == ["late.bin", "out.bin"])
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("first".utf8))
        }
    }

    @Test("a discarded output leaves the old file and nothing else", arguments: strategies)
    func discardLeavesTheOldFile(strategy: AtomicOutput.Strategy) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.bin").path
        try Data("old".utf8).write(to: URL(fileURLWithPath: target))
        try with(strategy) {
            let out = try AtomicOutput(destination: target)
            try out.write(Data("new, unfinished".utf8))
            out.discard()
            #expect(try listing(dir) == ["out.bin"])
            #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("old".utf8))
        }
    }

    @Test("an output name of NAME_MAX (255) bytes works", arguments: strategies)
    func longestNameWorks(strategy: AtomicOutput.Strategy) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let name = String(repeating: "n", count: 251) + ".rnw"
        #expect(name.utf8.count == 255)
        let target = dir.appendingPathComponent(name).path
        try with(strategy) {
            try AtomicOutput.write(Data("x".utf8), to: target)   // a new file
            try AtomicOutput.write(Data("y".utf8), to: target)   // and a replaced one
        }
        #expect(try listing(dir) == [name])
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("y".utf8))
    }

    @Test("a replaced file keeps its mode; a new one gets 0666 & ~umask", arguments: strategies)
    func permissions(strategy: AtomicOutput.Strategy) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func mode(_ path: String) -> mode_t {
            var st = stat()
            _ = stat(path, &st)
            return st.st_mode & 0o7777
        }
        let replaced = dir.appendingPathComponent("kept.bin").path
        try Data("old".utf8).write(to: URL(fileURLWithPath: replaced))
        chmod(replaced, 0o640)
        let fresh = dir.appendingPathComponent("new.bin").path
        let mask = umask(0o022)
        umask(mask)
        try with(strategy) {
            try AtomicOutput.write(Data("new".utf8), to: replaced)
            try AtomicOutput.write(Data("new".utf8), to: fresh)
        }
        #expect(mode(replaced) == 0o640)
        #expect(mode(fresh) == 0o666 & ~mask)
    }

    @Test("a destination that is not a file name is refused before anything is created")
    func notAFileName() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for bad in [dir.path + "/", dir.path + "/.", dir.path + "/.."] {
            #expect(throws: ResNetError.self) { try AtomicOutput(destination: bad) }
        }
        #expect(try listing(dir) == [])
    }
}
