/// The tensors of a PyTorch checkpoint after unwrapping, in file order.
///
/// Produced by ``readTorchCheckpoint(path:)`` (containers + restricted pickle machine) and consumed
/// by the naming schemes that map state-dict keys onto the canonical ResNet.
public struct TorchCheckpoint: Sendable {
    public var path: String
    /// Container and variant, e.g. `torch-zip (root 'archive/', little-endian)` or `torch-legacy (protocol 1001)`.
    public var container: String
    /// The chosen state dict: keys with wrapper prefixes (`module.`, `_orig_mod.`) removed, values
    /// as float32 in PyTorch's layout (conv OIHW, linear (out, in)); `sourceDType` is the stored dtype.
    public var tensors: [SourceTensor]
    /// What unwrapping chose (`state_dict` key, EMA copy, prefix removed, whole pickled module …).
    public var notes: [String]
    /// Keys that were present but deliberately not used (e.g. `num_batches_tracked`, `best_prec1`).
    public var ignored: [String]

    public init(path: String, container: String, tensors: [SourceTensor], notes: [String], ignored: [String]) {
        self.path = path; self.container = container; self.tensors = tensors; self.notes = notes; self.ignored = ignored
    }
}
