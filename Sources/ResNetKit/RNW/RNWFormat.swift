import Foundation

/// Version of the `.rnw` format this library writes and the newest it reads.
///
/// A reader refuses a file with a newer major version and reads any minor version of its own
/// major; see <doc:RNWFormat> for the rules.
public enum RNWFormatVersion {
    /// Major version: changes only when an older reader could misread a file.
    public static let major: UInt16 = 1
    /// Minor version: additions within the major. 1.1 added float16, bfloat16 and int8 tensors;
    /// writers stamp 1.0 on files that use none of them.
    public static let minor: UInt16 = 1
}

/// The fixed 40-byte header. Its layout is frozen across all major versions so that any reader can
/// always say which version a file is.
struct RNWHeader: Equatable {
    /// "RNW" NUL, then CR LF SUB LF as in PNG: a text-mode transfer or a `type`d file mangles the
    /// bytes and fails here instead of deep inside the manifest.
    static let magic: [UInt8] = [0x52, 0x4E, 0x57, 0x00, 0x0D, 0x0A, 0x1A, 0x0A]
    static let size = 40
    /// Bytes covered by the header checksum (everything before it).
    static let checksummedSize = 32
    /// Tensor data alignment: a cache line, and enough for any SIMD load of a mapped tensor.
    static let alignment: UInt64 = 64

    var major: UInt16
    var minor: UInt16
    var flags: UInt32
    var manifestLength: UInt64
    var manifestChecksum: UInt64

    func encoded() -> [UInt8] {
        var b = RNWHeader.magic
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) } }
        put(major); put(minor); put(flags); put(manifestLength); put(manifestChecksum)
        let sum = b.withUnsafeBytes { xxHash64($0) }
        put(sum)
        return b
    }
}

/// Reads a little-endian integer at `offset`; the caller has checked the bounds.
@inline(__always) func readLE<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int, as: T.Type) -> T {
    T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
}

/// The next multiple of the tensor alignment at or after `n`, or nil on overflow.
func alignedUp(_ n: UInt64) -> UInt64? {
    let (sum, overflow) = n.addingReportingOverflow(RNWHeader.alignment - 1)
    return overflow ? nil : sum & ~(RNWHeader.alignment - 1)
}

/// The C library's message for `errno`.
func errnoText(_ code: Int32 = errno) -> String {
    String(cString: strerror(code))
}
