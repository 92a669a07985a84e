/// Every bound the PyTorch readers enforce, in one place.
///
/// A checkpoint is untrusted input: these caps make sure a hostile file is refused with an error
/// before it can exhaust memory or the stack. The values are far above what any ResNet checkpoint
/// needs (a torchvision resnet152 pickle is about 60 KB with ~1,000 memo entries; its largest
/// tensor has 2.4 M elements and all tensors together 60 M).
enum TorchLimits {
    /// Bytes of one pickle (`data.pkl`, or one pickle of the legacy stream). Whole pickled
    /// modules stay well below 1 MiB; 64 MiB leaves room for checkpoints with large metadata.
    static let maxPickleBytes = 64 << 20
    /// Memo entries (BINPUT / LONG_BINPUT / MEMOIZE). Torch memoizes roughly ten per tensor.
    static let maxMemoEntries = 1 << 20
    /// Values held on the operand stack at once (APPENDS / SETITEMS batches sit there).
    static let maxStackItems = 1 << 22
    /// Containers (tuples, lists, dicts, sets, tensors, records) one pickle may create.
    static let maxObjects = 1 << 22
    /// Open MARKs at once, and how deep any walk over decoded containers may go. Real
    /// checkpoints nest fewer than 20 levels (a bottleneck ResNet module tree is 6).
    static let maxNesting = 200
    /// Bytes of one LONG1 / LONG4 integer. The legacy magic number needs 10.
    static let maxLongBytes = 64
    /// Dimensions of one tensor.
    static let maxRank = 8
    /// Elements of one tensor (1 GiB as float32).
    static let maxTensorElements = 1 << 28
    /// Elements of all tensors read from one checkpoint together (8 GiB as float32).
    static let maxTotalElements = 1 << 31
    /// Bytes of one zip member (a storage or `data.pkl`) extracted into memory.
    static let maxMemberBytes: UInt64 = 1 << 33
    /// Members of one zip archive.
    static let maxZipMembers = 1 << 20
    /// Nested wrapper dicts followed while unwrapping (`{'model': {'state_dict': …}}`).
    static let maxWrapperDepth = 4
}
