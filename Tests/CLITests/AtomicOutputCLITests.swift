import Foundation
import Testing
@testable import ResNetKit

/// Outputs appear complete or not at all, whatever happens: SIGINT/SIGTERM during a conversion,
/// a full file system during an export, an output name of NAME_MAX bytes; a replaced output keeps
/// its permissions. tools/signal_sweep.py does the same at random moments on a full-size model.
@Suite struct AtomicOutputCLITests {
    static let torchInput = CLITests.fixtures.appendingPathComponent("torch/tv-resnet50-mini/tv-resnet50-mini.pth").path
    static let rnwInput = CLITests.fixtures.appendingPathComponent("rnw/seed-keras.v1.0.f32.rnw").path

    func listing(_ dir: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    }

    func mode(_ path: String) -> mode_t {
        var st = stat()
        _ = stat(path, &st)
        return st.st_mode & 0o7777
    }

    /// Runs `script` with `/bin/sh -c` (limits, umask, signal dispositions for the child).
    func shell(_ script: String, _ args: [String], environment: [String: String] = [:]) throws -> CLITests.Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script, "sh"] + args
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        // A child killed by a signal is reported by the shell as 128 + the signal.
        return CLITests.Run(code: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    @Test("SIGINT or SIGTERM during a conversion: one line, the signal's exit, the old output intact, nothing else",
          arguments: [(SIGINT, false), (SIGTERM, false), (SIGINT, true), (SIGTERM, true)], ["unnamed", "named"])
    func signalDuringConversion(signal: (Int32, Bool), temporary: String) throws {
        let (sig, streaming) = signal
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.rnw")
        let old = try Data(contentsOf: URL(fileURLWithPath: Self.rnwInput))
        try old.write(to: target)

        let p = Process()
        p.executableURL = CLITests.binary
        p.arguments = ["convert", Self.torchInput, target.path] + (streaming ? ["--no-verify"] : [])
        if temporary == "named" {
            p.environment = ProcessInfo.processInfo.environment.merging(["RESNET_CONVERT_NAMED_TEMP": "1"]) { $1 }
        }
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        // Not timed: wait until the child has its input open (its handler is installed by then),
        // or has finished, then signal it.
        let fds = "/proc/\(p.processIdentifier)/fd"
        while p.isRunning {
            let open = (try? FileManager.default.contentsOfDirectory(atPath: fds)) ?? []
            let targets = open.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(fds)/\($0)") }
            if targets.contains(where: { $0 == Self.torchInput || $0.hasPrefix(dir.path + "/") }) { break }
            usleep(100)
        }
        kill(p.processIdentifier, sig)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()

        #expect(try listing(dir) == ["out.rnw"], "no temporary file may be left")
        let lines = stderr.split(separator: "\n").filter { $0.hasPrefix("interrupted: ") }
        if p.terminationReason == .uncaughtSignal && lines == ["interrupted: conversion to \(target.path) stopped; nothing was written"] {
            #expect(p.terminationStatus == sig)
            #expect(try Data(contentsOf: target) == old, "the old output must be intact")
        } else if p.terminationReason == .uncaughtSignal {
            // The signal came after the output was put in place: then the message says so.
            #expect(p.terminationStatus == sig)
            #expect(lines == ["interrupted: conversion to \(target.path) stopped after its output was written"], "stderr: \(stderr)")
            _ = try RNWReader(path: target.path).model()
        } else {
            // The conversion won the race: then the new output is complete.
            #expect(p.terminationStatus == 0, "stderr: \(stderr)")
            _ = try RNWReader(path: target.path).model()
        }
    }

    @Test("export to a full file system exits 4 without a crash and leaves nothing, for every format",
          arguments: ExportFormat.allCases, ["unnamed", "named"])
    func exportToAFullFileSystem(format: ExportFormat, temporary: String) throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out.\(format.rawValue)").path
        // A file size limit of 8 KB (every export of the fixture is larger) with SIGXFSZ ignored:
        // writes fail with EFBIG as they would with ENOSPC on a full disk.
        let r = try shell("ulimit -f 16 && trap '' XFSZ && exec \"$@\"", [CLITests.binary.path, "export", Self.rnwInput, target],
                          environment: temporary == "named" ? ["RESNET_CONVERT_NAMED_TEMP": "1"] : [:])
        #expect(r.code == 4, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("\(target): I/O error"), "stderr: \(r.stderr)")
        #expect(try listing(dir) == [])
    }

    @Test("an output name of 255 bytes (NAME_MAX) converts and exports")
    func longOutputName() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let rnw = dir.appendingPathComponent(String(repeating: "r", count: 251) + ".rnw").path
        let onnx = dir.appendingPathComponent(String(repeating: "o", count: 250) + ".onnx").path
        for args in [["convert", Self.rnwInput, rnw], ["convert", Self.rnwInput, rnw, "--no-verify"], ["export", Self.rnwInput, onnx]] {
            let r = try CLITests.run(args)
            #expect(r.code == 0, "\(args[0]): \(r.stderr)")
        }
        #expect(try listing(dir) == [URL(fileURLWithPath: onnx).lastPathComponent, URL(fileURLWithPath: rnw).lastPathComponent].sorted())
    }

    @Test("a replaced output keeps its permissions; a new one gets 0666 & ~umask")
    func permissionsAreKept() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let outputs = ["a.rnw", "b.rnw", "c.pth", "d.safetensors", "e.h5", "f.onnx"].map { dir.appendingPathComponent($0).path }
        for path in outputs {
            try Data("old".utf8).write(to: URL(fileURLWithPath: path))
            chmod(path, 0o604)
        }
        let commands = [["convert", Self.rnwInput, outputs[0]], ["convert", Self.rnwInput, outputs[1], "--no-verify"]]
            + outputs.dropFirst(2).map { ["export", Self.rnwInput, $0] }
        for args in commands {
            let r = try shell("umask 077 && exec \"$@\"", [CLITests.binary.path] + args)
            #expect(r.code == 0, "\(args): \(r.stderr)")
        }
        for path in outputs { #expect(mode(path) == 0o604, "\(path)") }
        let fresh = dir.appendingPathComponent("fresh.rnw").path
        let r = try shell("umask 027 && exec \"$@\"", [CLITests.binary.path, "convert", Self.rnwInput, fresh])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(mode(fresh) == 0o640)
    }
}
