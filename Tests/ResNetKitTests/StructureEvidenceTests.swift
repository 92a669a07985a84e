import Foundation
import Testing
@testable import ResNetKit

/// Evidence beyond names and shapes: hyper-parameters a whole pickled module records, the stem
/// convention, and notes that describe the structure actually built.
@Suite struct StructureEvidenceTests {
    static func recognition(_ name: String, _ file: String = "model.pth") -> String {
        Paths.fixtures.appendingPathComponent("recognition/\(name)/\(file)").path
    }

    @Test("a whole pickled module's Softmax child and conv strides constrain the candidates")
    func recordedHyperParametersConstrainCandidates() throws {
        let loaded = try loadModel(path: Self.recognition("whole-module-resnet8", "resnet8.pt"))
        #expect(loaded.model.spec.head.last == .softmax, "\(loaded.model.spec.head)")
        #expect(loaded.notes.contains { $0.hasPrefix("module tree: the recorded hyper-parameters") && $0.contains("a Softmax") }, "\(loaded.notes)")
        // Every remaining candidate keeps the softmax and the recorded strides.
        for c in loaded.candidates {
            #expect(c.model.spec.head.last == .softmax, "\(c.summary)")
            #expect(c.choices.contains("stem stride 1"), "\(c.summary)")
        }
        let recorded = RecordedStructure(loaded.candidates.isEmpty ? [] : [TorchModuleInfo(path: "conv", className: "torch.nn.modules.conv.Conv2d", ints: ["stride": [2, 2]])])
        if let first = loaded.candidates.first {
            #expect(recorded.contradictions(first.model, mapping: first.mapping) == ["conv strides 2x2, not 1x1"])
        }
    }

    @Test("the absence of a module proves nothing: a state dict keeps every candidate")
    func absenceIsNoEvidence() throws {
        let loaded = try loadModel(path: Self.recognition("head-flatten-dropout"))
        #expect(!loaded.notes.contains { $0.hasPrefix("module tree:") })
        #expect(loaded.candidates.contains { $0.model.spec.head.last == .softmax })
        let (kept, note) = applyRecordedStructure(loaded.candidates, modules: [])
        #expect(kept.count == loaded.candidates.count && note == nil)
    }

    @Test("a single 3x3 stem conv named like torchvision's is read with stride 1, and the note says why")
    func cifarStemConvention() throws {
        let loaded = try loadModel(path: Self.recognition("tv-names-cifar-stem"))
        guard case let .conv(c)? = loaded.model.spec.stem.first(where: { if case .conv = $0 { return true } else { return false } }) else {
            Issue.record("no stem conv"); return
        }
        #expect(c.kernel == [3, 3] && c.stride == [1, 1])
        #expect(loaded.notes.contains { $0.hasPrefix("stem: a single 3x3 conv is read with stride 1") }, "\(loaded.notes)")
        // A 7x7 stem keeps its stride.
        let imagenet = try loadModel(path: Self.recognition("pt-examples-ckpt", "checkpoint.pth.tar"))
        #expect(!imagenet.notes.contains { $0.hasPrefix("stem:") })
    }

    @Test("the shortcut note describes the ops of the spec, whatever built it")
    func shortcutNoteFollowsTheSpec() throws {
        let loaded = try loadModel(path: Self.recognition("proj-3x3-s2"))
        #expect(loaded.notes.contains("shortcuts: 3x3 conv stride 2 + BN; identity in the other blocks"), "\(loaded.notes)")
        var spec = loaded.model.spec
        for s in spec.stages.indices { for b in spec.stages[s].blocks.indices where !spec.stages[s].blocks[b].shortcut.isEmpty {
            spec.stages[s].blocks[b].shortcut = [.subsample(stride: 2), .channelPad(before: 2, after: 2)]
        } }
        #expect(shortcutNote(spec) == "shortcuts: subsample by 2 + zero channels (2 before, 2 after); identity in the other blocks")
    }

    @Test("without goldens, choices the statistics cannot see are named as not checked")
    func unseenChoicesAreNamed() throws {
        let settled = try settleStructure(try loadModel(path: Self.recognition("bottleneck-v1")), goldens: nil)
        let note = try #require(settled.notes.first { $0.hasPrefix("not checked without goldens") })
        #expect(note.contains("stem stride 2") && note.contains("head: logits") && !note.contains("bottleneck"), "\(note)")
        // The v1 bottleneck (stride on the first 1x1) is found by the statistics.
        #expect(settled.notes.contains { $0.contains("bottleneck stride on the first 1x1 conv instead of bottleneck stride on the 3x3 conv") }, "\(settled.notes)")
    }
}
