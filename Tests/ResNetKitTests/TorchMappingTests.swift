import Foundation
import Testing
@testable import ResNetKit

/// A state dict written key by key, with deterministic values, in the order PyTorch saves modules.
struct StateDict {
    var tensors: [SourceTensor] = []
    private var seed: Float = 0.1

    private mutating func values(_ n: Int, positive: Bool = false) -> [Float] {
        (0..<n).map { _ in seed += 0.37; return positive ? 1 + 0.5 * sin(seed) : 0.2 * sin(seed) }
    }
    mutating func add(_ name: String, _ shape: [Int], positive: Bool = false) {
        tensors.append(SourceTensor(name: name, sourceDType: .float32, tensor: Tensor(shape: shape, data: values(shape.reduce(1, *), positive: positive))))
    }
    mutating func conv(_ name: String, _ out: Int, _ inPerGroup: Int, _ k: Int, bias: Bool = false) {
        add("\(name).weight", [out, inPerGroup, k, k])
        if bias { add("\(name).bias", [out]) }
    }
    mutating func bn(_ name: String, _ c: Int, counter: Bool = false) {
        add("\(name).weight", [c], positive: true); add("\(name).bias", [c])
        add("\(name).running_mean", [c]); add("\(name).running_var", [c], positive: true)
        if counter { tensors.append(SourceTensor(name: "\(name).num_batches_tracked", sourceDType: .int64, tensor: Tensor(shape: [], data: [7]))) }
    }
    mutating func linear(_ name: String, _ out: Int, _ inF: Int) {
        add("\(name).weight", [out, inF]); add("\(name).bias", [out])
    }
    func removing(_ key: String) -> StateDict {
        var s = self; s.tensors.removeAll { $0.name == key }; return s
    }
    func checkpoint(_ path: String = "synthetic.pth") -> TorchCheckpoint {
        TorchCheckpoint(path: path, container: "synthetic", tensors: tensors, notes: [], ignored: [])
    }

    /// torchvision's module names (resnet / wide / resnext by width and groups).
    static func torchvision(blocks: [Int], bottleneck: Bool, width: Int = 8, groups: Int = 1, widthPerGroup: Int = 8,
                            classes: Int = 5, counters: Bool = false) -> StateDict {
        var sd = StateDict()
        sd.conv("conv1", width, 3, 7); sd.bn("bn1", width, counter: counters)
        var inC = width
        for (s, n) in blocks.enumerated() {
            let planes = width << s
            for b in 0..<n {
                let p = "layer\(s + 1).\(b)"
                let outC: Int
                if bottleneck {
                    let w = planes * widthPerGroup / width * groups
                    outC = planes * 4
                    sd.conv("\(p).conv1", w, inC, 1); sd.bn("\(p).bn1", w, counter: counters)
                    sd.conv("\(p).conv2", w, w / groups, 3); sd.bn("\(p).bn2", w, counter: counters)
                    sd.conv("\(p).conv3", outC, w, 1); sd.bn("\(p).bn3", outC, counter: counters)
                } else {
                    outC = planes
                    sd.conv("\(p).conv1", outC, inC, 3); sd.bn("\(p).bn1", outC, counter: counters)
                    sd.conv("\(p).conv2", outC, outC, 3); sd.bn("\(p).bn2", outC, counter: counters)
                }
                if b == 0 && (s > 0 || inC != outC) {
                    sd.conv("\(p).downsample.0", outC, inC, 1); sd.bn("\(p).downsample.1", outC, counter: counters)
                }
                inC = outC
            }
        }
        sd.linear("fc", classes, inC)
        return sd
    }

    /// akamaster/pytorch_resnet_cifar10 names; option B adds `shortcut.0/1`.
    static func akamaster(n: Int, width: Int = 8, optionB: Bool = false) -> StateDict {
        var sd = StateDict()
        sd.conv("conv1", width, 3, 3); sd.bn("bn1", width)
        var inC = width
        for s in 0..<3 {
            let planes = width << s
            for b in 0..<n {
                let p = "layer\(s + 1).\(b)"
                sd.conv("\(p).conv1", planes, inC, 3); sd.bn("\(p).bn1", planes)
                sd.conv("\(p).conv2", planes, planes, 3); sd.bn("\(p).bn2", planes)
                if optionB && inC != planes { sd.conv("\(p).shortcut.0", planes, inC, 1); sd.bn("\(p).shortcut.1", planes) }
                inC = planes
            }
        }
        sd.linear("linear", 10, inC)
        return sd
    }
}

@Suite struct TorchMappingTests {
    private func map(_ sd: StateDict, arch: String? = nil, mapFile: String? = nil) throws -> (model: ResNetModel, origins: [TensorOrigin], notes: [String]) {
        try mapTorchCheckpoint(sd.checkpoint(), arch: arch, mapFile: mapFile)
    }

    private func mappingError(_ body: () throws -> Void) -> String {
        do { try body() } catch let e as ResNetError {
            if case .mapping = e { return e.description }
            return "wrong error kind: \(e)"
        } catch { return "unexpected error \(error)" }
        return "no error"
    }

    private func convs(_ ops: [Op]) -> [ConvOp] {
        ops.compactMap { if case let .conv(c) = $0 { return c } else { return nil } }
    }

    @Test func torchvisionBasicBlocksGetTheirStridesOnConv1AndAProjectionWhereTheShapeChanges() throws {
        let r = try map(.torchvision(blocks: [2, 2, 2, 2], bottleneck: false))
        let spec = r.model.spec
        #expect(r.notes.first?.hasPrefix("naming scheme 'torchvision' detected: 102 of 102 keys mapped") == true, "\(r.notes)")
        #expect(spec.stages.map { $0.blocks.count } == [2, 2, 2, 2])
        #expect(spec.stem.count == 4)
        #expect(spec.stem[3] == .maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .symmetric(1))))
        #expect(convs(spec.stem).first?.stride == [2, 2] && convs(spec.stem).first?.padding == .symmetric(3))
        let l2 = spec.stages[1].blocks[0]
        #expect(convs(l2.residual).map(\.stride) == [[2, 2], [1, 1]])
        #expect(convs(l2.shortcut).map(\.name) == ["layer2.0.downsample.0"])
        #expect(spec.stages[0].blocks[0].shortcut.isEmpty)
        #expect(l2.post == [.relu])
        #expect(spec.head.first == .globalAvgPool)
        #expect(spec.classes == 5 && spec.inputChannels == 3)
    }

    @Test func bottlenecksCarryTheStrideOnConv2AndGroupsComeFromConv2sShape() throws {
        let r = try map(.torchvision(blocks: [1, 2, 1, 1], bottleneck: true, groups: 4, widthPerGroup: 2))
        let block = r.model.spec.stages[1].blocks[0]
        #expect(convs(block.residual).map(\.stride) == [[1, 1], [2, 2], [1, 1]])
        #expect(convs(block.residual).map(\.groups) == [1, 4, 1])
        #expect(r.notes.contains { $0.contains("bottleneck blocks") && $0.contains("groups 1/4") }, "\(r.notes)")
    }

    @Test func torchvisionNamesAreAlreadyCanonicalSoEveryOriginKeepsItsKeyAndLayout() throws {
        let sd = StateDict.torchvision(blocks: [1, 1, 1, 1], bottleneck: false)
        let r = try map(sd)
        #expect(r.origins.count == sd.tensors.count)
        #expect(r.origins.allSatisfy { $0.canonical == $0.source && $0.transform.isEmpty })
        for t in sd.tensors { #expect(r.model.tensors[t.name] == t.tensor) }
    }

    @Test func numBatchesTrackedIsIgnoredAndReported() throws {
        let r = try map(.torchvision(blocks: [1, 1, 1, 1], bottleneck: false, counters: true))
        #expect(r.notes.contains("ignored keys: 12 num_batches_tracked"), "\(r.notes)")
    }

    @Test func optionAShortcutsSubsampleAndPadChannelsEvenly() throws {
        let r = try map(.akamaster(n: 3))
        let spec = r.model.spec
        #expect(r.notes.first?.contains("'cifar-akamaster'") == true)
        #expect(spec.stages.map { $0.blocks.count } == [3, 3, 3])
        #expect(spec.stages[1].blocks[0].shortcut == [.subsample(stride: 2), .channelPad(before: 4, after: 4)])
        #expect(spec.stages[2].blocks[0].shortcut == [.subsample(stride: 2), .channelPad(before: 8, after: 8)])
        #expect(convs(spec.stages[1].blocks[0].residual).map(\.stride) == [[2, 2], [1, 1]])
        #expect(convs(spec.stem).first?.stride == [1, 1])
        #expect(!spec.stem.contains { if case .maxPool = $0 { return true } else { return false } })
        #expect(r.origins.last?.source == "linear.bias" && r.origins.last?.canonical == "fc.bias")
        #expect(spec.inputSize == [32, 32])
    }

    @Test func optionBShortcutsBecomeTheCanonicalDownsample() throws {
        let r = try map(.akamaster(n: 2, optionB: true))
        let block = r.model.spec.stages[1].blocks[0]
        #expect(block.shortcut.compactMap(\.moduleName) == ["layer2.0.downsample.0", "layer2.0.downsample.1"])
        #expect(r.origins.contains { $0.source == "layer2.0.shortcut.1.running_var" && $0.canonical == "layer2.0.downsample.1.running_var" })
    }

    @Test func aFlatBlockListSplitsIntoStagesWhereTheChannelCountChanges() throws {
        var sd = StateDict()
        sd.conv("conv0", 8, 3, 3, bias: true); sd.bn("bn0", 8)
        var inC = 8
        for i in 0..<9 {
            let out = 8 << (i / 3)
            sd.conv("convs.\(i).conv1", out, inC, 3, bias: true); sd.bn("convs.\(i).bn1", out)
            sd.conv("convs.\(i).conv2", out, out, 3, bias: true); sd.bn("convs.\(i).bn2", out)
            inC = out
        }
        sd.linear("fc", 10, inC)
        let r = try map(sd)
        let spec = r.model.spec
        #expect(spec.stages.map { $0.blocks.count } == [3, 3, 3])
        #expect(spec.stages[1].blocks[0].shortcut == [.avgPool(PoolOp(kernel: [2, 2], stride: [2, 2])), .channelPad(before: 4, after: 4)])
        #expect(spec.head == [.avgPool(PoolOp(kernel: [8, 8], stride: [8, 8])), .flatten(.chw), .dense(DenseOp(name: "fc", inFeatures: 32, outFeatures: 10, bias: true))])
        #expect(convs(spec.allOps).allSatisfy { $0.bias })
        #expect(r.origins.contains { $0.source == "convs.4.bn2.bias" && $0.canonical == "layer2.1.bn2.bias" })
        #expect(spec.inputSize == [32, 32])
    }

    @Test func theSeedModelHasReluBeforeBNAReluShortcutAndNoReluAfterTheAdd() throws {
        var sd = StateDict()
        sd.conv("conv1", 8, 3, 7, bias: true)
        var inC = 8
        for (s, n) in [3, 4, 6, 3].enumerated() {
            let f = 8 << s
            for b in 0..<n {
                let p = "conv\(s + 2).\(b)"
                sd.conv("\(p).layer1.0", f, b == 0 ? inC : f, 3, bias: true); sd.bn("\(p).layer1.2", f)
                sd.conv("\(p).layer2.0", f, f, 3, bias: true); sd.bn("\(p).layer2.2", f)
                if b == 0 && s > 0 { sd.conv("\(p).shortcut.0", f, inC, 1, bias: true) }
            }
            inC = f
        }
        sd.linear("classifier", 10, inC)
        let spec = try map(sd).model.spec
        #expect(spec.stem.count == 2)
        #expect(spec.stem[1] == .maxPool(PoolOp(kernel: [3, 3], stride: [2, 2], padding: .valid)))
        let b = spec.stages[1].blocks[0]
        #expect(b.residual.map { $0.moduleKind ?? "\($0)" } == ["conv", "relu", "batch_norm", "conv", "relu", "batch_norm"])
        #expect(b.shortcut.count == 2 && b.shortcut[1] == .relu)
        #expect(spec.stages.allSatisfy { $0.blocks.allSatisfy { $0.post.isEmpty } })
        #expect(convs(b.shortcut).first?.stride == [2, 2] && convs(b.shortcut).first?.bias == true)
    }

    @Test func timmsDeepStemIsBuiltInSequentialOrder() throws {
        var sd = StateDict.torchvision(blocks: [1, 1, 1, 1], bottleneck: false)
        sd.tensors.removeAll { $0.name == "conv1.weight" }
        var stem = StateDict()
        stem.conv("conv1.0", 4, 3, 3); stem.bn("conv1.1", 4)
        stem.conv("conv1.3", 4, 4, 3); stem.bn("conv1.4", 4)
        stem.conv("conv1.6", 8, 4, 3)
        sd.tensors = stem.tensors + sd.tensors
        let r = try map(sd)
        #expect(r.notes.first?.contains("'timm-deep-stem'") == true)
        #expect(convs(r.model.spec.stem).map(\.name) == ["conv1.0", "conv1.3", "conv1.6"])
        #expect(convs(r.model.spec.stem).map(\.stride) == [[2, 2], [1, 1], [1, 1]])
    }

    @Test func aKeyNoRuleMapsIsAnErrorThatListsIt() {
        var sd = StateDict.torchvision(blocks: [1, 1, 1, 1], bottleneck: false)
        sd.add("aux_head.weight", [3, 3])
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("does not map aux_head.weight"), "\(message)")
    }

    @Test func aMissingTensorIsAnErrorNamingTheSourceKey() {
        let sd = StateDict.torchvision(blocks: [1, 1, 1, 1], bottleneck: false).removing("layer3.0.bn2.running_var")
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("missing keys: layer3.0.bn2.running_var"), "\(message)")
    }

    @Test func aMissingModuleIsNamedInTheSourceScheme() {
        var sd = StateDict()
        sd.conv("conv_1", 8, 3, 3); sd.bn("bn_1", 8)
        var inC = 8
        for s in 0..<3 {
            for b in 0..<2 {
                let out = 8 << s
                sd.conv("stage_\(s + 1).\(b).conv_1", out, inC, 3); sd.bn("stage_\(s + 1).\(b).bn_1", out)
                sd.conv("stage_\(s + 1).\(b).conv_2", out, out, 3)
                if !(s == 1 && b == 1) { sd.bn("stage_\(s + 1).\(b).bn_2", out) }
                if b == 0 && s > 0 { sd.conv("stage_\(s + 1).0.downsample.0", out, inC, 1); sd.bn("stage_\(s + 1).0.downsample.1", out) }
                inC = out
            }
        }
        sd.linear("fc", 10, inC)
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("stage_2.1.bn_2.running_mean"), "\(message)")
        // With the BN present the same layout maps.
        var complete = sd
        complete.bn("stage_2.1.bn_2", 16)
        #expect(throws: Never.self) { _ = try map(complete) }
    }

    @Test func aShapeMismatchNamesTheKeyAndBothShapes() {
        var sd = StateDict.torchvision(blocks: [1, 1, 1, 1], bottleneck: false)
        let i = sd.tensors.firstIndex { $0.name == "layer2.0.bn1.running_mean" }!
        sd.tensors[i].tensor = Tensor(zeros: [15])
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("layer2.0.bn1.running_mean has shape [15], expected [16]"), "\(message)")
    }

    @Test func aClassifierThatDoesNotFitTheFeaturesIsRefused() {
        var sd = StateDict.torchvision(blocks: [1, 1, 1, 1], bottleneck: false)
        sd.tensors.removeAll { $0.name.hasPrefix("fc.") }
        sd.linear("fc", 5, 63)
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("fc.weight has shape [5, 63], expected (classes, 64)"), "\(message)")
    }

    @Test func schemesThatMapEquallyAreRefusedListingTheCandidates() {
        var sd = StateDict()
        sd.conv("conv1", 8, 3, 3); sd.bn("bn1", 8)
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("naming schemes torchvision, cifar-akamaster each map all 5 keys"), "\(message)")
    }

    @Test func keysNoSchemeKnowsAskForAMap() {
        var sd = StateDict()
        sd.add("encoder.weight", [4, 4])
        let message = mappingError { _ = try map(sd) }
        #expect(message.contains("--map"), "\(message)")
    }

    @Test func aPresetAcceptsItsOwnStructure() throws {
        let r = try map(.torchvision(blocks: [2, 2, 2, 2], bottleneck: false), arch: "torchvision-resnet18")
        #expect(r.model.spec.family == "torchvision-resnet18")
        let cifar = try map(.akamaster(n: 3), arch: "cifar-resnet20")
        #expect(cifar.model.spec.stages.map { $0.blocks.count } == [3, 3, 3])
    }

    @Test func aPresetRefusesOtherBlockCountsNamingTheBlocks() {
        let message = mappingError { _ = try map(.torchvision(blocks: [2, 2, 2, 2], bottleneck: false), arch: "torchvision-resnet34") }
        #expect(message.contains("blocks per stage are 2-2-2-2, the preset needs 3-4-6-3"), "\(message)")
        #expect(message.contains("missing blocks: layer1.2.*"), "\(message)")
        let extra = mappingError { _ = try map(.akamaster(n: 5), arch: "cifar-resnet20") }
        #expect(extra.contains("unexpected blocks: layer1.3.*, layer1.4.*"), "\(extra)")
    }

    @Test func aPresetRefusesTheWrongBlockKindGroupsAndShortcuts() {
        let kind = mappingError { _ = try map(.torchvision(blocks: [3, 4, 6, 3], bottleneck: false), arch: "torchvision-resnet50") }
        #expect(kind.contains("a bottleneck block has 3"), "\(kind)")
        let groups = mappingError { _ = try map(.torchvision(blocks: [3, 4, 6, 3], bottleneck: true), arch: "torchvision-resnext50_32x4d") }
        #expect(groups.contains("groups 1, the preset needs 32"), "\(groups)")
        let optionB = mappingError { _ = try map(.akamaster(n: 3, optionB: true), arch: "cifar-resnet20") }
        #expect(optionB.contains("option A"), "\(optionB)")
    }

    @Test func unknownPresetsAreUsageErrors() {
        #expect(throws: ResNetError.self) { _ = try map(.akamaster(n: 3), arch: "keras-resnet50") }
        do { _ = try map(.akamaster(n: 3), arch: "resnet20") } catch let e as ResNetError {
            #expect(e.exitCode == 2 && e.description.contains("cifar-resnet20"))
        } catch { Issue.record("\(error)") }
    }

    @Test func everyTorchPresetListedForArchHasAStructure() {
        let listed = Presets.all.filter { $0.framework == "torch" }.map(\.name)
        #expect(listed == TorchSchemes.presets.map(\.name))
        for p in TorchSchemes.presets { #expect(TorchSchemes.builtIn.contains { $0.name == p.scheme }) }
    }

    @Test func aUserMapDescribesAnUnknownLayoutAsWellAsABuiltInScheme() throws {
        // The akamaster layout under other names, described by a map file.
        let reference = StateDict.akamaster(n: 2)
        var renamed = reference
        for i in renamed.tensors.indices {
            renamed.tensors[i].name = renamed.tensors[i].name
                .replacingOccurrences(of: "conv1.", with: "stem_conv.", options: .anchored)
                .replacingOccurrences(of: "bn1.", with: "stem_bn.", options: .anchored)
                .replacingOccurrences(of: "linear.", with: "head.", options: .anchored)
                .replacingOccurrences(of: "layer", with: "group")
        }
        renamed.add("ema_decay", [1])
        let json = """
        {"name": "my-cifar", "convention": "cifar", "shortcut_without_weights": "subsample-pad", "input_size": [32, 32],
         "modules": [
           {"source": "stem_conv", "canonical": "conv1", "role": "conv"},
           {"source": "stem_bn", "canonical": "bn1", "role": "batch_norm"},
           {"source": "group{s}.{b}.conv{n}", "canonical": "layer{s}.{b}.conv{n}", "role": "conv"},
           {"source": "group{s}.{b}.bn{n}", "canonical": "layer{s}.{b}.bn{n}", "role": "batch_norm"},
           {"source": "head", "canonical": "fc", "role": "linear"}],
         "ignore": ["ema_*"]}
        """
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let mapFile = dir.appendingPathComponent("map.json").path
        try json.write(toFile: mapFile, atomically: true, encoding: .utf8)
        let mine = try map(renamed, mapFile: mapFile)
        let builtIn = try map(reference)
        #expect(mine.model.spec.stages == builtIn.model.spec.stages)
        #expect(mine.model.spec.stem == builtIn.model.spec.stem && mine.model.spec.head == builtIn.model.spec.head)
        #expect(mine.model.tensors == builtIn.model.tensors)
        #expect(mine.notes.contains("ignored keys: ema_decay"), "\(mine.notes)")
        #expect(mine.origins.contains { $0.source == "group2.1.conv2.weight" && $0.canonical == "layer2.1.conv2.weight" })
    }

    @Test func aMapWithABadPatternIsRefusedNamingTheRule() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let mapFile = dir.appendingPathComponent("bad.json").path
        try #"{"name": "x", "convention": "cifar", "modules": [{"source": "a.{q}", "canonical": "conv1", "role": "conv"}]}"#
            .write(toFile: mapFile, atomically: true, encoding: .utf8)
        do { _ = try map(.akamaster(n: 1), mapFile: mapFile); Issue.record("accepted a bad map") } catch let e as ResNetError {
            #expect(e.description.contains("modules[0]") && e.description.contains("{q}"), "\(e)")
            #expect(e.exitCode == 3)
        }
        try #"{"name": "x", "modules": []}"#.write(toFile: mapFile, atomically: true, encoding: .utf8)
        do { _ = try map(.akamaster(n: 1), mapFile: mapFile); Issue.record("accepted a map without convention") } catch let e as ResNetError {
            #expect(e.description.contains("convention"), "\(e)")
        }
    }

    @Test func namePatternsReadOffsetsAndPlainDecimalsOnly() throws {
        let p = try NamePattern("conv{s+1}.{b}.layer{n}.0")
        #expect(p.match("conv2.0.layer1.0") == ["s": 1, "b": 0, "n": 1])
        #expect(p.match("conv2.01.layer1.0") == nil)
        #expect(p.match("conv2.0.layer1.0.x") == nil)
        #expect(p.render(["s": 3, "b": 2, "n": 2]) == "conv4.2.layer2.0")
        #expect(try NamePattern("x{s}.y{s}").match("x1.y2") == nil)
        #expect(throws: PatternError.self) { try NamePattern("a{s}{b}") }
        #expect(throws: PatternError.self) { try NamePattern("a{s}1") }
        #expect(throws: PatternError.self) { try NamePattern("a{s") }
    }

    @Test func globsMatchWholeKeys() {
        #expect(globMatches("*.num_batches_tracked", "layer1.0.bn1.num_batches_tracked"))
        #expect(!globMatches("*.num_batches_tracked", "layer1.0.bn1.weight"))
        #expect(globMatches("ema_*", "ema_decay") && !globMatches("ema_*", "x.ema_decay"))
    }

    @Test func aWrongPresetNamesThePresetThatFits() throws {
        let path = Paths.fixtures.appendingPathComponent("torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth").path
        let ckpt = try readTorchCheckpoint(path: path)
        let message = mappingError { _ = try mapTorchCheckpoint(ckpt, arch: "torchvision-resnet18", mapFile: nil) }
        #expect(message.contains("the file fits --arch cifar-resnet20"), "\(message)")
    }
}
