import Foundation
import Testing

/// What a person at a terminal sees: the version, one `error:` prefix, messages that name the file
/// and the next step, JSON errors with `--json`, `--no-clobber`, and lists that say they are cut.
@Suite struct CLIMannersTests {
    static func fixture(_ relative: String) -> String { CLITests.fixtures.appendingPathComponent(relative).path }
    static let torch = fixture("torch/tv-resnet50-mini/tv-resnet50-mini.pth")
    static let goldens = fixture("torch/tv-resnet50-mini/io.npz")

    @Test func versionIsPrinted() throws {
        let r = try CLITests.run(["--version"])
        #expect(r.code == 0)
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ".").count == 3)
    }

    @Test func usageErrorsHaveOnePrefix() throws {
        let r = try CLITests.run(["convert", Self.torch, "x.rnw", "--no-such-flag"])
        #expect(r.code == 2)
        #expect(r.stderr.hasPrefix("error: "))
        #expect(!r.stderr.lowercased().contains("error: error:"))
    }

    @Test func aNonRNWOutputPointsToExport() throws {
        let dir = try CLITests.tempDir()
        let out = dir.appendingPathComponent("b.pth").path
        let r = try CLITests.run([Self.torch, out])
        #expect(r.code == 2)
        #expect(r.stderr.contains(out))
        #expect(r.stderr.contains("resnet-convert export"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func aMissingGoldensFileIsNamed() throws {
        let dir = try CLITests.tempDir()
        let missing = dir.appendingPathComponent("no-such-io.npz").path
        for args in [[Self.torch, dir.appendingPathComponent("o.rnw").path, "--expect", missing], ["verify", Self.torch, "--expect", missing]] {
            let r = try CLITests.run(args)
            #expect(r.code == 4)
            #expect(r.stderr.contains(missing) && r.stderr.contains("no such file"))
            #expect(!r.stderr.contains("could not be completed"))
        }
    }

    /// The parity line puts the relative error next to the relative tolerance it is held to.
    @Test func parityLinesShowTheRelativeErrorBesideTheTolerance() throws {
        let dir = try CLITests.tempDir()
        let r = try CLITests.run([Self.torch, dir.appendingPathComponent("o.rnw").path, "--expect", Self.goldens])
        #expect(r.code == 0)
        let line = try #require(r.stdout.split(separator: "\n").first { $0.contains("(tolerance") })
        #expect(line.contains("relative error"))
        #expect(!line.contains("max |err|"))
    }

    @Test func jsonFailuresPrintAnErrorObject() throws {
        let dir = try CLITests.tempDir()
        let bad = dir.appendingPathComponent("bad.pth")
        try Data("not a checkpoint at all".utf8).write(to: bad)
        let r = try CLITests.run(["convert", bad.path, dir.appendingPathComponent("o.rnw").path, "--json"])
        #expect(r.code == 3)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let error = try #require(object["error"] as? [String: Any])
        #expect(error["exit_code"] as? Int == 3)
        #expect(error["kind"] as? String == "invalid_input")
        #expect(error["file"] as? String == bad.path)
        #expect((error["message"] as? String)?.contains(bad.path) == true)
        #expect(r.stderr.hasPrefix("error: "))

        // Usage errors too, and nothing on stdout without --json.
        let u = try CLITests.run(["export", Self.torch, dir.appendingPathComponent("o.xyz").path, "--json"])
        #expect(u.code == 2)
        #expect(((try JSONSerialization.jsonObject(with: Data(u.stdout.utf8)) as? [String: Any])?["error"] as? [String: Any])?["kind"] as? String == "usage")
        let plain = try CLITests.run(["convert", bad.path, dir.appendingPathComponent("o.rnw").path])
        #expect(plain.code == 3 && plain.stdout.isEmpty)
    }

    @Test func inspectSaysWhenBlocksAreLeftOut() throws {
        let r = try CLITests.run(["inspect", Self.fixture("torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth")])
        #expect(r.code == 0)
        // Three blocks per stage, two listed.
        #expect(r.stdout.contains("… 1 more block(s) not listed"))
    }

    @Test("--no-clobber refuses an existing output and leaves it alone", arguments: ["o.rnw", "o.safetensors"])
    func noClobberRefusesAnExistingOutput(name: String) throws {
        let dir = try CLITests.tempDir()
        let out = dir.appendingPathComponent(name).path
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: out))
        let command = name.hasSuffix(".rnw") ? "convert" : "export"
        let r = try CLITests.run([command, Self.torch, out, "--no-clobber"])
        #expect(r.code == 4)
        #expect(r.stderr.contains(out) && r.stderr.contains("--no-clobber"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data("keep me".utf8))
        // A new name is written, and without the flag an existing one is replaced.
        let fresh = dir.appendingPathComponent("new-" + name).path
        #expect(try CLITests.run([command, Self.torch, fresh, "--no-clobber"]).code == 0)
        #expect(try CLITests.run([command, Self.torch, out]).code == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) != Data("keep me".utf8))
        // No temporary file is left beside them.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == [name, "new-" + name].sorted())
    }

    /// The named-temporary fallback links without replacing too.
    @Test func noClobberWithTheNamedTemporaryFallback() throws {
        let dir = try CLITests.tempDir()
        let out = dir.appendingPathComponent("o.rnw").path
        var env = ProcessInfo.processInfo.environment
        env["RESNET_CONVERT_NAMED_TEMP"] = "1"
        #expect(try CLITests.run(["convert", Self.torch, out, "--no-clobber"], environment: env).code == 0)
        #expect(try CLITests.run(["convert", Self.torch, out, "--no-clobber"], environment: env).code == 4)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["o.rnw"])
    }

    @Test func helpTellsAboutInputsAndOverwriting() throws {
        let convert = try CLITests.run(["convert", "--help"])
        #expect(convert.stdout.contains("safetensors"))
        #expect(convert.stdout.contains("--no-clobber"))
        #expect(convert.stdout.contains("replaced"))
        let export = try CLITests.run(["export", "--help"])
        #expect(export.stdout.contains("--no-clobber"))
    }
}
