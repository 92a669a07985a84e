import Foundation
import Testing
@testable import ResNetKit

/// The layouts training code saves (fixtures/torch/checkpoints, written by
/// tools/make_checkpoint_layouts.py): which entry the reader takes, and what it reports.
@Suite("Torch reader: finding the weights in training checkpoints")
struct TorchCheckpointLayoutTests {
    static func path(_ name: String) -> String {
        Paths.fixtures.appendingPathComponent("torch/checkpoints/\(name)").path
    }

    struct Layout: Sendable, CustomTestStringConvertible {
        var file: String
        /// Expected ``TorchCheckpoint/weightsPath``.
        var chosen: String
        var tensors: Int
        var notes: [String]
        var ignored: [String]
        var testDescription: String { file }
    }

    /// The tiny model's state dict has 8 entries; its BN step counter is ignored.
    static let layouts: [Layout] = [
        Layout(file: "plain-state-dict.pth", chosen: "", tensors: 7, notes: ["1 num_batches_tracked counters ignored"],
               ignored: ["bn1.num_batches_tracked"]),
        Layout(file: "pytorch-examples.pth.tar", chosen: "state_dict", tensors: 7,
               notes: ["weights taken from checkpoint['state_dict'] (8 tensors)", "prefix 'module.' removed from all 8 keys",
                       "not weights, ignored: epoch (int), arch (str), best_acc1 (0-d tensor), optimizer (optimizer state)"],
               ignored: ["epoch", "arch", "best_acc1", "optimizer"]),
        Layout(file: "lightning.ckpt", chosen: "state_dict", tensors: 7,
               notes: ["weights taken from checkpoint['state_dict'] (8 tensors)", "prefix 'model.' removed from all 8 keys",
                       "optimizer_states (optimizer state)", "lr_schedulers (scheduler state)", "callbacks (dict)", "loops (dict)",
                       "hyper_parameters (lightning.fabric.utilities.data.AttributeDict)", "torch_version (torch.torch_version.TorchVersion)",
                       "data objects decoded as inert records (never called, not weights)", "collections.Counter",
                       "lightning.pytorch.trainer.states.TrainerFn"],
               ignored: ["epoch", "global_step", "hyper_parameters", "optimizer_states", "lr_schedulers", "callbacks", "loops", "state"]),
        Layout(file: "timm-train.pth.tar", chosen: "state_dict", tensors: 7,
               notes: ["weights taken from checkpoint['state_dict'] (8 tensors)",
                       "EMA copy 'state_dict_ema' not used; pass --weights state_dict_ema to take it",
                       "args (argparse.Namespace)", "optimizer (optimizer state)", "state_dict_ema (EMA copy)", "metric (float)",
                       "argparse.Namespace", "pathlib.PurePosixPath", "datetime.datetime", "datetime.timedelta", "numpy.ndarray"],
               ignored: ["epoch", "arch", "optimizer", "version", "args", "metric", "state_dict_ema"]),
        Layout(file: "torchdistill.th", chosen: "model", tensors: 7,
               notes: ["weights taken from checkpoint['model'] (8 tensors)", "prefix 'module.' removed",
                       "optimizer (optimizer state), best_value (float), lr_scheduler (scheduler state), args (argparse.Namespace)"],
               ignored: ["optimizer", "best_value", "lr_scheduler", "args"]),
        Layout(file: "kuangliu.pth", chosen: "net", tensors: 7,
               notes: ["weights taken from checkpoint['net'] (8 tensors)", "prefix 'module.' removed", "acc (float), epoch (int)"],
               ignored: ["acc", "epoch"]),
        Layout(file: "model-state-dict.pt", chosen: "model_state_dict", tensors: 7,
               notes: ["weights taken from checkpoint['model_state_dict'] (8 tensors)", "optimizer_state_dict (optimizer state)", "loss (0-d tensor)"],
               ignored: ["epoch", "optimizer_state_dict", "loss"]),
        Layout(file: "hf-pytorch_model.bin", chosen: "", tensors: 7, notes: [], ignored: []),
        Layout(file: "ema-only.pth", chosen: "model_ema", tensors: 7,
               notes: ["weights taken from the EMA copy checkpoint['model_ema'] (8 tensors): the checkpoint has no other weights"],
               ignored: ["epoch"]),
        Layout(file: "module-in-dict.pth", chosen: "model", tensors: 7,
               notes: ["whole pickled nn.Module __main__.Net at 'model'", "weights taken from checkpoint['model']"], ignored: ["epoch"]),
        Layout(file: "aliased.pth", chosen: "state_dict", tensors: 7,
               notes: ["weights taken from checkpoint['state_dict'] (8 tensors)", "model (the same object as the weights)"],
               ignored: ["model", "history"]),
    ]

    @Test("each training-checkpoint layout yields the model's weights and says what it took and left out", arguments: layouts)
    func layout(_ e: Layout) throws {
        let c = try readTorchCheckpoint(path: Self.path(e.file))
        #expect(c.weightsPath == e.chosen)
        #expect(c.tensors.count == e.tensors)
        #expect(c.tensors.allSatisfy { !$0.name.hasPrefix("module.") && !$0.name.hasPrefix("model.") })
        let notes = c.notes.joined(separator: "\n")
        for n in e.notes { #expect(notes.contains(n), "notes lack \"\(n)\":\n\(notes)") }
        for i in e.ignored { #expect(c.ignored.contains(i), "\(i) not in ignored \(c.ignored)") }
        #expect(c.modules.isEmpty == !e.file.contains("module"))
        // An object reached from several places is one candidate, reported once.
        #expect(!notes.contains("also holds"), "\(notes)")
        testLog("\(e.file): \(c.notes.joined(separator: " | "))")
    }

    @Test("the state dict keys keep their module path: HF names are not stripped, a lone 'fc.weight' stays")
    func prefixes() throws {
        let hf = try readTorchCheckpoint(path: Self.path("hf-pytorch_model.bin"))
        #expect(hf.tensors.map(\.name).contains("resnet.embedder.embedder.convolution.weight"))
        #expect(hf.tensors.map(\.name).contains("classifier.1.weight"))
        #expect(!hf.notes.contains { $0.contains("prefix") })
        let plain = try readTorchCheckpoint(path: Self.path("plain-state-dict.pth"))
        #expect(plain.tensors.map(\.name) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "fc.weight", "fc.bias"])
    }

    @Test("--weights takes the EMA copy; a missing path is refused with the candidates; a non-weights entry is refused")
    func weightsOption() throws {
        let file = Self.path("timm-train.pth.tar")
        let plain = try readTorchCheckpoint(path: file)
        let ema = try readTorchCheckpoint(path: file, weights: "state_dict_ema")
        #expect(ema.weightsPath == "state_dict_ema")
        #expect(ema.tensors.map(\.name) == plain.tensors.map(\.name))
        #expect(ema.tensors.map(\.tensor) != plain.tensors.map(\.tensor))
        #expect(ema.notes.contains("weights taken from checkpoint['state_dict_ema'] (8 tensors), as --weights asked"))
        #expect(try readTorchCheckpoint(path: file, weights: "state_dict").tensors.map(\.tensor) == plain.tensors.map(\.tensor))
        do {
            _ = try readTorchCheckpoint(path: file, weights: "model")
            Issue.record("a missing --weights path was accepted")
        } catch let e as ResNetError {
            #expect(e.description.contains("no entry 'model'"), "\(e)")
            #expect(e.description.contains("state_dict (8 tensors)") && e.description.contains("state_dict_ema (8 tensors, EMA)"), "\(e)")
        }
        do {
            _ = try readTorchCheckpoint(path: file, weights: "args")
            Issue.record("--weights args was accepted")
        } catch let e as ResNetError {
            #expect(e.description.contains("argparse.Namespace, not a state dict"), "\(e)")
        }
        // A key holding a dot is matched whole; list items by index.
        let lightning = Self.path("lightning.ckpt")
        do {
            _ = try readTorchCheckpoint(path: lightning, weights: "optimizer_states.0")
            Issue.record("optimizer state taken as weights")
        } catch let e as ResNetError {
            #expect(e.description.contains("checkpoint['optimizer_states'][0]") && e.description.contains("not a state dict"), "\(e)")
        }
        let whole = try readTorchCheckpoint(path: Self.path("module-in-dict.pth"), weights: "model")
        #expect(whole.tensors.count == 7 && !whole.modules.isEmpty)
        let top = try readTorchCheckpoint(path: Self.path("plain-state-dict.pth"), weights: "")
        #expect(top.tensors.count == 7)
    }

    @Test("a whole pickled module exposes its tree: classes, child order, recorded hyper-parameters, wrapper removed")
    func moduleTree() throws {
        let c = try readTorchCheckpoint(path: Self.path("whole-module-dataparallel.pth"))
        #expect(c.notes.contains { $0.contains("prefix 'module.' removed") })
        #expect(c.tensors.first?.name == "stem.0.weight")
        #expect(c.modules.map(\.path) == ["", "stem", "stem.0", "stem.1", "stem.2", "stem.3", "skip", "head", "head.0", "head.1", "head.2", "head.3"])
        #expect(c.modules.map(\.typeName) == ["Net", "Sequential", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Identity", "Sequential",
                                             "AdaptiveAvgPool2d", "Flatten", "Dropout", "Linear"])
        let byPath = Dictionary(uniqueKeysWithValues: c.modules.map { ($0.path, $0) })
        let conv = try #require(byPath["stem.0"])
        #expect(conv.className == "torch.nn.modules.conv.Conv2d")
        #expect(conv.ints["kernel_size"] == [3, 3] && conv.ints["stride"] == [2, 2] && conv.ints["padding"] == [1, 1])
        #expect(conv.ints["groups"] == [1] && conv.ints["in_channels"] == [3] && conv.ints["out_channels"] == [4])
        #expect(conv.flags["bias"] == false && conv.strings["padding_mode"] == "zeros")
        #expect(byPath["stem.1"]?.floats["eps"] == 1e-5 && byPath["stem.1"]?.ints["num_features"] == [4])
        #expect(byPath["stem.2"]?.flags["inplace"] == true)
        #expect(byPath["stem.3"]?.ints["kernel_size"] == [3] && byPath["stem.3"]?.flags["ceil_mode"] == false)
        #expect(byPath["head.0"]?.ints["output_size"] == [1, 1])
        #expect(byPath["head.1"]?.ints["start_dim"] == [1])
        #expect(byPath["head.2"]?.floats["p"] == 0.2)
        #expect(byPath["head.3"]?.ints["in_features"] == [4] && byPath["head.3"]?.ints["out_features"] == [10] && byPath["head.3"]?.flags["bias"] == true)
        #expect(c.notes.contains { $0.contains("1 wrapper module") })
        // A state dict has no module tree.
        #expect(try readTorchCheckpoint(path: Self.path("plain-state-dict.pth")).modules.isEmpty)
    }

    @Test("a module DAG (each level registers the next twice, 2^40 paths) is walked once per module, fast")
    func sharedDAG() throws {
        let start = ContinuousClock.now
        let c = try readTorchCheckpoint(path: Self.path("shared-dag.pth"))
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < .seconds(5), "\(elapsed)")
        #expect(c.tensors.map(\.name) == ["scale", String(repeating: "0.", count: 40) + "weight"])
        #expect(c.modules.count == 81) // 41 distinct modules + 40 second registrations
        #expect(c.modules.filter { $0.sharedWith != nil }.count == 40)
        #expect(c.notes.contains { $0.contains("is the same object as") })
    }
}

extension TorchCheckpointLayoutTests {
    /// A `Sequential` record whose `_modules` holds what `children` writes.
    static func sequential(_ p: inout PickleBytes, children: (inout PickleBytes) -> Void) {
        p.global("torch.nn.modules.container", "Sequential"); p.emptyTuple(); p.op(0x81)
        p.emptyDict(); p.mark()
        p.str("_parameters"); p.emptyDict()
        p.str("_modules"); p.emptyDict(); p.mark(); children(&p); p.setItems()
        p.setItems(); p.op(0x62)
    }

    @Test("many module candidates sharing one wide subtree cost linear work, not one walk each")
    func sharedAcrossCandidates() throws {
        var p = PickleBytes()
        p.op(0x5D); p.mark()
        // One module with 300 children, memoised, then 3,000 modules that each register it.
        Self.sequential(&p) { q in for i in 0..<300 { q.str(String(i)); Self.sequential(&q) { _ in } } }
        p.op(0x72); p.bytes += [0, 0, 0, 0]; p.op(0x30) // LONG_BINPUT 0, POP
        for _ in 0..<3000 { Self.sequential(&p) { q in q.str("shared"); q.op(0x6A); q.bytes += [0, 0, 0, 0] } }
        p.op(0x65); p.stop()
        let start = ContinuousClock.now
        // The first candidates are walked (they hold no tensors); once the walks reach the number of
        // objects in the pickle, the rest are refused unread.
        expectRefused(zipped(p.bytes), "no tensors found")
        #expect(ContinuousClock.now - start < .seconds(5))
    }
}

/// Globals that exist to run code are refused by name with the reason; data classes become records.
@Suite("Torch reader: pickle policy (records and the deny list)")
struct PicklePolicyTests {
    /// `{'state_dict': {'w': tensor}, key: <global applied to args>}` with the global built by `value`.
    static func checkpoint(_ key: String, _ value: (inout PickleBytes) -> Void) -> [UInt8] {
        var p = PickleBytes()
        p.emptyDict(); p.mark()
        p.str("state_dict"); p.orderedDict(); p.mark(); p.str("w"); p.tensor(key: "0", count: 2, size: [2], stride: [1]); p.setItems()
        p.str(key); value(&p)
        p.setItems(); p.stop()
        return torchZip(pickle: p.bytes, storages: [("0", f32Bytes([1, 2]))])
    }

    @Test("globals that exist to run code are refused naming the global and why", arguments: [
        ("dill._dill", "_load_type", "forward code is not in the file"),
        ("dill._dill", "_create_function", "dill's loader"),
        ("dill._dill", "_create_code", "dill's loader"),
        ("cloudpickle.cloudpickle", "_make_function", "pickle or marshal loader"),
        ("functools", "partial", "exists to call other objects"),
        ("operator", "attrgetter", "exists to call other objects"),
        ("builtins", "getattr", "arbitrary attributes"),
        ("builtins", "open", "opens files"),
        ("__builtin__", "compile", "evaluates code"),
        ("types", "CodeType", "code objects"),
        ("types", "FunctionType", "code objects"),
        ("marshal", "loads", "pickle or marshal loader"),
        ("_pickle", "loads", "pickle or marshal loader"),
        ("torch.serialization", "load", "further pickles"),
        ("torch", "load", "further pickles"),
        ("torch.jit._serialization", "load", "further pickles"),
        ("numpy.testing._private.utils", "runstring", "evaluate code"),
        ("numpy", "load", "further pickles"),
        ("nt", "system", "runs programs"),
        ("pty", "spawn", "runs programs"),
        ("sys", "exit", "imports or runs modules"),
        ("importlib", "import_module", "imports or runs modules"),
        ("runpy", "_run_code", "imports or runs modules"),
        ("shutil", "rmtree", "deletes files"),
        ("socket", "socket", "network"),
        ("webbrowser", "open", "browser"),
        ("ctypes", "CDLL", "native code"),
        ("code", "InteractiveInterpreter", "code objects"),
        ("copyreg", "__newobj__", "pickle loader helper"),
    ])
    func denied(_ module: String, _ name: String, _ why: String) {
        let bytes = Self.checkpoint("x") { p in p.global(module, name); p.str("a"); p.op(0x85); p.reduce() }
        expectRefused(bytes, "refused global '\(module).\(name)'", "it exists to run code", why, "nothing was executed")
    }

    @Test("a global on neither list is refused as not allow-listed")
    func unknown() throws {
        expectRefused(Self.checkpoint("x") { p in p.global("mypkg.utils", "helper"); p.str("a"); p.op(0x85); p.reduce() },
                      "refused global 'mypkg.utils.helper'", "not on the allow-list", "nothing was executed")
        // With module records off, a user's class is unknown too; a data class is still a record.
        var p = PickleBytes()
        p.global("__main__", "Net"); p.stop()
        #expect(throws: ResNetError.self) { try readBytes(zipped(p.bytes), allowModuleRecords: false) }
        let counter = Self.checkpoint("c") { p in
            p.global("collections", "Counter"); p.emptyDict(); p.int(30); p.int(1); p.op(0x73); p.op(0x85); p.reduce()
        }
        #expect(try readBytes(counter, allowModuleRecords: false).tensors.count == 1)
    }

    @Test("data classes decode as records holding their arguments; nothing is called")
    func records() throws {
        let cases: [(String, (inout PickleBytes) -> Void, String)] = [
            ("Counter", { p in p.global("collections", "Counter"); p.emptyDict(); p.int(30); p.int(1); p.op(0x73); p.op(0x85); p.reduce() },
             "collections.Counter"),
            ("defaultdict", { p in
                p.global("collections", "defaultdict"); p.global("builtins", "list"); p.op(0x85); p.reduce()
                p.mark(); p.str("k"); p.emptyTuple(); p.setItems()
             }, "collections.defaultdict"),
            ("deque", { p in p.global("collections", "deque"); p.op(0x5D); p.int(5); p.op(0x86); p.reduce(); p.mark(); p.int(1); p.int(2); p.op(0x65) },
             "collections.deque"),
            ("Namespace", { p in
                p.global("argparse", "Namespace"); p.emptyTuple(); p.op(0x81)
                p.emptyDict(); p.str("lr"); p.int(1); p.op(0x73); p.op(0x62)
             }, "argparse.Namespace"),
            ("date", { p in p.global("datetime", "date"); p.op(0x43, 4, 7, 0xE8, 5, 1); p.op(0x85); p.reduce() }, "datetime.date"),
            ("path", { p in p.global("pathlib", "PosixPath"); p.str("/"); p.str("data"); p.op(0x86); p.reduce() }, "pathlib.PosixPath"),
            ("enum", { p in p.global("mytrain.states", "Stage"); p.str("fit"); p.op(0x85); p.reduce() }, "mytrain.states.Stage"),
            ("version", { p in p.global("torch.torch_version", "TorchVersion"); p.str("2.1.0"); p.op(0x85); p.op(0x81) },
             "torch.torch_version.TorchVersion"),
            ("array", { p in
                p.global("numpy.core.multiarray", "_reconstruct"); p.global("numpy", "ndarray"); p.int(0); p.op(0x85)
                p.op(0x43, 1, 0x62); p.op(0x87); p.reduce()
                p.mark(); p.int(1); p.int(2); p.op(0x85)
                p.global("numpy", "dtype"); p.str("f4"); p.op(0x89); p.op(0x88); p.op(0x87); p.reduce()
                p.mark(); p.int(3); p.str("<"); p.op(0x4E); p.op(0x4E); p.op(0x4E); p.int(-1); p.int(-1); p.int(0); p.tuple(); p.op(0x62)
                p.op(0x89); p.op(0x43, 8, 0, 0, 0x80, 0x3F, 0, 0, 0, 0x40); p.tuple(); p.op(0x62)
             }, "numpy.ndarray"),
            ("AttributeDict", { p in
                p.global("lightning.fabric.utilities.data", "AttributeDict"); p.emptyTuple(); p.op(0x81)
                p.mark(); p.str("lr"); p.int(1); p.setItems()
             }, "lightning.fabric.utilities.data.AttributeDict"),
            ("reconstructor", { p in
                p.global("copyreg", "_reconstructor"); p.global("argparse", "Namespace"); p.global("builtins", "object"); p.op(0x4E); p.op(0x87); p.reduce()
             }, "argparse.Namespace"),
        ]
        for (key, build, className) in cases {
            let c = try readBytes(Self.checkpoint(key, build))
            #expect(c.tensors.map(\.name) == ["w"], "\(key)")
            #expect(c.ignored.contains(key), "\(key)")
            #expect(c.notes.contains { $0.contains("inert records") && $0.contains(className) }, "\(key): \(c.notes)")
        }
    }

    @Test("an omegaconf DictConfig in Lightning's hyper_parameters decodes as records (as OmegaConf pickles it)")
    func omegaconf() throws {
        let bytes = Self.checkpoint("hyper_parameters") { p in
            func newobj(_ module: String, _ name: String, _ state: (inout PickleBytes) -> Void) {
                p.global(module, name); p.emptyTuple(); p.op(0x81); p.emptyDict(); p.mark(); state(&p); p.setItems(); p.op(0x62)
            }
            newobj("omegaconf.dictconfig", "DictConfig") { p in
                p.str("_metadata")
                newobj("omegaconf.base", "ContainerMetadata") { p in
                    p.str("ref_type"); p.global("typing", "Any")
                    p.str("object_type"); p.global("builtins", "dict")
                    p.str("optional"); p.op(0x88)
                    p.str("key"); p.op(0x4E)
                    p.str("resolver_cache"); p.global("collections", "defaultdict"); p.global("builtins", "dict"); p.op(0x85); p.reduce()
                }
                p.str("_parent"); p.op(0x4E)
                p.str("_content"); p.emptyDict(); p.mark()
                p.str("lr")
                newobj("omegaconf.nodes", "AnyNode") { p in p.str("_val"); p.int(1) }
                p.setItems()
            }
        }
        let c = try readBytes(bytes, allowModuleRecords: false)
        #expect(c.tensors.map(\.name) == ["w"])
        let notes = c.notes.joined(separator: "\n")
        #expect(notes.contains("hyper_parameters (omegaconf.dictconfig.DictConfig)"), "\(notes)")
        #expect(notes.contains("omegaconf.base.ContainerMetadata") && notes.contains("omegaconf.nodes.AnyNode"), "\(notes)")
    }

    @Test("calling a module class or a builtin type stays refused; functools.partial is never a record")
    func stillRefused() {
        expectRefused(Self.checkpoint("m") { p in p.global("torchvision.models.resnet", "ResNet"); p.int(3); p.op(0x85); p.reduce() },
                      "REDUCE would call 'torchvision.models.resnet.ResNet'")
        expectRefused(Self.checkpoint("m") { p in p.global("__main__", "Net"); p.op(0x5D); p.op(0x85); p.reduce() },
                      "REDUCE would call '__main__.Net'")
        expectRefused(Self.checkpoint("l") { p in p.global("builtins", "list"); p.emptyTuple(); p.reduce() },
                      "REDUCE would call 'builtins.list'")
        expectRefused(Self.checkpoint("f") { p in p.global("functools", "partial"); p.global("builtins", "list"); p.op(0x85); p.reduce() },
                      "'functools.partial'", "exists to run code")
    }

    @Test("the dill-pickled ResNet-56 is refused with exit 3, saying its code is not in the file")
    func dillExternal() throws {
        guard let path = Paths.externalFile("abideya-pruner-dill/resnet56_check_point.pth") else { return }
        do {
            _ = try readTorchCheckpoint(path: path)
            Issue.record("the dill file was accepted")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3)
            let text = e.description
            #expect(text.contains("'dill._dill._load_type'") && text.contains("forward code is not in the file")
                    && text.contains("structure cannot be known") && text.contains("nothing was executed"), "\(text)")
        }
    }

    @Test("external training checkpoints: torchdistill and Lightning report what they took and left out")
    func externalTraining() throws {
        if let path = Paths.externalFile("aifoundry-mhaq-torchdistill/cifar10-resnet20_cifar10_from_resnet20_cifar10_new-final_run_92.81.th") {
            let c = try readTorchCheckpoint(path: path)
            #expect(c.weightsPath == "model")
            #expect(c.tensors.count == 97)
            let notes = c.notes.joined(separator: "\n")
            #expect(notes.contains("weights taken from checkpoint['model'] (116 tensors)"), "\(notes)")
            #expect(notes.contains("optimizer (optimizer state)") && notes.contains("lr_scheduler (scheduler state)")
                    && notes.contains("args (argparse.Namespace)") && notes.contains("best_value (float)"), "\(notes)")
            #expect(notes.contains("prefix 'module.' removed from all 116 keys"))
            #expect(notes.contains("collections.Counter") && notes.contains("argparse.Namespace"))
            testLog("torchdistill: \(c.notes.joined(separator: " | "))")
        }
        for file in ["phlippe-uvadl-resnet/ResNet.ckpt", "phlippe-uvadl-preact/ResNetPreAct.ckpt"] {
            guard let path = Paths.externalFile(file) else { continue }
            let c = try readTorchCheckpoint(path: path)
            #expect(c.weightsPath == "state_dict")
            #expect(!c.tensors.isEmpty && c.tensors.allSatisfy { !$0.name.hasPrefix("model.") })
            #expect(c.tensors.contains { $0.name == "input_net.0.weight" })
            let notes = c.notes.joined(separator: "\n")
            #expect(notes.contains("prefix 'model.' removed from all"), "\(notes)")
            #expect(notes.contains("hyper_parameters (dict)") && notes.contains("epoch (int)"), "\(notes)")
            #expect(c.ignored.contains("hyper_parameters") && c.ignored.contains("pytorch-lightning_version"))
            testLog("\(file): \(c.notes.joined(separator: " | "))")
        }
    }
}

/// fuzz-torch: a zip whose zip64 end record names another central directory than the classic end
/// record, with a deflated member. The directory check read the classic record, ZIPFoundation the
/// zip64 one, and trapped reading past the end. Both records must now agree.
@Test func aZip64EndRecordThatDisagreesIsRefused() throws {
    let data = try Data(contentsOf: Paths.fixtures.appendingPathComponent("fuzz-regressions/torch-zip64-record-disagrees.pt"))
    #expect {
        _ = try readTorchCheckpoint(data: data, name: "fuzz.pt")
    } throws: { error in
        (error as? ResNetError)?.description.contains("disagrees with the end-of-central-directory record") == true
    }
}
