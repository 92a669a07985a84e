import Foundation
import Testing
@testable import ResNetKit

/// Every ``ReadLimits`` entry, lowered below what a real fixture needs, refuses that fixture with
/// an error naming the file, the value found, the limit and the flag; the standard limits read it.
@Suite struct ReadLimitsTests {
    static func fixture(_ relative: String) -> String { Paths.fixtures.appendingPathComponent(relative).path }

    static func lowered(_ change: (inout ReadLimits) -> Void) -> ReadLimits {
        var l = ReadLimits.standard
        change(&l)
        return l
    }

    /// `path` is refused under `limits` with a message naming `flag` and the file, and read under
    /// the standard limits.
    static func expectLimit(_ path: String, _ limits: ReadLimits, flag: String, limitValue: Int,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
        do {
            _ = try loadModel(path: path, limits: limits)
            Issue.record("\(path) was read under lowered \(flag)", sourceLocation: sourceLocation)
        } catch let e as ResNetError {
            #expect(e.exitCode == 3, sourceLocation: sourceLocation)
            let text = e.description
            #expect(text.hasPrefix(path) && text.contains("raise it with \(flag)") && text.contains("limit of \(limitValue)"),
                    "\(text)", sourceLocation: sourceLocation)
        }
        _ = try loadModel(path: path, limits: .standard)
    }

    @Test("largest tensor", arguments: ["keras/kapp-resnet-v1/tfkeras2.model.h5", "keras/kapp-resnet-v1/keras3.keras",
                                        "torch/tv-resnet18-mini/tv-resnet18-mini.pth", "torch/cifar-resnet20-optionA/legacy.th"])
    func tensorBytes(file: String) throws {
        try Self.expectLimit(Self.fixture(file), Self.lowered { $0.maxTensorBytes = 1024 }, flag: "--max-tensor-bytes", limitValue: 1024)
    }

    @Test("total of all tensors", arguments: ["keras/kapp-resnet-v1/tfkeras2.model.h5", "keras/kapp-resnet-v1/keras3.weights.h5",
                                              "torch/tv-resnet18-mini/tv-resnet18-mini.pth"])
    func totalBytes(file: String) throws {
        try Self.expectLimit(Self.fixture(file), Self.lowered { $0.maxTotalBytes = 10_000 }, flag: "--max-total-bytes", limitValue: 10_000)
    }

    @Test func pickleMemo() throws {
        try Self.expectLimit(Self.fixture("torch/tv-resnet18-mini/tv-resnet18-mini.pth"), Self.lowered { $0.maxPickleMemo = 10 },
                             flag: "--max-pickle-memo", limitValue: 10)
    }

    @Test("pickle nesting", arguments: ["torch/tv-resnet18-mini/tv-resnet18-mini.pth", "torch/cifar-resnet20-optionA/whole-module.pth"])
    func pickleDepth(file: String) throws {
        try Self.expectLimit(Self.fixture(file), Self.lowered { $0.maxPickleDepth = 2 }, flag: "--max-pickle-depth", limitValue: 2)
    }

    /// Metadata blocks of every kind: an HDF5 `model_config` attribute, a `.keras` config.json, a
    /// zip `data.pkl`, a legacy stream's pickle, a safetensors header and a `.rnw` manifest.
    @Test func headerBytes() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let torch = Self.fixture("torch/tv-resnet18-mini/tv-resnet18-mini.pth")
        let safetensors = dir.appendingPathComponent("m.safetensors").path
        _ = try exportModel(input: torch, output: safetensors)
        let rnw = dir.appendingPathComponent("m.rnw").path
        try RNWWriter.write(try loadModel(path: torch).model, to: rnw)
        for path in [Self.fixture("keras/kapp-resnet-v1/tfkeras2.model.h5"), Self.fixture("keras/kapp-resnet-v1/keras3.keras"),
                     torch, Self.fixture("torch/cifar-resnet20-optionA/legacy.th"), safetensors, rnw] {
            try Self.expectLimit(path, Self.lowered { $0.maxHeaderBytes = 1000 }, flag: "--max-header-bytes", limitValue: 1000)
        }
    }

    /// Limits set with `apply` reach readers called inside it, and end with it.
    @Test func applyScopesTheLimits() throws {
        let path = Self.fixture("torch/tv-resnet18-mini/tv-resnet18-mini.pth")
        #expect(throws: ResNetError.self) {
            try Self.lowered { $0.maxPickleMemo = 10 }.apply { _ = try readTorchCheckpoint(path: path) }
        }
        _ = try readTorchCheckpoint(path: path)
    }

    @Test func byteCountsParse() {
        #expect(ReadLimits.parseByteCount("512M") == 512 << 20)
        #expect(ReadLimits.parseByteCount("4G") == 4 << 30)
        #expect(ReadLimits.parseByteCount("4gib") == 4 << 30)
        #expect(ReadLimits.parseByteCount("16KB") == 16 << 10)
        #expect(ReadLimits.parseByteCount("1048576") == 1_048_576)
        #expect(ReadLimits.parseByteCount("1T") == 1 << 40)
        for bad in ["", "0", "-1", "1.5G", "G", "4Q", "99999999999T", "٣"] {
            #expect(ReadLimits.parseByteCount(bad) == nil, "\(bad)")
        }
    }

    /// The budget adds charges up (it is not a per-item cap), refuses the one that passes the
    /// multiple of the file size plus the allowance, and names the flag that raises it.
    @Test func theBudgetIsCumulative() throws {
        var limits = ReadLimits.standard
        limits.maxExpansion = 2
        let budget = ReadBudget(file: "f.pth", fileBytes: 1000, limits: limits)
        #expect(budget.capacity == 2000 + ReadBudget.allowanceBytes)
        let half = budget.capacity / 2
        try budget.charge(half, place: "a", what: "tensor 'a'", probe: false)
        try budget.charge(budget.capacity - half, place: "b", what: "tensor 'b'", probe: false)
        do {
            try budget.charge(1, place: "c", what: "tensor 'c'", probe: false)
            Issue.record("charged past the capacity")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3)
            #expect(e.description.hasPrefix("f.pth") && e.description.contains("tensor 'c'")
                    && e.description.contains("raise it with --max-expansion"), "\(e)")
        }
        // Overflowing sums are refused, not wrapped.
        #expect(throws: ResNetError.self) { try budget.charge(Int.max, place: "d", what: "x", probe: false) }
    }
}
