import Foundation
import Testing
@testable import ResNetKit

/// Wrong readings of a real model's structure, made by editing its spec: what a reader could get
/// wrong when the weights cannot show it.
enum WrongVariant: String, CaseIterable {
    case stemStride = "stem conv stride 1<->2"
    case stemMaxPool = "stem max pool added/removed"
    case noPostReLU = "no ReLU after the add"
    case splitBefore = "option-A zeros all before"
    case splitAfter = "option-A zeros all after"
    case strideOtherConv = "stride on the other conv"
    case softmax = "softmax added/removed"

    /// The variant of `model`, or nil when it does not apply (e.g. no option-A shortcut).
    func apply(to model: ResNetModel) -> ResNetModel? {
        var spec = model.spec
        switch self {
        case .stemStride:
            guard let i = spec.stem.firstIndex(where: { if case .conv = $0 { return true }; return false }),
                  case var .conv(c) = spec.stem[i] else { return nil }
            c.stride = c.stride == [1, 1] ? [2, 2] : [1, 1]
            spec.stem[i] = .conv(c)
        case .stemMaxPool:
            if let i = spec.stem.firstIndex(where: { if case .maxPool = $0 { return true }; return false }) {
                spec.stem.remove(at: i)
                // Keras puts the pool's padding in a ZeroPadding2D right before it.
                if i > 0, case .zeroPad = spec.stem[i - 1] { spec.stem.remove(at: i - 1) }
            } else {
                spec.stem.append(.maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .symmetric(1))))
            }
        case .noPostReLU:
            var changed = false
            for s in spec.stages.indices {
                for b in spec.stages[s].blocks.indices {
                    let before = spec.stages[s].blocks[b].post.count
                    spec.stages[s].blocks[b].post.removeAll { $0 == .relu }
                    changed = changed || spec.stages[s].blocks[b].post.count != before
                }
            }
            if !changed { return nil }
        case .splitBefore, .splitAfter:
            var changed = false
            for s in spec.stages.indices {
                for b in spec.stages[s].blocks.indices {
                    spec.stages[s].blocks[b].shortcut = spec.stages[s].blocks[b].shortcut.map { op in
                        guard case let .channelPad(before, after) = op, before + after > 0 else { return op }
                        let moved: Op = self == .splitBefore ? .channelPad(before: before + after, after: 0) : .channelPad(before: 0, after: before + after)
                        changed = changed || moved != op
                        return moved
                    }
                }
            }
            if !changed { return nil }
        case .strideOtherConv:
            var changed = false
            for s in spec.stages.indices {
                for b in spec.stages[s].blocks.indices {
                    var ops = spec.stages[s].blocks[b].residual
                    let convs = ops.indices.filter { if case .conv = ops[$0] { return true }; return false }
                    guard let strided = convs.first(where: { if case let .conv(c) = ops[$0] { return c.stride != [1, 1] }; return false }),
                          convs.count >= 2, case var .conv(from) = ops[strided] else { continue }
                    let other = strided == convs[0] ? convs[1] : convs[0]
                    guard case var .conv(to) = ops[other] else { continue }
                    (to.stride, from.stride) = (from.stride, [1, 1])
                    ops[strided] = .conv(from); ops[other] = .conv(to)
                    spec.stages[s].blocks[b].residual = ops
                    changed = true
                }
            }
            if !changed { return nil }
        case .softmax:
            if spec.head.last == .softmax { spec.head.removeLast() } else { spec.head.append(.softmax) }
        }
        return ResNetModel(spec: spec, tensors: model.tensors)
    }
}

@Suite struct PlausibilityTests {
    /// Real checkpoints others trained, which convert without goldens today.
    static let realCheckpoints = [
        "akamaster-resnet20/resnet20-12fca82f.th",
        "akamaster-resnet56/resnet56-4bfd9763.th",
        "bognev-pruning/checkpoint.th",
        "atreides-basic-ic/resnet_neo_v1_5e4_20.pth",
        "ehanw-advrob/resnet20.pth",
        "mlcommons-tiny/pretrainedResnet.h5",
        "leogem-keras-injector/ResNet20.keras",
    ]

    @Test("synthetic images are deterministic, in [0, 1], and near ImageNet's channel statistics")
    func syntheticImagesLookLikePhotographs() {
        let a = Plausibility.syntheticImages(count: 16, channels: 3, height: 32, width: 32, seed: 7)
        let b = Plausibility.syntheticImages(count: 16, channels: 3, height: 32, width: 32, seed: 7)
        #expect(a == b)
        #expect(a.data.allSatisfy { $0 >= 0 && $0 <= 1 })
        let s = Plausibility.scaled(a, to: .standardized)
        for c in 0..<3 {
            var values: [Double] = []
            for n in 0..<16 { values += s.data[(n * 3 + c) * 1024..<(n * 3 + c + 1) * 1024].map(Double.init) }
            let mean = values.reduce(0, +) / Double(values.count)
            let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
            #expect(abs(mean) < 0.35 && std > 0.6 && std < 1.4, "channel \(c): mean \(mean), std \(std)")
        }
        // Neighbouring pixels are strongly correlated, as in photographs (white noise would give 0).
        var num = 0.0, den = 0.0
        let m = a.data.map(Double.init).reduce(0, +) / Double(a.count)
        for i in 0..<(a.count - 1) where (i % 32) != 31 {
            num += (Double(a.data[i]) - m) * (Double(a.data[i + 1]) - m)
            den += (Double(a.data[i]) - m) * (Double(a.data[i]) - m)
        }
        #expect(num / den > 0.8, "lag-1 correlation \(num / den)")
    }

    @Test("calibration: each real checkpoint beats every wrong reading of its structure")
    func realCheckpointsBeatWrongVariants() throws {
        var rows: [String] = []
        for file in Self.realCheckpoints {
            guard let path = Paths.externalFile(file) else { continue }
            let model = try loadModel(path: path).model
            let start = Date()
            let right = try Plausibility.check(model)
            let seconds = Date().timeIntervalSince(start)
            rows.append("| \(file) | as read | \(String(format: "%.3f", right.score)) | - | \(right.inputScale?.rawValue ?? "-") | worst \(right.worst?.name ?? "-") \(String(format: "%.2f", right.worst?.score ?? .nan)); \(String(format: "%.2f", seconds)) s |")
            #expect(right.evidence, "\(file): \(right.reason ?? "")")
            for variant in WrongVariant.allCases {
                guard let wrong = variant.apply(to: model) else { continue }
                let result: PlausibilityResult
                do { result = try Plausibility.check(wrong) } catch {
                    rows.append("| \(file) | \(variant.rawValue) | cannot run | - | - | \(error) |"); continue
                }
                let ratio = Plausibility.pairedRatio(right, result)
                // Where the weights' BN statistics cannot see the difference, the ratio stays near 1 and
                // must not look decisive; everywhere else the real structure must win decisively.
                if variant == .strideOtherConv || variant == .softmax {
                    #expect(max(ratio, 1 / ratio) < Plausibility.decisiveMargin, "\(file) \(variant.rawValue): \(ratio)")
                } else {
                    #expect(ratio >= Plausibility.decisiveMargin, "\(file) \(variant.rawValue): \(ratio)")
                }
                rows.append("| \(file) | \(variant.rawValue) | \(String(format: "%.3f", result.score)) | \(String(format: "%.2f", ratio)) | \(result.inputScale?.rawValue ?? "-") | worst \(result.worst?.name ?? "-") \(String(format: "%.2f", result.worst?.score ?? .nan)) |")
            }
        }
        testLog("| file | structure | score | ratio to right | input scale | note |\n|---|---|---|---|---|---|\n" + rows.joined(separator: "\n"))
    }
}

extension PlausibilityTests {
    @Test("rank picks the real structure decisively and says when it cannot decide")
    func rankNamesWinnerAndMargin() throws {
        guard let path = Paths.externalFile("akamaster-resnet20/resnet20-12fca82f.th") else { return }
        let model = try loadModel(path: path).model
        let noReLU = try #require(WrongVariant.noPostReLU.apply(to: model))
        let split = try #require(WrongVariant.splitBefore.apply(to: model))
        let ranking = Plausibility.rank(candidates: [noReLU, split, model])
        #expect(ranking.evidence && ranking.winner == 2 && ranking.decisive, "\(ranking.text)")
        #expect(ranking.order == [2, 1, 0])
        #expect(ranking.text.contains("candidate 3 fits"))
        let softmax = try #require(WrongVariant.softmax.apply(to: model))
        let tie = Plausibility.rank(candidates: [model, softmax])
        #expect(tie.evidence && tie.margin == 1 && !tie.decisive, "\(tie.text)")
    }

    @Test("a candidate that cannot run is ranked last without evidence")
    func unrunnableCandidateIsRankedLast() throws {
        guard let path = Paths.externalFile("mlcommons-tiny/pretrainedResnet.h5") else { return }
        let model = try loadModel(path: path).model
        let strided = try #require(WrongVariant.stemStride.apply(to: model))
        let ranking = Plausibility.rank(candidates: [strided, model])
        #expect(ranking.winner == 1 && ranking.order == [1, 0])
        #expect(!ranking.results[0].evidence && ranking.results[0].reason?.hasPrefix("cannot run") == true)
    }

    @Test("untrained BatchNorm statistics or no BatchNorm give no evidence")
    func untrainedStatisticsGiveNoEvidence() throws {
        let path = Paths.fixtures.appendingPathComponent("torch/cifar-resnet20-optionB/cifar-resnet20-optionB.pth").path
        var model = try loadModel(path: path).model
        for case let .batchNorm(b) in model.spec.allOps {
            model.tensors["\(b.name).running_mean"] = Tensor(zeros: [b.channels])
            model.tensors["\(b.name).running_var"] = Tensor(shape: [b.channels], data: [Float](repeating: 1, count: b.channels))
        }
        let fresh = try Plausibility.check(model)
        #expect(!fresh.evidence && fresh.score.isNaN && fresh.reason?.contains("untrained") == true)
        let ranking = Plausibility.rank(candidates: [model, model])
        #expect(!ranking.evidence && ranking.winner == nil && !ranking.decisive)
        #expect(ranking.text.contains("no evidence"))

        let plain = randomModel(spec(channels: 3, stem: [conv("c", 3, 4, k: 3, padding: .symmetric(1)), .relu]), seed: 3)
        let none = try Plausibility.check(plain, options: .init(size: [8, 8]))
        #expect(!none.evidence && none.reason == "the model has no BatchNorm")
    }

    @Test("every BatchNorm is observed once, stem to head, including shortcut BNs")
    func everyBatchNormIsObserved() throws {
        let path = Paths.fixtures.appendingPathComponent("torch/cifar-resnet20-optionB/cifar-resnet20-optionB.pth").path
        let model = try loadModel(path: path).model
        let result = try Plausibility.check(model)
        let names = model.spec.allOps.compactMap { op -> String? in if case let .batchNorm(b) = op { return b.name }; return nil }
        #expect(result.batchNorms.map(\.name) == names)
        #expect(names.contains("layer2.0.downsample.1"))
        #expect(result.imageShape == [8, 3, 32, 32])
    }

    @Test("the input scale that fits the first BatchNorm is found")
    func inputScaleIsFound() throws {
        for (file, scale) in [("akamaster-resnet20/resnet20-12fca82f.th", InputScale.standardized),
                              ("mlcommons-tiny/pretrainedResnet.h5", .byte)] {
            guard let path = Paths.externalFile(file) else { continue }
            let result = try Plausibility.check(try loadModel(path: path).model)
            #expect(result.inputScale == scale, "\(file): \(result.scaleScores)")
        }
    }
}

extension PlausibilityTests {
    @Test("the check of a bottleneck ResNet-50 layout stays bounded")
    func bottleneckCheckIsBounded() throws {
        let path = Paths.fixtures.appendingPathComponent("torch/tv-resnet50-mini/tv-resnet50-mini.pth").path
        let model = try loadModel(path: path).model
        let start = Date()
        let result = try Plausibility.check(model)
        let seconds = Date().timeIntervalSince(start)
        testLog("plausibility check of tv-resnet50-mini at \(result.imageShape): \(String(format: "%.2f", seconds)) s")
        #expect(Plausibility.imageSizes(for: model.spec).contains(Array(result.imageShape.suffix(2))), "\(result.imageShape)")
        #expect(result.batchNorms.count == model.spec.allOps.filter { if case .batchNorm = $0 { return true }; return false }.count)
    }
}
