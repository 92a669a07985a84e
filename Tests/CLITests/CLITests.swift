import Foundation
import Testing

/// Runs the built `resnet-convert` binary end to end: exit codes, outputs, and that a failed run
/// leaves no output file.
@Suite struct CLITests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("fixtures")
    static let external = root.deletingLastPathComponent().appendingPathComponent("shared/fixtures-external")

    /// The executable SwiftPM built next to the test bundle.
    static var binary: URL {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("resnet-convert")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return root.appendingPathComponent(".build/debug/resnet-convert")
    }

    struct Run { var code: Int32; var stdout: String; var stderr: String }

    static func run(_ args: [String]) throws -> Run {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(code: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    static func tempDir() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("cli-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func externalPath(_ rel: String) -> String? {
        let p = external.appendingPathComponent(rel).path
        if FileManager.default.fileExists(atPath: p) { return p }
        print("SKIPPED: \(rel) not found under ../shared/fixtures-external")
        return nil
    }

    @Test func binaryExists() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary.path), "build the package first: swift build")
    }

    @Test func convertsAVerifiesAnExternalKerasFile() throws {
        guard let h5 = Self.externalPath("mlcommons-tiny/pretrainedResnet.h5"),
              let io = Self.externalPath("mlcommons-tiny/io.npz") else { return }
        let dir = try Self.tempDir()
        let out = dir.appendingPathComponent("tiny.rnw").path
        let r = try Self.run([h5, out, "--expect", io])
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: out))
        let v = try Self.run(["verify", out, "--expect", io, "--json"])
        #expect(v.code == 0, "\(v.stdout)\(v.stderr)")
        #expect(v.stdout.contains("\"passed\" : true"))
        // Goldens of another model: parity must fail with exit 1.
        if let other = Self.externalPath("leogem-keras-injector/io.npz") {
            let w = try Self.run(["verify", out, "--expect", other])
            #expect(w.code == 1, "\(w.stdout)\(w.stderr)")
        }
    }

    @Test func wrongGoldensRefuseTheConversionAndWriteNothing() throws {
        guard let h5 = Self.externalPath("mlcommons-tiny/pretrainedResnet.h5"),
              let io = Self.externalPath("leogem-keras-injector/io.npz") else { return }
        let dir = try Self.tempDir()
        let out = dir.appendingPathComponent("x.rnw").path
        let r = try Self.run([h5, out, "--expect", io])
        #expect(r.code == 1, "\(r.stdout)\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "no temporary file may be left")
    }

    static let badFiles: [(String, String)] = [
        ("not-hdf5.h5", "not"),
        ("truncated.h5", ""),
        ("missing-dataset.h5", "kernel"),
        ("shape-mismatch.h5", "shape"),
        ("unknown-layer.h5", "GlobalMaxPooling2D"),
        ("bad-json.h5", "JSON"),
    ]

    @Test("bad input exits 3 with a clear error and no output", arguments: badFiles)
    func badInputIsRefused(name: String, mention: String) throws {
        let bad = Self.fixtures.appendingPathComponent("bad/\(name)").path
        try #require(FileManager.default.fileExists(atPath: bad), "missing fixture \(bad)")
        let dir = try Self.tempDir()
        let out = dir.appendingPathComponent("out.rnw").path
        let r = try Self.run([bad, out])
        #expect(r.code == 3, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains(name), "the error must name the file: \(r.stderr)")
        if !mention.isEmpty { #expect(r.stderr.lowercased().contains(mention.lowercased()), "\(r.stderr)") }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func missingInputIsAnIOError() throws {
        let dir = try Self.tempDir()
        let r = try Self.run([dir.appendingPathComponent("nope.h5").path, dir.appendingPathComponent("o.rnw").path])
        #expect(r.code == 4, "\(r.stderr)")
    }

    @Test func usageErrorsExit2() throws {
        let r = try Self.run(["verify"])
        #expect(r.code == 2, "\(r.stderr)")
        let s = try Self.run(["in.h5", "out.txt"])
        #expect(s.code == 2, "\(s.stderr)")
    }

    @Test func listPresetsNamesTheKerasPresets() throws {
        let r = try Self.run(["inspect", "--list-presets"])
        #expect(r.code == 0)
        for p in ["keras-resnet50", "keras-resnet101", "keras-resnet152", "keras-resnet50v2", "keras-resnet101v2", "keras-resnet152v2", "seed-keras"] {
            #expect(r.stdout.contains(p))
        }
    }
}
