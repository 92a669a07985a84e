import Foundation
import ResNetKit
import Testing

/// Inputs that are not regular files, names that try to take over the terminal, and errors that
/// must name the file they are about (tools/make_hostile_names.py writes the hostile-name files).
@Suite struct InputHygieneTests {
    struct Outcome { var code: Int32; var stdout: Data; var stderr: Data; var timedOut: Bool
        var err: String { String(decoding: stderr, as: UTF8.self) }
        var out: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs the binary with a generous deadline (a hang is killed and reported, durations are not
    /// asserted); both streams go to files, so nothing blocks on a pipe.
    static func run(_ args: [String], in dir: URL, seconds: Double = 120) throws -> Outcome {
        let r = try CLITests.runWithDeadline(CLITests.binary, args, seconds: seconds, in: dir)
        return Outcome(code: r.code, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut)
    }

    static let model = CLITests.fixtures.appendingPathComponent("torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth").path
    static let goldens = CLITests.fixtures.appendingPathComponent("torch/cifar-resnet20-optionA/io.npz").path

    /// Each command with `bad` in one input position (the model, the second diff input, goldens, a naming table).
    static func commands(_ bad: String) -> [[String]] {
        [["convert", bad, "out.rnw"], ["convert", bad, "out.rnw", "--no-verify"], ["inspect", bad], ["diff", model, bad], ["diff", bad, model],
         ["verify", bad, "--expect", goldens], ["verify", model, "--expect", bad],
         ["convert", model, "out.rnw", "--expect", bad], ["convert", model, "out.rnw", "--map", bad],
         ["export", bad, "out.safetensors"]]
    }

    @Test("a FIFO as any input is refused at once by kind, exit 3, naming it")
    func fifoIsRefused() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("pipe.pth").path
        #expect(mkfifo(fifo, 0o600) == 0)
        for args in Self.commands(fifo) {
            let r = try Self.run(args, in: dir)
            #expect(!r.timedOut, "\(args) hung on a FIFO")
            #expect(r.code == 3, "\(args): \(r.err)")
            #expect(r.err.contains("\(fifo): invalid input at (file): is a FIFO, not a regular file"), "\(args): \(r.err)")
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out.rnw").path))
        }
    }

    @Test("a directory, a character device and a socket are refused by kind")
    func otherKindsAreRefused() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let sub = dir.appendingPathComponent("weights.pth").path
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
        let socketPath = dir.appendingPathComponent("s.pth").path
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let bytes = Array(socketPath.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes + [0])
        }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        for (path, kind) in [(sub, "is a directory"), ("/dev/null", "is a character device")] + (bound == 0 ? [(socketPath, "is a socket")] : []) {
            for args in Self.commands(path) {
                let r = try Self.run(args, in: dir)
                #expect(!r.timedOut)
                #expect(r.code == 3, "\(args): \(r.err)")
                #expect(r.err.contains("\(path): invalid input at (file): \(kind), not a regular file"), "\(args): \(r.err)")
            }
        }
    }

    static func hostile(_ name: String) -> String { CLITests.fixtures.appendingPathComponent("hostile-names/\(name)").path }

    /// No raw control character (other than the line breaks of the output itself) reaches the streams.
    static func expectClean(_ data: Data, _ context: String) {
        let bad = data.filter { ($0 < 0x20 && $0 != 0x0A) || $0 == 0x7F }
        #expect(bad.isEmpty, "raw control bytes \(Array(Set(bad)).sorted()) in \(context)")
        let text = String(decoding: data, as: UTF8.self)
        #expect(!text.unicodeScalars.contains { (0x80 ... 0x9F).contains($0.value) || (0x202A ... 0x202E).contains($0.value) }, "\(context)")
        #expect(!text.split(separator: "\n").contains { $0.hasPrefix("OK: forged") }, "forged line in \(context)")
    }

    @Test("tensor names with escape sequences, newlines and NULs are shown escaped")
    func hostileTensorNamesAreEscaped() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = Self.hostile("escape-keys.safetensors")
        for args in [["inspect", file], ["convert", file, "out.rnw"], ["diff", file, file]] {
            let r = try Self.run(args, in: dir)
            #expect(r.code == 3, "\(args): \(r.err)")
            Self.expectClean(r.stderr, "\(args)")
            for shown in ["\\x1b[2J\\x1b[HOK: forged.weight", "layer1\\nOK: forged line.weight", "nul\\0inside.weight",
                          "carriage\\rreturn.weight", "bidi\\u{202e}exe.txt.weight", "c1\\u{9b}31mred.weight", "del\\x7fchar.weight"] {
                #expect(r.err.contains(shown), "\(args): \(shown) not in \(r.err)")
            }
        }
        let d = try Self.run(["inspect", Self.hostile("escape-dtype.safetensors")], in: dir)
        #expect(d.code == 3)
        Self.expectClean(d.stderr, "escape-dtype")
        #expect(d.err.contains("dtype F\\x1b[2J\\nOK: 32"), "\(d.err)")
        // A pickle's class name, quoted by the refusal of a global that is not allowed.
        let g = try Self.run(["inspect", Self.hostile("escape-global.pth")], in: dir)
        #expect(g.code == 3)
        Self.expectClean(g.stderr, "escape-global")
        #expect(g.err.contains("refused global 'evil\\x1b[2J\\x1b[HOK: forged\\nmodule.cls\\0\\u{202e}name'"), "\(g.err)")
    }

    @Test("a spec family with control characters: escaped in text, exact in JSON")
    func hostileFamilyIsEscapedInTextExactInJSON() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let family = "resnet\u{1b}[2J\u{1b}[H\nOK: forged\u{0}\u{202e}"
        var model = try RNWReader(path: CLITests.fixtures.appendingPathComponent("rnw/seed-keras.v1.0.f32.rnw").path).model()
        model.spec.family = family
        let path = dir.appendingPathComponent("hostile.rnw").path
        try RNWWriter.write(model, to: path)
        let text = try Self.run(["inspect", path], in: dir)
        #expect(text.code == 0, "\(text.err)")
        Self.expectClean(text.stdout, "inspect text")
        #expect(text.out.contains("architecture: resnet\\x1b[2J\\x1b[H\\nOK: forged\\0\\u{202e},"), "\(text.out)")
        let json = try Self.run(["inspect", path, "--json"], in: dir)
        #expect(json.code == 0, "\(json.err)")
        Self.expectClean(json.stdout, "inspect --json")
        let object = try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any]
        #expect(object?["family"] as? String == family, "JSON output must hold the family exactly")
        let converted = try Self.run(["convert", path, "copy.rnw", "--no-verify"], in: dir)
        Self.expectClean(converted.stdout, "convert text")
        Self.expectClean(converted.stderr, "convert stderr")
    }

    @Test("notes quoting the file (safetensors metadata) are escaped in text and exact in JSON")
    func hostileNotesAreEscaped() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plain = dir.appendingPathComponent("plain.safetensors").path
        #expect(try Self.run(["export", Self.model, plain], in: dir).code == 0)
        // The same file with a hostile metadata value.
        let data = try Data(contentsOf: URL(fileURLWithPath: plain))
        let n = Int(data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try #require(try JSONSerialization.jsonObject(with: data.subdata(in: 8 ..< 8 + n)) as? [String: Any])
        let value = "pt\u{1b}[2J\u{1b}[HOK: forged\n\u{202e}"
        header["__metadata__"] = ["format": value]
        var raw = try JSONSerialization.data(withJSONObject: header)
        raw.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - raw.count % 8) % 8))
        var file = withUnsafeBytes(of: UInt64(raw.count).littleEndian) { Data($0) }
        file.append(raw)
        file.append(data.subdata(in: 8 + n ..< data.count))
        let path = dir.appendingPathComponent("hostile-metadata.safetensors").path
        try file.write(to: URL(fileURLWithPath: path))
        for args in [["inspect", path], ["convert", path, "out.rnw", "--no-verify"]] {
            let r = try Self.run(args, in: dir)
            #expect(r.code == 0, "\(args): \(r.err)")
            Self.expectClean(r.stdout, "\(args)")
            #expect(r.out.contains("note: safetensors metadata format=pt\\x1b[2J\\x1b[HOK: forged\\n\\u{202e}"), "\(args): \(r.out)")
        }
        let json = try Self.run(["inspect", path, "--json"], in: dir)
        Self.expectClean(json.stdout, "inspect --json")
        let object = try #require(try JSONSerialization.jsonObject(with: json.stdout) as? [String: Any])
        #expect((object["notes"] as? [String])?.contains("safetensors metadata format=" + value) == true)
    }

    @Test("a 1 MB key is cut in the message, with its length")
    func megabyteKeyIsTruncated() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        var names: [String] = []
        for i in 0 ..< 4 { names.append(String(repeating: "k", count: 1 << 20) + "\(i)") }
        let header = "{" + names.enumerated().map { i, n in "\"\(n)\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\(4 * i), \(4 * i + 4)]}" }
            .joined(separator: ", ") + "}"
        var raw = Data(header.utf8)
        raw.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - raw.count % 8) % 8))
        var file = withUnsafeBytes(of: UInt64(raw.count).littleEndian) { Data($0) }
        file.append(raw)
        file.append(Data(count: 4 * names.count))
        let path = dir.appendingPathComponent("long-keys.safetensors").path
        try file.write(to: URL(fileURLWithPath: path))
        let r = try Self.run(["inspect", path], in: dir)
        #expect(r.code == 3)
        #expect(r.stderr.count < 16 << 10, "stderr has \(r.stderr.count) bytes")
        #expect(r.err.contains(String(repeating: "k", count: DisplayText.maxNameBytes) + "… (1048577 bytes)"), "\(r.err.prefix(2000))")
    }

    @Test("problems of the goldens file name the goldens file")
    func goldensErrorsNameTheGoldensFile() throws {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // An input batch of size 0: read fine, but the model cannot run on it.
        let empty = try NPZ(arrays: ["input": NPYArray(Tensor(shape: [0, 3, 8, 8], data: [])),
                                     "output": NPYArray(Tensor(shape: [0, 10], data: []))]).encode()
        let emptyPath = dir.appendingPathComponent("empty-io.npz").path
        try empty.write(to: URL(fileURLWithPath: emptyPath))
        // An output of another shape than the model's.
        let wrong = try NPZ(arrays: ["input": NPYArray(Tensor(shape: [1, 3, 8, 8], data: [Float](repeating: 0, count: 192))),
                                     "output": NPYArray(Tensor(shape: [1, 7], data: [Float](repeating: 0, count: 7)))]).encode()
        let wrongPath = dir.appendingPathComponent("wrong-io.npz").path
        try wrong.write(to: URL(fileURLWithPath: wrongPath))
        for command in ["verify", "convert"] {
            let args = command == "verify" ? [command, Self.model, "--expect"] : [command, Self.model, "out.rnw", "--expect"]
            let e = try Self.run(args + [emptyPath], in: dir)
            #expect(e.code == 3, "\(e.err)")
            #expect(e.err.hasPrefix("error: \(emptyPath): invalid input at input: the model cannot run on this input"), "\(e.err)")
            let w = try Self.run(args + [wrongPath], in: dir)
            #expect(w.code == 1, "\(w.err)")
            #expect(w.err.contains("\(wrongPath): output shape [1, 10] differs from reference shape [1, 7]"), "\(w.err)")
            #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out.rnw").path))
        }
    }
}
