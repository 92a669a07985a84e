import Foundation
import Testing
@testable import ResNetKit

/// Every committed fixture, cut short at many lengths and with single bytes changed at many
/// positions, is either read (a flipped weight is still a weight) or refused with a
/// ``ResNetError``; any other error type, a trap or a hang fails the suite. Positions come from a
/// fixed-seed generator, so a failure names a file and offset that reproduce.
@Suite struct CorruptionSweepTests {
    /// RESNET_SWEEP_SCALE=N multiplies every position count (for long local runs; CI uses 1);
    /// RESNET_SWEEP_TRACE=1 names each variant on stderr before it is read.
    static let scale = max(1, Int(ProcessInfo.processInfo.environment["RESNET_SWEEP_SCALE"] ?? "") ?? 1)

    /// SplitMix64: deterministic positions without Foundation's random sources.
    struct Positions {
        var state: UInt64
        init(name: String) {
            // FNV-1a of the file name: each file gets its own fixed sequence.
            state = name.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        /// Half the positions in the first and last 4 KiB (headers, zip directories,
        /// superblocks, manifests), half anywhere.
        mutating func offsets(_ n: Int, in count: Int) -> [Int] {
            guard count > 0 else { return [] }
            return (0..<n).map { i in
                let r = Int(next() % UInt64(Int.max))
                switch i % 4 {
                case 0: return r % min(count, 4096)
                case 1: return count - 1 - r % min(count, 4096)
                default: return r % count
                }
            }
        }
    }

    /// Truncations (every length in `cuts`, plus a few fixed ones) and byte changes of `data`.
    static func variants(of data: Data, name: String, cuts: Int, flips: Int) -> [(label: String, bytes: Data)] {
        var positions = Positions(name: name)
        var out: [(String, Data)] = []
        let lengths = Set([0, 1, 8, 64, data.count / 2, data.count - 1] + positions.offsets(cuts, in: data.count))
        for n in lengths.sorted() where n >= 0 && n < data.count {
            out.append(("cut at \(n)", data.prefix(n)))
        }
        for p in positions.offsets(flips, in: data.count) {
            var d = data
            let i = d.startIndex + p
            let mask = UInt8(truncatingIfNeeded: positions.next() % 255 + 1)   // never 0: always a change
            d[i] ^= mask
            out.append(("byte \(p) ^ 0x\(String(mask, radix: 16))", d))
        }
        return out
    }

    /// Runs `read` over every variant; anything but success or a ResNetError is recorded.
    static func sweep(_ file: URL, cuts: Int, flips: Int, scale: Int = CorruptionSweepTests.scale,
                      read: (Data, String) throws -> Void) throws -> (read: Int, refused: Int) {
        let data = try Data(contentsOf: file)
        let (cuts, flips) = (cuts * scale, flips * scale)
        var counts = (read: 0, refused: 0)
        let trace = ProcessInfo.processInfo.environment["RESNET_SWEEP_TRACE"] != nil
        for (label, bytes) in variants(of: data, name: file.lastPathComponent, cuts: cuts, flips: flips) {
            // Names each variant before reading it, so a crash (e.g. inside libhdf5) can be located.
            if trace { FileHandle.standardError.write(Data("sweep: \(file.path) \(label)\n".utf8)) }
            do {
                try read(bytes, label)
                counts.read += 1
            } catch is ResNetError {
                counts.refused += 1
            } catch {
                Issue.record("\(file.lastPathComponent), \(label): not a ResNetError: \(type(of: error)): \(error)")
            }
        }
        return counts
    }

    static func files(under dir: String, where keep: (String) -> Bool) -> [URL] {
        let root = Paths.fixtures.appendingPathComponent(dir)
        guard let e = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { return [] }
        return e.compactMap { $0 as? URL }.filter { keep($0.lastPathComponent) }.sorted { $0.path < $1.path }
    }

    /// Writes `bytes` where the path-based loaders can open it.
    static func loadFromDisk(_ bytes: Data, suffix: String, in dir: URL) throws {
        let url = dir.appendingPathComponent("variant" + suffix)
        try bytes.write(to: url)
        _ = try loadModel(path: url.path)
    }

    static func suffix(_ url: URL) -> String {
        let name = url.lastPathComponent
        for s in [".weights.h5", ".h5", ".keras", ".pth", ".pt", ".th", ".rnw"] where name.hasSuffix(s) { return s }
        return ""
    }

    @Test func damagedKerasFilesAreReadOrRefused() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = Self.files(under: "keras") { $0.hasSuffix(".h5") || $0.hasSuffix(".keras") }
            + Self.files(under: "bad") { $0.hasSuffix(".h5") }
        #expect(files.count >= 25)
        var total = (read: 0, refused: 0)
        for f in files {
            let c = try Self.sweep(f, cuts: 8, flips: 12) { bytes, _ in
                try Self.loadFromDisk(bytes, suffix: Self.suffix(f), in: dir)
            }
            total.read += c.read; total.refused += c.refused
        }
        testLog("Keras sweep: \(files.count) files, \(total.read) variants read, \(total.refused) refused")
        #expect(total.refused > 0)
    }

    /// The keras.applications ResNet fixtures at four times the positions of the sweep above
    /// (the scale at which libhdf5's H5HG_read crash was found in `tfkeras2.legacy-weights.h5`):
    /// the crashing variant must be refused through the pre-flight child, like every other.
    @Test func damagedKerasApplicationsFilesAtScale4AreReadOrRefused() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = Self.files(under: "keras/kapp-resnet-v1") { $0.hasSuffix(".h5") || $0.hasSuffix(".keras") }
        #expect(files.count >= 6)
        var total = (read: 0, refused: 0)
        var crashes: [String] = []
        for f in files {
            let c = try Self.sweep(f, cuts: 8, flips: 12, scale: max(4, Self.scale)) { bytes, label in
                do {
                    try Self.loadFromDisk(bytes, suffix: Self.suffix(f), in: dir)
                } catch let e as ResNetError where e.description.contains("libhdf5 crashed") {
                    crashes.append("\(f.lastPathComponent), \(label)")
                    throw e
                }
            }
            total.read += c.read; total.refused += c.refused
        }
        testLog("Keras applications sweep (scale 4): \(files.count) files, \(total.read) read, \(total.refused) refused; libhdf5 crashed in the pre-flight on: \(crashes)")
        #expect(crashes.contains("tfkeras2.legacy-weights.h5, byte 2078 ^ 0x80"))
    }

    @Test func damagedTorchFilesAreReadOrRefused() throws {
        let files = Self.files(under: "torch") { [".pth", ".pt", ".th"].contains(where: $0.hasSuffix) }
        #expect(files.count >= 14)
        var total = (read: 0, refused: 0)
        for f in files {
            let c = try Self.sweep(f, cuts: 24, flips: 40) { bytes, _ in
                let ckpt = try readTorchCheckpoint(data: bytes, name: f.lastPathComponent)
                _ = try mapTorchCheckpoint(ckpt, arch: nil, mapFile: nil)
            }
            total.read += c.read; total.refused += c.refused
        }
        testLog("Torch sweep: \(files.count) files, \(total.read) variants read, \(total.refused) refused")
        #expect(total.refused > 0)
    }

    @Test func damagedGoldenArchivesAreReadOrRefused() throws {
        let files = Self.files(under: "keras") { $0 == "io.npz" } + Self.files(under: "torch") { $0 == "io.npz" }
        #expect(files.count >= 10)
        var total = (read: 0, refused: 0)
        for f in files {
            let c = try Self.sweep(f, cuts: 16, flips: 24) { bytes, _ in _ = try NPZ.read(data: bytes, file: f.path) }
            total.read += c.read; total.refused += c.refused
        }
        testLog("npz sweep: \(files.count) files, \(total.read) variants read, \(total.refused) refused")
        #expect(total.refused > 0)
    }

    /// `.rnw` files made from fixtures of each framework. Every byte of an `.rnw` is covered by a
    /// checksum or checked for zero padding, so every change must be refused.
    @Test func damagedRNWFilesAreRefused() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let sources = ["bad/good.h5", "keras/seed-keras/keras3.keras", "torch/cifar-resnet20-optionA/legacy.th"]
        for source in sources {
            let rnw = dir.appendingPathComponent(URL(fileURLWithPath: source).lastPathComponent + ".rnw")
            let model = try loadModel(path: Paths.fixtures.appendingPathComponent(source).path).model
            try RNWWriter.write(model, to: rnw.path)
            var read = 0
            let c = try Self.sweep(rnw, cuts: 24, flips: 48) { bytes, label in
                _ = try RNWReader(data: bytes, name: rnw.lastPathComponent).model()
                read += 1
                Issue.record("\(rnw.lastPathComponent), \(label): damaged file was accepted")
            }
            #expect(c.read == read)
            testLog("rnw sweep (\(source)): \(c.refused) variants refused")
        }
    }
}

/// The superblock fields checked before libhdf5 parses a file.
@Suite struct HDF5SuperblockTests {
    static func good() throws -> Data {
        try Data(contentsOf: Paths.fixtures.appendingPathComponent("bad/good.h5"))
    }

    static func expectRefused(_ data: Data, mention: String) throws {
        do {
            _ = try HDF5File(bytes: data, name: "damaged.h5")
            Issue.record("damaged superblock was accepted")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3)
            #expect(e.description.contains("superblock"), "\(e)")
            #expect(e.description.contains(mention), "\(e)")
        }
    }

    @Test func anUnknownSuperblockVersionIsRefusedBeforeLibhdf5() throws {
        var d = try Self.good()
        d[8] = 7
        try Self.expectRefused(d, mention: "version 7")
    }

    @Test func anImpossibleOffsetSizeIsRefused() throws {
        var d = try Self.good()
        let version = d[8]
        d[version <= 1 ? 13 : 9] = 3
        try Self.expectRefused(d, mention: "size of offsets is 3")
    }

    @Test func anImpossibleLengthSizeIsRefused() throws {
        var d = try Self.good()
        let version = d[8]
        d[version <= 1 ? 14 : 10] = 0
        try Self.expectRefused(d, mention: "size of lengths is 0")
    }

    @Test func aSignatureWithoutASuperblockIsRefused() throws {
        try Self.expectRefused(try Self.good().prefix(12), mention: "truncated")
    }
}

/// Found by the CLI sweep under ASan: one changed byte in an object header makes libhdf5 ask
/// malloc for about 6.5 EB (`H5C_load_entry`). The allocation fails and libhdf5 reports it, so the
/// file is refused. A smaller bogus size would be attempted too, in the reader child, where its
/// address-space limit bounds it (see docs/SECURITY.md, "libhdf5 runs in a sandbox").
@Test func anHDF5ObjectHeaderWithAnAbsurdChunkSizeIsRefused() throws {
    var data = try Data(contentsOf: Paths.fixtures.appendingPathComponent("keras/nested-keras3/keras3.model.h5"))
    data[1783] ^= 0x5A
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("flipped.h5").path
    try data.write(to: URL(fileURLWithPath: path))
    #expect {
        _ = try loadModel(path: path)
    } throws: { error in
        (error as? ResNetError)?.description.contains("memory allocation failed") == true
    }
}

/// A pre-flight walk that does not finish in time is stopped and the file refused: a file that
/// makes libhdf5 loop is an error too. (No real file is known to hang libhdf5; a zero timeout
/// stands in for one.) A good file passes the pre-flight.
@Test func anHDF5PreflightThatTimesOutRefusesTheFile() throws {
    let path = Paths.fixtures.appendingPathComponent("bad/good.h5").path
    let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
    let budget = ReadBudget(file: path, fileBytes: size)
    try HDF5File.preflight(name: path, path: path, image: nil, budget: budget)
    #expect {
        try HDF5File.preflight(name: path, path: path, image: nil, budget: budget, timeout: 0)
    } throws: { error in
        guard let e = error as? ResNetError else { return false }
        return e.exitCode == 3 && e.description.contains("did not finish parsing the file's metadata within 0.0 s")
    }
}

/// Found by the sweep at RESNET_SWEEP_SCALE=4: single flipped bytes that make libhdf5 1.10.8
/// segfault while parsing metadata. At 2078 and 4054 a global-heap object is corrupted and
/// H5HG_read overruns (a memcpy while converting the variable-length `layer_names` strings in
/// H5Aread); at 4089 a symbol-table B-tree node is corrupted and H5B_iterate crashes in
/// H5Gget_info. The pre-flight child walks the same metadata, dies, and the file is refused
/// instead of the process. Whether libhdf5 crashes on a damaged file can depend on the memory it
/// reuses (its free lists hand out blocks without clearing them), so in a long-lived process the
/// child may instead see a libhdf5 error, or nothing wrong at all (4089 was read in one run);
/// only 2078 has crashed in every run so far, and the test insists on the crash message for it
/// alone. The others must be read or refused with a ResNetError, never kill the process.
@Test(arguments: [("kapp-resnet-v1/tfkeras2.legacy-weights.h5", 2078, 0x80 as UInt8, true),
                  ("kapp-resnet-v1/tfkeras2.legacy-weights.h5", 4054, 0x43, false),
                  ("kapp-resnet-v1/keras3.weights.h5", 4089, 0xED, false)])
func anHDF5FileThatCrashesLibhdf5IsRefused(file: String, offset: Int, mask: UInt8, alwaysCrashes: Bool) throws {
    var data = try Data(contentsOf: Paths.fixtures.appendingPathComponent("keras/" + file))
    data[offset] ^= mask
    let dir = try Paths.temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: dir) }
    let path = dir.appendingPathComponent("flipped.h5").path
    try data.write(to: URL(fileURLWithPath: path))
    for read in [{ _ = try readKerasFile(path: path) }, { _ = try HDF5File(bytes: data, name: "flipped.h5") }] {
        if !alwaysCrashes {
            do { try read() } catch is ResNetError {}
            continue
        }
        #expect {
            try read()
        } throws: { error in
            guard let e = error as? ResNetError else { return false }
            return e.exitCode == 3 && e.description.contains("flipped.h5")
                && e.description.contains("libhdf5 crashed with signal \(SIGSEGV)") && e.description.contains("malformed")
        }
    }
}
