import Foundation
import Testing
@testable import ResNetKit

/// The child process that runs libhdf5 on untrusted files (Sources/CHDF5/sandbox.h).
@Suite struct HDF5SandboxTests {
    static let good = Paths.fixtures.appendingPathComponent("keras/kapp-resnet-v1/tfkeras2.model.h5").path

    /// Each forbidden call, tried by a child under the reader's filter: exec, a socket and an
    /// executable mapping kill it (SIGSYS); opening a file for writing and writing to any
    /// descriptor but its own socket fail with an error, and nothing is created.
    @Test func theFilterRefusesWhatTheReaderNeverDoes() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("written").path
        #expect(HDF5Sandbox.selfTest(0, path: target) == 1000, "the allowed write to its own socket")
        #expect(HDF5Sandbox.selfTest(1, path: target) == SIGSYS, "execve")
        #expect(HDF5Sandbox.selfTest(2, path: target) == 1000, "open for writing must fail")
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(HDF5Sandbox.selfTest(3, path: target) == SIGSYS, "socket")
        #expect(HDF5Sandbox.selfTest(4, path: target) == 1000, "write to stderr must fail")
        #expect(HDF5Sandbox.selfTest(5, path: target) == SIGSYS, "executable mapping")
    }

    /// The child that serves a file runs under the filter (in addition to the kernel's own view:
    /// `Seccomp: 2`) and with an address-space and a CPU-time limit.
    @Test func theReaderChildIsConfinedAndLimited() throws {
        let h5 = try HDF5File(path: Self.good)
        let pid = h5.sandbox.processID
        #expect(pid > 0)
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        #expect(status.split(separator: "\n").contains { $0.hasPrefix("Seccomp:") && $0.hasSuffix("2") }, "\(status)")
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8).split(separator: "\n")
        for name in ["Max address space", "Max cpu time"] {
            let line = try #require(limits.first { $0.hasPrefix(name) })
            #expect(!line.contains("unlimited"), "\(line)")
        }
        // And it still answers.
        #expect(try h5.kind(at: "/model_weights") == .group)
    }

    /// A child that dies while serving a request (here killed from outside with the signal a
    /// libhdf5 crash sends) refuses the file with exit 3, naming it and the signal; every later
    /// request gives the same refusal.
    @Test(arguments: [(SIGSEGV, "libhdf5 crashed with signal 11, SIGSEGV"), (SIGXCPU, "CPU-time limit"),
                      (SIGKILL, "was killed (SIGKILL")])
    func aChildThatDiesRefusesTheFile(signal: Int32, mention: String) throws {
        let h5 = try HDF5File(path: Self.good)
        let layers = try h5.members(of: "/model_weights")
        #expect(!layers.isEmpty)
        kill(h5.sandbox.processID, signal)
        for _ in 0 ..< 2 {
            #expect {
                _ = try h5.members(of: "/model_weights")
            } throws: { error in
                guard let e = error as? ResNetError else { return false }
                return e.exitCode == 3 && e.description.contains(Self.good) && e.description.contains(mention)
            }
        }
    }

    /// A child that stops answering (here stopped with SIGSTOP, and a short timeout standing in for
    /// the real one, its CPU allowance + 10 s) is killed and the file refused with exit 3.
    @Test func aChildThatStopsAnsweringRefusesTheFile() throws {
        let h5 = try HDF5File(path: Self.good)
        h5.sandbox.requestTimeoutMilliseconds = 200
        let pid = h5.sandbox.processID
        kill(pid, SIGSTOP)
        #expect {
            _ = try h5.members(of: "/model_weights")
        } throws: { error in
            guard let e = error as? ResNetError else { return false }
            return e.exitCode == 3 && e.description.contains("did not answer within 0.2 s") && e.description.contains("stopped")
        }
        #expect(kill(pid, 0) != 0, "the stopped child was killed and reaped")
    }

    /// Answers are bounds-checked like file input: a length past the payload, a count over its
    /// limit or bytes left over refuse the file instead of being trusted.
    @Test func aMalformedAnswerIsRefused() throws {
        func answer(_ bytes: [UInt8]) -> HDF5Answer { HDF5Answer(status: 0, bytes: bytes, file: "x.h5", place: "/p") }
        var a = answer([5, 0, 0, 0, 0x41])
        #expect(throws: ResNetError.self) { _ = try a.string() }   // 5 bytes claimed, 1 there
        a = answer([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
        #expect(throws: ResNetError.self) { _ = try a.count(max: 1_000_000, what: "member count") }
        a = answer([1, 0, 0, 0, 0x41, 0])
        #expect(try a.string() == "A")
        #expect(throws: ResNetError.self) { try a.finish() }   // one byte left over
        do {
            var b = answer([2, 0, 0, 0])
            _ = try b.u64()
            Issue.record("a short answer was read")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3 && e.description.contains("x.h5") && e.description.contains("malformed answer"))
        }
    }

    /// Values come back through the child exactly as the file holds them (float32 read by libhdf5
    /// in the child, then checked against the shape the parent expects).
    @Test func datasetsReadThroughTheChildMatchTheirShape() throws {
        let h5 = try HDF5File(path: Self.good)
        let group = try #require(try HDF5Group.open(h5, path: "/model_weights"))
        let names = try h5.members(of: "/model_weights")
        var read = 0
        for layer in names {
            guard let sub = try group.group(layer) else { continue }
            for member in try h5.members(of: sub.path) where try sub.kind(of: member) == .group {
                guard let inner = try sub.group(member) else { continue }
                for v in try h5.members(of: inner.path) {
                    if let t = try inner.readTensorIfDataset(at: v) {
                        #expect(t.tensor.count == t.tensor.shape.reduce(1, *))
                        read += 1
                    }
                }
            }
        }
        #expect(read > 100)
    }
}

/// `fixtures/bad/external-storage.h5` keeps its first kernel's values in another file (HDF5
/// external storage; `tools/make_bad_fixtures.py`). The reader refuses it by name, and even when
/// asked directly the child cannot open that file: opens are refused once the input is open.
/// `h5dump`, given the same directory, reads the values: the file and its companion are sound.
@Suite(.serialized) struct HDF5ExternalStorageTests {
    static let dir = Paths.fixtures.appendingPathComponent("bad").path
    static let file = dir + "/external-storage.h5"
    static let kernel = "/model_weights/stem_conv/stem_conv/kernel:0"

    @Test func theChildCannotOpenTheOtherFile() throws {
        setenv("HDF5_EXTFILE_PREFIX", Self.dir, 1)
        defer { unsetenv("HDF5_EXTFILE_PREFIX") }
        let h5 = try HDF5File(path: Self.file)
        #expect {
            _ = try h5.readTensor(at: Self.kernel)
        } throws: { error in
            (error as? ResNetError)?.description.contains("HDF5 external storage") == true
        }
        var values = [Float](repeating: 0, count: 3 * 3 * 3 * 4)
        #expect {
            try values.withUnsafeMutableBufferPointer { try h5.readFloats(handle: -1, Self.kernel, into: $0) }
        } throws: { error in
            guard let e = error as? ResNetError else { return false }
            return e.exitCode == 3 && e.description.contains("unable to open external raw data file")
        }
        #expect(values.allSatisfy { $0 == 0 })
    }

    @Test func h5dumpReadsTheValues() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/h5dump") else {
            print("SKIPPED: h5dump not installed")
            return
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/h5dump")
        p.arguments = ["-d", Self.kernel, Self.file]
        var environment = ProcessInfo.processInfo.environment
        environment["HDF5_EXTFILE_PREFIX"] = Self.dir
        p.environment = environment
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(text.contains("DATA {") && text.contains("(0,0,0,0):"), "\(text)")
    }
}
