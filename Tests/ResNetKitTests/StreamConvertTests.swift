import Foundation
import Testing
@testable import ResNetKit

/// `convert --no-verify` streams tensor by tensor; these tests hold it to the materialising
/// writer's exact bytes and to the no-output-on-failure rule.
@Suite struct StreamConvertTests {
    /// Every committed Keras and PyTorch fixture a converter accepts.
    static func fixtureFiles() throws -> [String] {
        var files: [String] = []
        for (folder, exts) in [("keras", [".h5", ".keras"]), ("torch", [".pth"])] {
            let root = Paths.fixtures.appendingPathComponent(folder)
            for model in try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() {
                let dir = root.appendingPathComponent(model)
                guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { continue }
                for name in names.sorted() where exts.contains(where: { name.hasSuffix($0) }) {
                    files.append(dir.appendingPathComponent(name).path)
                }
            }
        }
        return files
    }

    /// What `convert` wrote before streaming existed: the whole model through ``RNWWriter``.
    static func materialisedBytes(_ input: String, to path: String) throws -> Data {
        let loaded = try loadModel(path: input)
        let provenance = RNWProvenance(sourceFormat: loaded.format, sourcePath: URL(fileURLWithPath: input).lastPathComponent,
                                       sourceSHA256: try sha256Hex(path: input), scheme: loaded.model.spec.family,
                                       unwrappingNotes: loaded.notes, toolVersion: toolVersion)
        try RNWWriter.write(loaded.model, to: path, provenance: provenance)
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    static func streamedOptions() -> ConversionOptions { ConversionOptions(force: true, skipVerification: true) }

    @Test func streamedFilesAreByteIdenticalToTheMaterialisingWriterOnEveryFixture() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var compared = 0
        for input in try Self.fixtureFiles() {
            let expected: Data
            do {
                expected = try Self.materialisedBytes(input, to: dir.appendingPathComponent("old.rnw").path)
            } catch {
                // Files that need --arch: the streamed conversion must refuse them the same way.
                #expect(throws: ResNetError.self) {
                    _ = try convert(input: input, output: dir.appendingPathComponent("new.rnw").path, options: Self.streamedOptions())
                }
                continue
            }
            let out = dir.appendingPathComponent("new.rnw").path
            let report = try convert(input: input, output: out, options: Self.streamedOptions())
            #expect(report.checks.first?.detail.contains("streamed") == true, "\(input) was not streamed")
            let written = try Data(contentsOf: URL(fileURLWithPath: out))
            #expect(written == expected, "\(input): streamed .rnw differs from the materialising writer's")
            let back = try RNWReader(path: out).model(), source = try loadModel(path: input).model
            #expect(back.spec == source.spec && back.tensors == source.tensors, "\(input)")
            compared += 1
        }
        #expect(compared >= 20, "only \(compared) fixtures converted")
    }

    @Test func aWriteFailureMidStreamLeavesTheOldOutputAndNoTemporaryFile() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let inputs = [Paths.fixtures.appendingPathComponent("torch/tv-resnet18-mini/tv-resnet18-mini.pth").path,
                      Paths.fixtures.appendingPathComponent("keras/kapp-resnet-v1/tfkeras2.model.h5").path]
        for input in inputs {
            let out = dir.appendingPathComponent("out.rnw").path
            try Data("previous output".utf8).write(to: URL(fileURLWithPath: out))
            let full = try Self.materialisedBytes(input, to: dir.appendingPathComponent("ref.rnw").path).count
            try FileManager.default.removeItem(at: dir.appendingPathComponent("ref.rnw"))
            // The streaming writer leaves alignment padding as holes, so it writes a little less than `full`.
            for limit in [0, 100, full / 2, full * 9 / 10] {
                do {
                    _ = try convertStreaming(input: input, output: out, options: Self.streamedOptions(),
                                             sourceHash: InBackground { try sha256Hex(path: input) }, progress: nil, failAfterBytes: limit)
                    Issue.record("\(input): no failure after \(limit) bytes")
                } catch let error as ResNetError {
                    #expect(error.exitCode == 4, "\(error)")
                }
                #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data("previous output".utf8), "destination changed (fail after \(limit))")
                #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["out.rnw"], "temporary file left (fail after \(limit))")
            }
        }
    }

    @Test func damagedTensorBytesFoundMidStreamFailWithTheTensorNamedAndNoOutput() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = [UInt8](try Data(contentsOf: Paths.fixtures.appendingPathComponent("torch/tv-resnet18-mini/tv-resnet18-mini.pth")))
        // Flip one byte inside the largest storage member: structure intact, data damaged.
        let members = try bytes.withUnsafeBytes { try checkedZipDirectory($0, file: "fixture") }
        let target = members.filter { $0.name.contains("/data/") && !$0.compressed }.max { $0.data.count < $1.data.count }
            .map { $0.data.lowerBound + $0.data.count / 2 }
        let at = try #require(target)
        bytes[at] ^= 0x40
        let input = dir.appendingPathComponent("damaged.pth").path
        try Data(bytes).write(to: URL(fileURLWithPath: input))
        let out = dir.appendingPathComponent("out.rnw").path
        do {
            _ = try convert(input: input, output: out, options: Self.streamedOptions())
            Issue.record("damaged storage was not noticed")
        } catch let error as ResNetError {
            #expect(error.exitCode == 3)
            #expect(error.description.contains("damaged.pth") && error.description.contains("CRC-32"), "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["damaged.pth"])
    }

    /// The data start depends on the checksums' varint lengths, so the writer's guess can be wrong
    /// by some 64-byte steps (forced here in both directions, and once by more than a staging buffer
    /// holds, so padding alone fills whole buffers); the data is then moved, and the bytes
    /// must still be the materialising writer's. Each case runs with direct I/O (where the file
    /// system offers it) and through the page cache, with chunks from 4 KB (many chunks, tensors
    /// straddling them, the writer's queue full) to the default.
    @Test func aWrongGuessOfTheDataStartStillGivesIdenticalBytes() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = try loadModel(path: Paths.fixtures.appendingPathComponent("torch/tv-resnet18-mini/tv-resnet18-mini.pth").path).model
        let provenance = RNWProvenance(sourceFormat: "test", sourcePath: "x.pth", sourceSHA256: String(repeating: "7f", count: 32),
                                       scheme: base.spec.family, unwrappingNotes: ["n"], toolVersion: toolVersion)
        var moved = 0, inPlace = 0, direct = 0
        let chunks = [4096, 8192, 3 * 4096, 64 << 10, 4 << 20]
        for (seed, bias) in zip(UInt64(0) ..< 11, [0, 64, -64, 192, 0, -128, 64, 0, 4096, -4096, 1 << 21]) {
            var rng = SplitMix64(state: seed)
            var model = base
            for (name, t) in model.tensors {
                model.tensors[name] = Tensor(shape: t.shape, data: t.data.map { _ in Float.random(in: -1 ... 1, using: &rng) })
            }
            let a = dir.appendingPathComponent("a.rnw").path, b = dir.appendingPathComponent("b.rnw").path
            try RNWWriter.write(model, to: a, provenance: provenance)
            let expected = try Data(contentsOf: URL(fileURLWithPath: a))
            var blank = provenance
            blank.sourceSHA256 = ""
            let params = model.spec.parameters
            for directIO in [true, false] {
                let chunk = chunks[Int(seed) % chunks.count]
                let outcome = try RNWStreamWriter.write(spec: model.spec, to: b, provenance: blank, sourceHash: { provenance.sourceSHA256 },
                    fill: { i, out in _ = model.tensors[params[i].name]!.data.withUnsafeBufferPointer { out.initialize(from: $0) } },
                    verify: { _, _ in }, guessBias: bias, directIO: directIO, chunkBytes: chunk)
                #expect(outcome.moved == (bias != 0))
                #expect(directIO || !outcome.direct)
                if outcome.moved { moved += 1 } else { inPlace += 1 }
                if outcome.direct { direct += 1 }
                #expect(try Data(contentsOf: URL(fileURLWithPath: b)) == expected, "seed \(seed), bias \(bias), direct \(outcome.direct), chunk \(chunk)")
            }
        }
        #expect(moved > 0 && inPlace > 0, "moved \(moved), in place \(inPlace): both paths should be exercised")
        if direct == 0 { print("note: the temporary directory's file system offers no direct I/O; only page-cache writes were tested") }
    }

    /// Every committed fixture streams to the same bytes with direct I/O and through the page cache
    /// (and both equal the materialising writer's, see above), in small chunks too.
    @Test func directAndPageCacheWritesGiveIdenticalFiles() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var compared = 0
        for input in try Self.fixtureFiles() {
            guard let loaded = try? loadModel(path: input) else { continue }
            let model = loaded.model, params = model.spec.parameters
            var files: [Data] = []
            for (directIO, chunk) in [(true, 4096), (false, 4096), (true, 4 << 20), (false, 4 << 20)] {
                let out = dir.appendingPathComponent("s.rnw").path
                _ = try RNWStreamWriter.write(spec: model.spec, to: out, provenance: nil, sourceHash: { "" },
                    fill: { i, out in _ = model.tensors[params[i].name]!.data.withUnsafeBufferPointer { out.initialize(from: $0) } },
                    verify: { _, _ in }, directIO: directIO, chunkBytes: chunk)
                files.append(try Data(contentsOf: URL(fileURLWithPath: out)))
            }
            #expect(Set(files).count == 1, "\(input): direct and page-cache writes differ")
            let back = try RNWReader(path: dir.appendingPathComponent("s.rnw").path).model()
            #expect(back.tensors == model.tensors, "\(input)")
            compared += 1
        }
        #expect(compared >= 20, "only \(compared) fixtures compared")
    }

    /// Large tensors pass through the staging buffers a few output channels at a time; with tiny
    /// buffers (many pieces per tensor, rows split across buffers) the file must not change.
    @Test func streamingThroughTinyBuffersGivesTheSameFile() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let inputs = try Self.fixtureFiles().filter { $0.hasSuffix(".h5") || $0.hasSuffix(".pth") }
        var compared = 0
        for input in inputs {
            guard let expected = try? Self.materialisedBytes(input, to: dir.appendingPathComponent("ref.rnw").path) else { continue }
            for chunk in [16 << 10, 20 << 10, 64 << 10] {
                let out = dir.appendingPathComponent("tiny.rnw").path
                let report = try convertStreaming(input: input, output: out, options: Self.streamedOptions(),
                                                  sourceHash: InBackground { try sha256Hex(path: input) }, progress: nil, chunkBytes: chunk)
                #expect(report != nil, "\(input) was not streamed")
                #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == expected, "\(input), buffers of \(chunk) bytes")
            }
            compared += 1
        }
        #expect(compared >= 10, "only \(compared) fixtures compared")
    }

    /// Row producers whose rows are larger than a staging buffer, or one element long, give the
    /// same bytes as whole producers.
    @Test func rowProducersOfAnyRowLengthGiveTheSameFile() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try loadModel(path: Paths.fixtures.appendingPathComponent("torch/tv-resnet18-mini/tv-resnet18-mini.pth").path).model
        let params = model.spec.parameters
        let a = dir.appendingPathComponent("a.rnw").path, b = dir.appendingPathComponent("b.rnw").path
        try RNWWriter.write(model, to: a)
        let expected = try Data(contentsOf: URL(fileURLWithPath: a))
        for rowLength in [{ (n: Int) in n }, { _ in 1 }, { n in n % 3 == 0 ? n / 3 : n }] {
            _ = try RNWStreamWriter.write(spec: model.spec, to: b, provenance: nil, sourceHash: { "" },
                produce: { i in
                    let data = model.tensors[params[i].name]!.data
                    let length = rowLength(data.count)
                    return .rows(length: length) { rows, out in
                        _ = data.withUnsafeBufferPointer { out.initialize(from: $0[rows.lowerBound * length ..< rows.upperBound * length]) }
                    }
                }, verify: { _, _ in }, chunkBytes: 16 << 10)
            #expect(try Data(contentsOf: URL(fileURLWithPath: b)) == expected)
        }
    }

    @Test func theStreamingHashEqualsTheOneShotHashHoweverTheInputIsSplit() {
        var rng = SplitMix64(state: 9)
        for n in [0, 1, 7, 31, 32, 33, 63, 64, 65, 100, 1000, 4099] {
            let bytes = (0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            bytes.withUnsafeBytes { all in
                let expected = xxHash64(all)
                for _ in 0 ..< 20 {
                    var stream = XXHash64Stream()
                    var at = 0
                    while at < n {
                        let k = Int.random(in: 1 ... max(1, min(n - at, [1, 5, 31, 32, 40, 200][Int.random(in: 0 ... 5, using: &rng)])), using: &rng)
                        stream.update(UnsafeRawBufferPointer(rebasing: all[at ..< at + k]))
                        at += k
                    }
                    #expect(stream.finish() == expected, "length \(n)")
                }
            }
        }
    }

    @Test func transposingSomeOutputsGivesThoseRowsOfTheWholeTranspose() {
        var rng = SplitMix64(state: 11)
        for (h, w, i, o) in [(1, 1, 5, 17), (3, 3, 5, 33), (7, 7, 3, 64), (1, 1, 40, 15)] {
            let src = Tensor(shape: [h, w, i, o], data: (0 ..< h * w * i * o).map { _ in Float.random(in: -1 ... 1, using: &rng) })
            let whole = src.permuted([3, 2, 0, 1]).data
            for rows in [0 ..< o, 0 ..< 1, 3 ..< o, 1 ..< (o - 1), (o - 1) ..< o] where !rows.isEmpty {
                var out = [Float](repeating: .nan, count: rows.count * i * h * w)
                src.data.withUnsafeBufferPointer { s in
                    out.withUnsafeMutableBufferPointer { transposeToOIHW(s, $0, hw: h * w, i: i, o: o, outputs: rows) }
                }
                #expect(out == Array(whole[rows.lowerBound * i * h * w ..< rows.upperBound * i * h * w]), "HWIO \([h, w, i, o]), rows \(rows)")
            }
        }
    }

    @Test func theBlockedTransposeEqualsThePlainPermutation() {
        var rng = SplitMix64(state: 5)
        for (h, w, i, o) in [(1, 1, 1, 1), (1, 1, 3, 17), (3, 3, 5, 33), (7, 7, 3, 64), (1, 1, 40, 15), (3, 1, 2, 16)] {
            let src = Tensor(shape: [h, w, i, o], data: (0 ..< h * w * i * o).map { _ in Float.random(in: -1 ... 1, using: &rng) })
            var out = [Float](repeating: .nan, count: src.count)
            src.data.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer { transposeToOIHW(s, $0, hw: h * w, i: i, o: o) }
            }
            #expect(out == src.permuted([3, 2, 0, 1]).data, "HWIO \([h, w, i, o])")
        }
    }
}

/// The SHA-NI compression must agree with the Swift one everywhere, and both with FIPS 180-4.
@Suite struct SHA256HardwareTests {
    static func hex(_ bytes: [UInt8], hardware: Bool, chunk: Int? = nil) -> String {
        var h = SHA256()
        h.useHardware = hardware
        bytes.withUnsafeBytes { all in
            guard let chunk else { h.update(all); return }
            var at = 0
            repeat {
                let n = min(chunk, all.count - at)
                h.update(UnsafeRawBufferPointer(rebasing: all[at ..< at + n]))
                at += n
            } while at < all.count
        }
        return h.finish()
    }

    @Test func bothImplementationsGiveTheFIPSExampleDigests() {
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        let cases: [([UInt8], String)] = [
            (Array("abc".utf8), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
            (million, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
        ]
        for hardware in [false, true] where !hardware || SHA256.hardwareAvailable {
            for (input, digest) in cases { #expect(Self.hex(input, hardware: hardware) == digest, "hardware: \(hardware)") }
        }
    }

    @Test(.enabled(if: SHA256.hardwareAvailable, "this CPU has no SHA extensions"))
    func hardwareAgreesWithSwiftOnRandomInputsOfManyLengths() {
        var rng = SplitMix64(state: 42)
        var lengths = Array(0 ... 300)
        lengths += [511, 512, 513, 1023, 1024, 4095, 4096, 65_537, 1 << 20]
        for n in lengths {
            let bytes = (0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &rng) }
            let chunk = [nil, 1, 7, 63, 64, 65, 1000][n % 7]
            #expect(Self.hex(bytes, hardware: true, chunk: chunk) == Self.hex(bytes, hardware: false), "length \(n), chunk \(String(describing: chunk))")
        }
    }
}
