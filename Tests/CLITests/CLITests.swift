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

    /// Runs the CLI; `environment` replaces the inherited one when given.
    static func run(_ args: [String], environment: [String: String]? = nil) throws -> Run {
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(code: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// One run of `executable` with a generous deadline: a run past it is killed and reported as
    /// a hang (durations are never asserted). Both streams go to files, so nothing blocks on a pipe
    /// while tests share a small thread pool.
    struct DeadlineRun {
        var exited: Bool
        var code: Int32
        var stdout: Data
        var stderr: Data
        var timedOut: Bool
    }

    static func runWithDeadline(_ executable: URL, _ args: [String], seconds: Double, in dir: URL? = nil) throws -> DeadlineRun {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("deadline-\(UUID().uuidString)")
        let outURL = base.appendingPathExtension("out"), errURL = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL); try? FileManager.default.removeItem(at: errURL) }
        let outHandle = try FileHandle(forWritingTo: outURL), errHandle = try FileHandle(forWritingTo: errURL)
        defer { try? outHandle.close(); try? errHandle.close() }
        let p = Process()
        p.executableURL = executable
        p.arguments = args
        if let dir { p.currentDirectoryURL = dir }
        p.standardOutput = outHandle
        p.standardError = errHandle
        try p.run()
        let deadline = Date().addingTimeInterval(seconds)
        var timedOut = false
        while p.isRunning {
            if Date() > deadline { timedOut = true; p.terminate(); break }
            usleep(20_000)
        }
        p.waitUntilExit()
        return DeadlineRun(exited: p.terminationReason == .exit, code: p.terminationStatus,
                           stdout: (try? Data(contentsOf: outURL)) ?? Data(), stderr: (try? Data(contentsOf: errURL)) ?? Data(), timedOut: timedOut)
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

    /// Broken Keras files made from `fixtures/bad/good.h5` by tools/make_bad_fixtures.py, one fault each.
    static let badFiles: [(String, String)] = [
        ("missing-dataset.h5", "missing"),
        ("shape-mismatch.h5", "config implies"),
        ("unknown-layer.h5", "GlobalMaxPooling2D"),
        ("bad-json.h5", "JSON"),
        ("external-link.h5", "external link"),
        ("lzf-kernel.h5", "HDF5 filter 32000"),
        ("external-storage.h5", "HDF5 external storage"),
    ]

    @Test("bad input exits 3 with a clear error and no output", arguments: badFiles)
    func badInputIsRefused(name: String, mention: String) throws {
        let bad = Self.fixtures.appendingPathComponent("bad/\(name)").path
        try #require(FileManager.default.fileExists(atPath: bad), "missing fixture \(bad)")
        try expectRefused(bad, mention: mention)
    }

    @Test func theUnbrokenBaseFileConverts() throws {
        let dir = try Self.tempDir()
        let out = dir.appendingPathComponent("good.rnw").path
        let r = try Self.run([Self.fixtures.appendingPathComponent("bad/good.h5").path, out])
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
    }

    /// A filter libhdf5 lacks is refused by name on the streamed path too (there the dataset is read
    /// through libhdf5 when its turn comes, after the output file was started).
    @Test func aMissingFilterIsRefusedWhenStreaming() throws {
        let bad = Self.fixtures.appendingPathComponent("bad/lzf-kernel.h5").path
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out.rnw").path
        let r = try Self.run([bad, out, "--no-verify"])
        #expect(r.code == 3, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("lzf-kernel.h5") && r.stderr.contains("HDF5 filter 32000") && r.stderr.contains("kernel:0"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "no output, no temporary file")
    }

    /// A filter plugin in HDF5_PLUGIN_PATH is never loaded: the plugin's constructor would leave a
    /// marker file. h5dump, with the same environment, is the control showing that libhdf5 would
    /// load it (run when h5dump is installed).
    @Test func filterPluginsAreNeverLoaded() throws {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        func tool(_ name: String) -> String? {
            path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        }
        guard let clang = tool("clang") ?? tool("cc") else {
            print("SKIPPED filterPluginsAreNeverLoaded: no C compiler on PATH to build the plugin")
            return
        }
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugins = dir.appendingPathComponent("plugins")
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        let source = dir.appendingPathComponent("marker.c")
        try """
        #include <stdio.h>
        #include <stdlib.h>
        __attribute__((constructor)) static void loaded(void) {
            const char *path = getenv("MARKER_FILE");
            FILE *f = path ? fopen(path, "w") : NULL;
            if (f) fclose(f);
        }
        """.write(to: source, atomically: true, encoding: .utf8)
        let cc = Process()
        cc.executableURL = URL(fileURLWithPath: clang)
        cc.arguments = ["-shared", "-fPIC", "-o", plugins.appendingPathComponent("libmarker.so").path, source.path]
        try cc.run()
        cc.waitUntilExit()
        try #require(cc.terminationStatus == 0, "building the marker plugin failed")
        let bad = Self.fixtures.appendingPathComponent("bad/lzf-kernel.h5").path
        let marker = dir.appendingPathComponent("loaded")
        var env = ProcessInfo.processInfo.environment
        env["HDF5_PLUGIN_PATH"] = plugins.path
        env["MARKER_FILE"] = marker.path
        for extra in [[], ["--no-verify"]] {
            let r = try Self.run([bad, dir.appendingPathComponent("out.rnw").path] + extra, environment: env)
            #expect(r.code == 3 && r.stderr.contains("HDF5 filter 32000"), "\(r.stdout)\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: marker.path), "a filter plugin was loaded")
        }
        if let h5dump = tool("h5dump") {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: h5dump)
            p.arguments = ["-d", "/model_weights/stem_conv/stem_conv/kernel:0", bad]
            p.environment = env
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            #expect(FileManager.default.fileExists(atPath: marker.path), "control: libhdf5 in h5dump should have loaded the plugin")
        } else {
            print("SKIPPED control of filterPluginsAreNeverLoaded: h5dump not installed (Debian hdf5-tools)")
        }
    }

    /// Chunked, shuffled and deflated kernels (filters built into libhdf5) give exactly the values of
    /// the uncompressed file, through the verified and the streamed conversion.
    @Test(arguments: [false, true])
    func compressedKernelsConvertToTheSameValues(streamed: Bool) throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plain = dir.appendingPathComponent("plain.rnw").path, packed = dir.appendingPathComponent("gzip.rnw").path
        let extra = streamed ? ["--no-verify"] : []
        let a = try Self.run([Self.fixtures.appendingPathComponent("bad/good.h5").path, plain] + extra)
        #expect(a.code == 0, "\(a.stdout)\(a.stderr)")
        let b = try Self.run([Self.fixtures.appendingPathComponent("bad/gzip-kernels.h5").path, packed] + extra)
        #expect(b.code == 0, "\(b.stdout)\(b.stderr)")
        let d = try Self.run(["diff", plain, packed, "--atol", "0"])
        #expect(d.code == 0 && d.stdout.contains("EQUAL"), "\(d.stdout)\(d.stderr)")
    }

    @Test func bytesThatAreNotHDF5AreRefused() throws {
        let dir = try Self.tempDir()
        let path = dir.appendingPathComponent("not-hdf5.h5")
        var g = SystemRandomNumberGenerator()
        try Data((0..<4096).map { _ in UInt8.random(in: 0...255, using: &g) }).write(to: path)
        try expectRefused(path.path, mention: "")
    }

    @Test("a truncated HDF5 file is refused", arguments: [0, 8, 100, 1000, 4096, 20000])
    func truncatedHDF5IsRefused(length: Int) throws {
        let good = try Data(contentsOf: Self.fixtures.appendingPathComponent("bad/good.h5"))
        let dir = try Self.tempDir()
        let path = dir.appendingPathComponent("truncated.h5")
        try good.prefix(length).write(to: path)
        try expectRefused(path.path, mention: "")
    }

    /// Exit 3, an error naming the file (and `mention`), no output and no temporary file.
    func expectRefused(_ input: String, mention: String) throws {
        let dir = try Self.tempDir()
        let out = dir.appendingPathComponent("out.rnw").path
        let r = try Self.run([input, out])
        #expect(r.code == 3, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains(URL(fileURLWithPath: input).lastPathComponent), "the error must name the file: \(r.stderr)")
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

    @Test("convert at each dtype re-verifies the stored model", arguments: ["f16", "bf16", "int8"])
    func convertAtANarrowDtype(dtype: String) throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let keras = Self.fixtures.appendingPathComponent("keras/kapp-resnet-v1")
        let out = dir.appendingPathComponent("m.rnw").path
        let r = try Self.run([keras.appendingPathComponent("tfkeras2.model.h5").path, out, "--expect",
                              keras.appendingPathComponent("io.npz").path, "--dtype", dtype, "--fold-bn"])
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("stored model (bn folded, \(dtype == "int8" ? "i8" : dtype))"), "\(r.stdout)")
        let v = try Self.run(["verify", out, "--expect", keras.appendingPathComponent("io.npz").path])
        // `verify` judges a .rnw by the tolerance policy of the dtype its weights are stored at.
        #expect(v.code == 0, "\(v.stdout)\(v.stderr)")
        #expect(v.stdout.contains(dtype == "int8" ? "int8 weights" : "\(dtype) weights"), "\(v.stdout)")
        let i = try Self.run(["inspect", out])
        #expect(i.code == 0 && i.stdout.contains("conv1.weight"), "\(i.stderr)")
        #expect(i.stdout.contains("stored as \(dtype == "int8" ? "i8" : dtype)"), "\(i.stdout)")
    }

    @Test func anUnknownDtypeIsAUsageError() throws {
        let dir = try Self.tempDir()
        let r = try Self.run([Self.fixtures.appendingPathComponent("bad/good.h5").path, dir.appendingPathComponent("o.rnw").path, "--dtype", "f64"])
        #expect(r.code == 2, "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test("a flipped byte in a committed .rnw exits 3 naming the damaged part",
          arguments: [(3, "first bytes"), (12, "header"), (30, "header"), (200, "manifest"), (-1, "tensor"), (-5000, "tensor")])
    func aFlippedByteInACommittedFileExits3(position: Int, part: String) throws {
        // A damaged magic is not recognised as .rnw at all ("first bytes"); still exit 3.
        let golden = Self.fixtures.appendingPathComponent("rnw/seed-keras.v1.1.f16.rnw")
        var bytes = try Data(contentsOf: golden)
        let at = position >= 0 ? position : bytes.count + position
        bytes[at] ^= 0x20
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("flipped.rnw").path
        try bytes.write(to: URL(fileURLWithPath: path))
        for args in [["inspect", path], ["verify", path, "--expect", Self.fixtures.appendingPathComponent("keras/seed-keras/io.npz").path]] {
            let r = try Self.run(args)
            #expect(r.code == 3, "byte \(at): \(r.stdout)\(r.stderr)")
            #expect(r.stderr.contains(part), "byte \(at): \(r.stderr)")
        }
    }
}

/// PyTorch files through the binary: goldens, and hostile files refused without running anything.
@Suite struct TorchCLITests {
    @Test("torch fixtures convert and verify", arguments: [
        "tv-resnet18-mini/tv-resnet18-mini.pth", "tv-resnet50-mini-fp16/tv-resnet50-mini-fp16.pth",
        "cifar-resnet20-optionA/legacy.th", "cifar-resnet20-optionA/checkpoint-dataparallel.th",
        "cifar-resnet20-optionA/whole-module.pth", "seed-torch/seed-torch.pth",
    ])
    func torchFixtureConverts(relative: String) throws {
        let file = CLITests.fixtures.appendingPathComponent("torch/\(relative)").path
        let io = CLITests.fixtures.appendingPathComponent("torch/\(relative.split(separator: "/")[0])/io.npz").path
        let dir = try CLITests.tempDir()
        let out = dir.appendingPathComponent("m.rnw").path
        let r = try CLITests.run([file, out, "--expect", io])
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        let d = try CLITests.run(["diff", file, out])
        #expect(d.code == 0, "a .pth and its .rnw must be equal: \(d.stdout)\(d.stderr)")
    }

    @Test func aPerturbedCopyIsNotEqual() throws {
        let a = CLITests.fixtures.appendingPathComponent("torch/cifar-resnet20-optionB/cifar-resnet20-optionB.pth").path
        let b = CLITests.fixtures.appendingPathComponent("torch/cifar-resnet20-optionB-bf16/cifar-resnet20-optionB-bf16.pth").path
        let d = try CLITests.run(["diff", a, b, "--json"])
        #expect(d.code == 1, "\(d.stdout)\(d.stderr)")
        #expect(d.stdout.contains("\"equal\" : false"))
    }

    static var hostileFiles: [String] {
        let dir = CLITests.fixtures.appendingPathComponent("hostile")
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix(".pt") }.sorted()
    }

    @Test("hostile files are refused with exit 3 and nothing runs", arguments: hostileFiles)
    func hostileFileIsRefused(name: String) throws {
        let file = CLITests.fixtures.appendingPathComponent("hostile/\(name)").path
        let marker = "/tmp/resnet-convert-pwned-\(name.replacingOccurrences(of: ".pt", with: ""))"
        let dir = try CLITests.tempDir()
        let out = dir.appendingPathComponent("m.rnw").path
        let r = try CLITests.run([file, out])
        #expect(r.code == 3, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains(name))
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        let markers = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp"))?.filter { $0.hasPrefix("resnet-convert-pwned") } ?? []
        #expect(markers.isEmpty && !FileManager.default.fileExists(atPath: marker), "something ran: \(markers)")
    }

    @Test func refusedGlobalsAreNamed() throws {
        let file = CLITests.fixtures.appendingPathComponent("hostile/reduce-posix-system.pt").path
        let r = try CLITests.run(["inspect", file])
        #expect(r.code == 3)
        #expect(r.stderr.contains("posix.system"))
    }
}

/// `verify` outputs for people and machines.
@Suite struct VerifyOutputTests {
    @Test func jsonAndHTMLReportsCarryTheVerdictAndEveryLayer() throws {
        let model = CLITests.fixtures.appendingPathComponent("torch/tv-resnet18-mini/tv-resnet18-mini.pth").path
        let io = CLITests.fixtures.appendingPathComponent("torch/tv-resnet18-mini/io.npz").path
        let dir = try CLITests.tempDir()
        let page = dir.appendingPathComponent("report.html").path
        let r = try CLITests.run(["verify", model, "--expect", io, "--json", "--report", page])
        #expect(r.code == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["passed"] as? Bool == true)
        #expect(object["first_divergent_layer"] is NSNull)
        let layers = try #require(object["layers"] as? [[String: Any]])
        #expect(layers.map { $0["name"] as? String } == ["conv1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1", "fc"])
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(html.contains("PASSED") && html.contains("<svg") && html.contains("layer4.1"))
        #expect(!html.contains("<script"), "the page is self-contained and static")
    }
}

/// Measurements a test reports besides its verdict (errors, counts, sizes): printed only when
/// `RESNET_CONVERT_TEST_LOG` is set, so a plain `swift test` shows results, failures and skips.
func testLog(_ message: @autoclosure () -> String) {
    if ProcessInfo.processInfo.environment["RESNET_CONVERT_TEST_LOG"] != nil { print(message()) }
}
