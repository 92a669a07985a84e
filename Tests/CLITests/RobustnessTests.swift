import Foundation
import Testing

/// The binary on damaged input and on failing disks: exit 0 or 3 on damage (never a signal or a
/// hang), exit 4 when the output cannot be written, and in every failed run the existing output
/// untouched and no temporary file left behind.
@Suite struct RobustnessTests {
    struct Outcome { var exited: Bool; var code: Int32; var stderr: String; var timedOut: Bool }

    /// Runs the binary with a deadline; a run past it is killed and reported as a hang. Stderr
    /// goes to a file so nothing here blocks on a pipe (tests share a small thread pool).
    static func run(_ args: [String], seconds: Double = 120) throws -> Outcome {
        let r = try CLITests.runWithDeadline(CLITests.binary, args, seconds: seconds)
        return Outcome(exited: r.exited, code: r.code, stderr: String(decoding: r.stderr, as: UTF8.self), timedOut: r.timedOut)
    }

    /// Deterministic offsets (SplitMix64 seeded with the name), half of them near either end.
    static func offsets(_ n: Int, count: Int, name: String) -> [Int] {
        var s = name.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        func next() -> Int {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) >> 1)
        }
        return (0..<n).map { i in i % 3 == 0 ? next() % min(count, 2048) : i % 3 == 1 ? count - 1 - next() % min(count, 2048) : next() % count }
    }

    static let sweepFiles = [
        "keras/seed-keras/tfkeras2.model.h5", "keras/kapp-resnet-v1/keras3.keras",
        "keras/nested-keras3/keras3.model.h5",
        "torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth", "torch/cifar-resnet20-optionA/legacy.th",
    ]

    /// `streamed`: with --no-verify, damage inside tensor data is found while the output is being
    /// written (streaming conversion); the rule is the same.
    @Test("damaged copies convert or exit 3, with no output on refusal", arguments: sweepFiles, [false, true])
    func damagedCopiesConvertOrExit3(relative: String, streamed: Bool) throws {
        let source = CLITests.fixtures.appendingPathComponent(relative)
        let data = try Data(contentsOf: source)
        let name = source.lastPathComponent
        let suffix = name.hasSuffix(".keras") ? ".keras" : name.hasSuffix(".h5") ? ".h5" : name.hasSuffix(".th") ? ".th" : ".pth"
        var variants: [(String, Data)] = Self.offsets(6, count: data.count, name: name).map { ("cut at \($0)", data.prefix($0)) }
        for p in Self.offsets(10, count: data.count, name: name + "/flip") {
            var d = data
            d[d.startIndex + p] ^= 0x5A
            variants.append(("byte \(p) ^ 0x5a", d))
        }
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var codes: [Int32] = []
        for (label, bytes) in variants {
            let input = dir.appendingPathComponent("input" + suffix)
            let outDir = dir.appendingPathComponent("out")
            try? FileManager.default.removeItem(at: outDir)
            try FileManager.default.createDirectory(at: outDir, withIntermediateDirectories: true)
            try bytes.write(to: input)
            let out = outDir.appendingPathComponent("m.rnw").path
            let r = try Self.run(["convert", input.path, out] + (streamed ? ["--no-verify"] : []))
            codes.append(r.code)
            let context = "\(relative)\(streamed ? " --no-verify" : ""), \(label): \(r.stderr)"
            #expect(!r.timedOut, "hang: \(context)")
            #expect(r.exited, "killed by signal \(r.code): \(context)")
            #expect(r.code == 0 || r.code == 3, "exit \(r.code): \(context)")
            let left = try FileManager.default.contentsOfDirectory(atPath: outDir.path)
            #expect(left == (r.code == 0 ? ["m.rnw"] : []), "files left: \(left): \(context)")
        }
        testLog("CLI sweep \(relative)\(streamed ? " --no-verify" : ""): exit codes \(codes)")
    }

    /// A file that makes libhdf5 segfault (see `anHDF5FileThatCrashesLibhdf5IsRefused`) ends the
    /// run with exit 3 and a message naming the file and the signal, not with the signal itself.
    @Test func anHDF5FileThatCrashesLibhdf5ExitsWith3() throws {
        var data = try Data(contentsOf: CLITests.fixtures.appendingPathComponent("keras/kapp-resnet-v1/tfkeras2.legacy-weights.h5"))
        data[2078] ^= 0x80
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("crasher.h5")
        try data.write(to: input)
        let r = try Self.run(["convert", input.path, dir.appendingPathComponent("m.rnw").path])
        #expect(r.exited && r.code == 3, "exit \(r.code): \(r.stderr)")
        #expect(r.stderr.contains("crasher.h5") && r.stderr.contains("libhdf5 crashed with signal 11"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["crasher.h5"])
    }

    /// Each limit flag, set below what the fixture needs, refuses it with exit 3 naming the file
    /// and the flag; given generously (`4G`, `1M`), the same command succeeds.
    @Test("a lowered limit flag exits 3 and names itself; a raised one reads the file", arguments: [
        ("--max-tensor-bytes", "1K", "4G", "torch/tv-resnet18-mini/tv-resnet18-mini.pth"),
        ("--max-total-bytes", "10K", "4G", "keras/kapp-resnet-v1/tfkeras2.model.h5"),
        ("--max-pickle-memo", "10", "1M", "torch/tv-resnet18-mini/tv-resnet18-mini.pth"),
        ("--max-pickle-depth", "2", "1000", "torch/cifar-resnet20-optionA/whole-module.pth"),
        ("--max-header-bytes", "1K", "512M", "keras/kapp-resnet-v1/keras3.keras"),
    ])
    func limitFlags(flag: String, low: String, high: String, file: String) throws {
        let path = CLITests.fixtures.appendingPathComponent(file).path
        let refused = try Self.run(["inspect", path, flag, low])
        #expect(refused.exited && refused.code == 3, "exit \(refused.code): \(refused.stderr)")
        #expect(refused.stderr.contains(path) && refused.stderr.contains("raise it with \(flag)"), "\(refused.stderr)")
        let read = try Self.run(["inspect", path, flag, high])
        #expect(read.exited && read.code == 0, "exit \(read.code): \(read.stderr)")
    }

    @Test func anExistingOutputIsUntouchedByAFailedRun() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("keep.rnw")
        let precious = Data("an earlier conversion".utf8)
        try precious.write(to: out)
        for bad in ["hostile/zip-truncated.pt", "bad/shape-mismatch.h5"] {
            let r = try Self.run(["convert", CLITests.fixtures.appendingPathComponent(bad).path, out.path])
            #expect(r.code == 3, "\(bad): \(r.stderr)")
            #expect(try Data(contentsOf: out) == precious, "\(bad) changed the existing output")
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["keep.rnw"])
        }
    }

    /// Mounts a tmpfs of `size` at a new directory (read-only when `readOnly`), or returns nil
    /// after saying why when this process may not mount.
    static func mountTmpfs(size: String, readOnly: Bool) throws -> URL? {
        guard getuid() == 0 else {
            print("SKIPPED: mounting a tmpfs needs root")
            return nil
        }
        let dir = try CLITests.tempDir()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/mount")
        p.arguments = ["-t", "tmpfs", "-o", "size=\(size)\(readOnly ? ",ro" : "")", "tmpfs", dir.path]
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            print("SKIPPED: cannot mount a tmpfs here (no CAP_SYS_ADMIN?)")
            try? FileManager.default.removeItem(at: dir)
            return nil
        }
        return dir
    }

    static func unmount(_ dir: URL) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/umount")
        p.arguments = [dir.path]
        try? p.run()
        p.waitUntilExit()
        try? FileManager.default.removeItem(at: dir)
    }

    static let smallModel = "torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth"   // its .rnw is 85 KB

    @Test(arguments: [false, true])
    func aFullDiskGivesExit4AndLeavesNothing(streamed: Bool) throws {
        guard let dir = try Self.mountTmpfs(size: "64k", readOnly: false) else { return }
        defer { Self.unmount(dir) }
        let out = dir.appendingPathComponent("m.rnw").path
        let r = try Self.run(["convert", CLITests.fixtures.appendingPathComponent(Self.smallModel).path, out] + (streamed ? ["--no-verify"] : []))
        #expect(r.code == 4, "\(r.stderr)")
        #expect(r.stderr.contains("No space left on device"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test func aReadOnlyDirectoryGivesExit4() throws {
        // Root ignores permission bits, so as root a read-only mount stands in for a read-only directory.
        let dir: URL
        var mounted = false
        if getuid() == 0 {
            guard let d = try Self.mountTmpfs(size: "64k", readOnly: true) else { return }
            dir = d
            mounted = true
        } else {
            dir = try CLITests.tempDir()
            chmod(dir.path, 0o555)
        }
        defer {
            if mounted { Self.unmount(dir) } else { chmod(dir.path, 0o755); try? FileManager.default.removeItem(at: dir) }
        }
        let out = dir.appendingPathComponent("m.rnw").path
        let r = try Self.run(["convert", CLITests.fixtures.appendingPathComponent(Self.smallModel).path, out])
        #expect(r.code == 4, "\(r.stderr)")
        #expect(r.stderr.contains("Read-only file system") || r.stderr.contains("Permission denied"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
