/// The tensors of a PyTorch checkpoint after unwrapping, in file order.
///
/// Produced by ``readTorchCheckpoint(path:allowModuleRecords:weights:)`` (containers + restricted
/// pickle machine) and consumed by the naming schemes that map state-dict keys onto the canonical ResNet.
public struct TorchCheckpoint: Sendable {
    public var path: String
    /// Container and variant, e.g. `torch-zip (root 'archive/', little-endian)` or `torch-legacy (protocol 1001)`.
    public var container: String
    /// The chosen state dict: keys with every prefix shared by all of them removed (`module.`,
    /// `model.`, `_orig_mod.` …), values as float32 in PyTorch's layout (conv OIHW, linear (out, in));
    /// `sourceDType` is the stored dtype.
    public var tensors: [SourceTensor]
    /// What unwrapping chose (which entry, EMA copy, prefixes removed, whole pickled module …).
    public var notes: [String]
    /// Keys that were present but deliberately not used (e.g. `num_batches_tracked`, `best_prec1`, `optimizer`).
    public var ignored: [String]
    /// The module tree of a whole pickled `nn.Module`, parents before children in registration
    /// order, with the same prefixes removed as from ``tensors``; empty for state dicts.
    public var modules: [TorchModuleInfo]
    /// Where the weights were found, as a dotted path into the checkpoint (`state_dict`,
    /// `model`); empty when the checkpoint itself is the state dict or module. The value
    /// `--weights` accepts to choose them again.
    public var weightsPath: String

    public init(path: String, container: String, tensors: [SourceTensor], notes: [String], ignored: [String],
                modules: [TorchModuleInfo] = [], weightsPath: String = "") {
        self.path = path; self.container = container; self.tensors = tensors; self.notes = notes; self.ignored = ignored
        self.modules = modules; self.weightsPath = weightsPath
    }
}

/// One module of a whole pickled `nn.Module`, as its pickled attribute dict records it.
///
/// Nothing is looked up or run: the class is only a name, and the hyper-parameters are the
/// values `nn.Conv2d`, `nn.BatchNorm2d`, `nn.MaxPool2d` … store as attributes.
public struct TorchModuleInfo: Sendable, Equatable {
    /// Dotted path from the root module (`layer1.0.conv1`); empty for the root.
    public var path: String
    /// Qualified class name as pickled, e.g. `torch.nn.modules.conv.Conv2d`.
    public var className: String
    /// Integer hyper-parameters (`kernel_size`, `stride`, `padding`, `dilation`, `groups`,
    /// `in_channels`, `out_channels`, `in_features`, `out_features`, `num_features`, `output_size`,
    /// `start_dim`, `end_dim`); a scalar is a one-element array, `None` inside a tuple is -1.
    public var ints: [String: [Int]]
    /// Real hyper-parameters (`eps`, `momentum`, `p`, `negative_slope`).
    public var floats: [String: Double]
    /// Flags: `bias` (whether the module has a bias parameter), `inplace`, `affine`,
    /// `track_running_stats`, `ceil_mode`, `count_include_pad`.
    public var flags: [String: Bool]
    /// Text hyper-parameters (`padding` when given as `'same'` / `'valid'`, `padding_mode`).
    public var strings: [String: String]
    /// When this child is the same object as an earlier module (a shared submodule), that
    /// module's path; its tensors are listed once, under the first path.
    public var sharedWith: String?

    /// The class name without its module path (`Conv2d`).
    public var typeName: String { className.split(separator: ".").last.map(String.init) ?? className }

    public init(path: String, className: String, ints: [String: [Int]] = [:], floats: [String: Double] = [:],
                flags: [String: Bool] = [:], strings: [String: String] = [:], sharedWith: String? = nil) {
        self.path = path; self.className = className; self.ints = ints; self.floats = floats
        self.flags = flags; self.strings = strings; self.sharedWith = sharedWith
    }
}
