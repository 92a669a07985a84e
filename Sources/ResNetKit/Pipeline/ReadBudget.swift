import Foundation

/// What reading one input file may make this process allocate, charged before each allocation.
///
/// Every reader of untrusted bytes creates one budget per file (or receives its container's:
/// the HDF5 image inside a `.keras` is charged to the `.keras`) and charges, before allocating,
/// what it is about to allocate: an inflated zip member at its declared size, a tensor at its
/// float32 size (a stride-0 or overlapping view at its materialised size, not its stored one), a
/// copy of an HDF5 image, a decoded config or header at an estimate of its in-memory size. The
/// charges add up; nothing is given back, so the total bounds the reader's peak from above.
///
/// The capacity is ``ReadLimits/maxExpansion`` times the file's size plus ``allowanceBytes``: a
/// real checkpoint asks for about its own size again (float32 weights read as float32), a
/// `.keras` for about three times (the inflated image, libhdf5's copy of it, the tensors); a
/// 1 KB file of `expand` views or a 3 MB zip that inflates to 3 GB asks for hundreds of times
/// its size and is refused before anything is allocated. The per-item limits of ``ReadLimits``
/// (largest tensor, largest total, largest header) still apply on top.
final class ReadBudget: @unchecked Sendable {
    /// Bytes every file may use whatever its size, so that small real files (and small goldens)
    /// never need the flag: 64 MiB.
    static let allowanceBytes = 64 << 20

    /// The file charged, for messages.
    let file: String
    /// Its size in bytes.
    let fileBytes: Int
    let limits: ReadLimits
    /// Most bytes the charges may add up to.
    let capacity: Int
    /// What was charged so far.
    private(set) var charged = 0
    private let lock = NSLock()

    init(file: String, fileBytes: Int, limits: ReadLimits = .current) {
        self.file = file
        self.fileBytes = max(fileBytes, 0)
        self.limits = limits
        let (scaled, o1) = self.fileBytes.multipliedReportingOverflow(by: max(limits.maxExpansion, 0))
        let (sum, o2) = scaled.addingReportingOverflow(Self.allowanceBytes)
        capacity = o1 || o2 ? Int.max : sum
    }

    /// Charges `bytes` the caller is about to allocate for `what` (a phrase: "tensor 'fc.weight'
    /// as float32") found at `place`. Throws the refusal naming `--max-expansion` when the file's
    /// charges would pass the capacity; with `probe`, also checks that the allocation can be made
    /// now (see ``ensureAllocatable(_:file:place:what:)``).
    func charge(_ bytes: Int, place: String, what: String, probe: Bool = true) throws {
        let n = max(bytes, 0)
        try lock.withLock {
            let (total, overflow) = charged.addingReportingOverflow(n)
            guard !overflow, total <= capacity else {
                let asked = overflow ? "more than \(Int.max)" : String(total)
                throw ResNetError.invalidInput(file: file, place: place,
                    reason: "\(what) needs \(n) bytes, which brings what this \(fileBytes)-byte file asks to allocate to \(asked) bytes,"
                        + " over the limit of \(limits.maxExpansion) × its size + \(Self.allowanceBytes >> 20) MiB = \(capacity) bytes"
                        + " (raise it with \(ReadLimits.Limit.expansion.rawValue) N)")
            }
            charged = total
        }
        if probe { try ensureAllocatable(n, file: file, place: place, what: what) }
    }
}

/// Allocations this large are checked before Swift makes them: Swift's arrays and `Data` trap when
/// malloc fails, and under an address-space limit (or with overcommit off) a large malloc can fail.
let allocationProbeThreshold = 1 << 20

/// Checks that `bytes` can be allocated now, by allocating and freeing them: a failure is an
/// error (exit 4, the system is out of memory or address space), never the trap a failed Swift
/// array allocation is. Small sizes are not probed.
func ensureAllocatable(_ bytes: Int, file: String, place: String, what: String) throws {
    guard bytes >= allocationProbeThreshold else { return }
    guard let p = malloc(bytes) else { throw allocationFailure(bytes, file: file, place: place, what: what) }
    free(p)
}

/// Allocates `bytes` (at least 1) with malloc, turning a failure into an error.
func allocateBytes(_ bytes: Int, file: String, place: String, what: String) throws -> UnsafeMutableRawPointer {
    guard let p = malloc(max(bytes, 1)) else { throw allocationFailure(bytes, file: file, place: place, what: what) }
    return p
}

/// A float32 array of `count` zeros whose allocation was checked first (see ``ensureAllocatable(_:file:place:what:)``).
func checkedFloatArray(count: Int, file: String, place: String) throws -> [Float] {
    try ensureAllocatable(ReadLimits.float32Bytes(count), file: file, place: place, what: "a tensor of \(count) float32 values")
    return [Float](repeating: 0, count: count)
}

private func allocationFailure(_ bytes: Int, file: String, place: String, what: String) -> ResNetError {
    .io(file: file, reason: "cannot allocate \(bytes) bytes for \(what) at \(place): the system is out of memory or address space")
}
