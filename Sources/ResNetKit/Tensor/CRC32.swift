import CZlibCRC

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as zip stores it, from zlib. Every stored
/// member of a PyTorch archive is checked, so its speed is part of every `.pth` read: on a 100 MB
/// buffer zlib 1.2.13 took 26–32 ms, the table-driven ("slicing by 8") Swift version this replaced
/// 88–92 ms (same machine, same results).
enum ZipCRC32 {
    /// The CRC of `bytes`, continuing from `crc` (0 for a fresh checksum).
    static func checksum(_ bytes: UnsafeRawBufferPointer, crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        var c = UInt(crc)
        var at = 0
        // zlib takes a 32-bit length; 1 GB pieces keep well inside it.
        while at < bytes.count {
            let n = min(bytes.count - at, 1 << 30)
            c = crc32(c, base.advanced(by: at).assumingMemoryBound(to: UInt8.self), UInt32(n))
            at += n
        }
        return UInt32(truncatingIfNeeded: c)
    }
}
