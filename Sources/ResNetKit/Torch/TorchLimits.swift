/// The fixed bounds the PyTorch readers enforce; the ones a user may raise (pickle size, memo
/// and nesting, tensor and total sizes) are in ``ReadLimits``.
///
/// A checkpoint is untrusted input: these caps make sure a hostile file is refused with an error
/// before it can exhaust memory or the stack. The values are far above what any ResNet checkpoint
/// needs (a torchvision resnet152 pickle is about 60 KB with ~1,000 memo entries; its largest
/// tensor has 2.4 M elements and all tensors together 60 M).
enum TorchLimits {
    /// Values held on the operand stack at once (APPENDS / SETITEMS batches sit there).
    static let maxStackItems = 1 << 22
    /// Containers (tuples, lists, dicts, sets, tensors, records) one pickle may create.
    static let maxObjects = 1 << 22
    /// Bytes of one LONG1 / LONG4 integer. The legacy magic number needs 10.
    static let maxLongBytes = 64
    /// Dimensions of one tensor.
    static let maxRank = 8
    /// Bytes of one zip member (a storage or `data.pkl`) extracted into memory.
    static let maxMemberBytes: UInt64 = 1 << 33
    /// Members of one zip archive.
    static let maxZipMembers = 1 << 20
    /// Levels of nested dicts, lists and records searched for the weights (`{'model': {'state_dict': …}}`
    /// is two). Each object is visited once, so the search is linear in the pickle's size.
    static let maxSearchDepth = 12
    /// Tensors read from one checkpoint (any container, safetensors included). The deepest ResNets
    /// have a few thousand; every key costs a match against each naming scheme and the structure
    /// recovery, so a file listing hundreds of thousands is refused before any of that.
    static let maxTensors = 100_000
}
