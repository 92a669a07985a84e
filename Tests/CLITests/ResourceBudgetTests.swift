import Foundation
import Testing

/// The crafted files of `fixtures/hostile-resources` (made by `tools/make_resource_bombs.py`):
/// each asks for far more memory than its size, or could be read two ways. The binary runs under
/// an address-space limit, so a reader that allocated what such a file asks for would die or
/// fail instead of refusing; each must be refused with exit 3, a message naming the file and the
/// limit (or the ambiguity), and no output file. The deadline only catches hangs: nothing is timed.
@Suite struct ResourceBudgetTests {
    static let folder = CLITests.fixtures.appendingPathComponent("hostile-resources")

    /// Address space for the child, in KiB. The debug binary maps about 0.9 GB before reading
    /// anything (measured with `ulimit -v`: 1,000,000 KiB fails at start, 1,100,000 runs); the
    /// full ResNet-50 conversions of ``normalFilesConvertUnderTheLimit`` peak well under 1 GB of
    /// RSS. 3,000,000 leaves room for both and is far below what any bomb asks for (1–16 GiB).
    static let addressSpaceKiB = 3_000_000

    struct Entry: Decodable {
        var file: String
        var command: [String]
        var mention: String
        var expected_exit: Int32
    }

    static func entries() throws -> [Entry] {
        struct Manifest: Decodable { var files: [Entry] }
        let data = try Data(contentsOf: folder.appendingPathComponent("MANIFEST.json"))
        return try JSONDecoder().decode(Manifest.self, from: data).files
    }

    static var names: [String] { ((try? entries()) ?? []).map(\.file) }

    struct Outcome { var exited: Bool; var code: Int32; var stderr: String; var timedOut: Bool }

    /// Runs the binary through `/bin/sh -c 'ulimit -v N; exec …'` with a generous deadline.
    static func runLimited(_ args: [String], kib: Int = addressSpaceKiB, seconds: Double = 300) throws -> Outcome {
        let r = try CLITests.runWithDeadline(URL(fileURLWithPath: "/bin/sh"),
                                             ["-c", "ulimit -v \(kib) && exec \"$0\" \"$@\"", CLITests.binary.path] + args, seconds: seconds)
        return Outcome(exited: r.exited, code: r.code, stderr: String(decoding: r.stderr, as: UTF8.self), timedOut: r.timedOut)
    }

    @Test("each crafted file is refused with exit 3 under an address-space limit", arguments: names)
    func craftedFileIsRefused(name: String) throws {
        let entry = try #require(try Self.entries().first { $0.file == name })
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = Self.folder.appendingPathComponent(name).path
        let out = dir.appendingPathComponent("out.rnw").path
        let args = entry.command.map {
            $0.replacingOccurrences(of: "{file}", with: file).replacingOccurrences(of: "{out}", with: out)
                .replacingOccurrences(of: "{fixtures}", with: CLITests.fixtures.path)
        }
        let r = try Self.runLimited(args)
        #expect(!r.timedOut, "\(name): still running after the deadline")
        #expect(r.exited && r.code == entry.expected_exit, "\(name): exit \(r.code) (exited: \(r.exited)): \(r.stderr)")
        #expect(r.stderr.contains(entry.mention), "\(name): the refusal does not say '\(entry.mention)': \(r.stderr)")
        #expect(r.stderr.contains(name), "\(name): the refusal does not name the file: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out), "\(name): an output file was left")
    }

    /// The manifest matches the files: sizes and hashes, and every file is small.
    @Test func manifestMatchesTheFiles() throws {
        let data = try Data(contentsOf: Self.folder.appendingPathComponent("MANIFEST.json"))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let files = try #require(object["files"] as? [[String: Any]])
        #expect(files.count >= 15)
        for f in files {
            let name = try #require(f["file"] as? String)
            let bytes = try Data(contentsOf: Self.folder.appendingPathComponent(name))
            #expect(bytes.count == f["size"] as? Int, "\(name)")
            #expect(bytes.count <= 16 << 10, "\(name) is \(bytes.count) bytes")
        }
    }

    /// Real files of every kind still convert (and verify against their goldens) under the same
    /// address-space limit the crafted files are refused under.
    @Test("real files convert under the limit", arguments: [
        ("keras/kapp-resnet-v1/keras3.keras", "keras/kapp-resnet-v1/io.npz"),
        ("keras/kapp-resnet-v1/tfkeras2.model.h5", "keras/kapp-resnet-v1/io.npz"),
        ("torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth", "torch/cifar-resnet20-optionA/io.npz"),
        ("torch/cifar-resnet20-optionA/legacy.th", "torch/cifar-resnet20-optionA/io.npz"),
    ])
    func normalFilesConvertUnderTheLimit(input: String, goldens: String) throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("m.rnw").path
        let r = try Self.runLimited(["convert", CLITests.fixtures.appendingPathComponent(input).path, out,
                                     "--expect", CLITests.fixtures.appendingPathComponent(goldens).path])
        #expect(r.exited && r.code == 0, "\(input): exit \(r.code): \(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: out))
    }

    /// The flag named in the refusal raises the limit: the config that decodes large is read once
    /// `--max-header-bytes` allows it, and the file then fails only for what else it is (its
    /// `model.weights.h5` is a bare signature), not for its config; likewise the overlapping view
    /// under a 16 MiB `--max-tensor-bytes` fails on the tensor limit, not the budget, once
    /// `--max-expansion` allows it.
    @Test func theNamedFlagRaisesTheLimit() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("m.rnw").path
        let config = Self.folder.appendingPathComponent("keras-config-decodes-large.keras").path
        let r = try Self.runLimited(["convert", config, out, "--max-header-bytes", "10M"])
        #expect(r.exited && r.code == 3 && !r.stderr.contains("--max-header-bytes") && r.stderr.contains("model.weights.h5"), "\(r.stderr)")
        let view = Self.folder.appendingPathComponent("torch-overlapping-view.pth").path
        let v = try Self.runLimited(["convert", view, out, "--max-expansion", "1000000", "--max-tensor-bytes", "16M"])
        #expect(v.exited && v.code == 3 && v.stderr.contains("--max-tensor-bytes") && !v.stderr.contains("--max-expansion"), "\(v.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
