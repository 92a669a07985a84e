import CSHA256
import Foundation

/// SHA-256 (FIPS 180-4), used to record which source file a `.rnw` was made from.
struct SHA256 {
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    /// Whether ``update(_:)`` uses the CPU's SHA instructions; tests turn it off to check one
    /// implementation against the other.
    var useHardware = SHA256.hardwareAvailable

    /// The Swift rounds ran at about 0.2 GB/s, slower than the rest of a `--no-verify` conversion
    /// of a ResNet-50; the SHA-NI path hashes the same 103 MB in about 60 ms.
    static let hardwareAvailable = csha256_hw_available() != 0

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var rest = bytes[...]
        if !buffer.isEmpty {
            let take = min(64 - buffer.count, rest.count)
            buffer += rest.prefix(take)
            rest = rest.dropFirst(take)
            if buffer.count == 64 { buffer.withUnsafeBytes { blocks($0) }; buffer.removeAll(keepingCapacity: true) }
        }
        let whole = rest.count / 64 * 64
        if whole > 0 {
            blocks(UnsafeRawBufferPointer(rebasing: rest.prefix(whole)))
            rest = rest.dropFirst(whole)
        }
        buffer += rest
    }

    /// Compresses whole 64-byte blocks.
    private mutating func blocks(_ p: UnsafeRawBufferPointer) {
        if useHardware, let base = p.baseAddress {
            h.withUnsafeMutableBufferPointer { csha256_hw_blocks($0.baseAddress!, base.assumingMemoryBound(to: UInt8.self), p.count / 64) }
            return
        }
        var offset = 0
        while offset < p.count {
            block(UnsafeRawBufferPointer(rebasing: p[offset ..< offset + 64]))
            offset += 64
        }
    }

    private mutating func block(_ p: UnsafeRawBufferPointer) {
        // The message schedule lives on the stack: no allocation per 64-byte block.
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            SHA256.k.withUnsafeBufferPointer { k in
                for i in 0..<16 {
                    w[i] = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                }
                @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { x >> n | x << (32 - n) }
                for i in 16..<64 {
                    let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                    let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                    w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
                }
                var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
                for i in 0..<64 {
                    let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                    let ch = (e & f) ^ (~e & g)
                    let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
                    let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                    let maj = (a & b) ^ (a & c) ^ (b & c)
                    let t2 = s0 &+ maj
                    hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
                }
                h[0] &+= a; h[1] &+= b; h[2] &+= c; h[3] &+= d; h[4] &+= e; h[5] &+= f; h[6] &+= g; h[7] &+= hh
            }
        }
    }

    mutating func finish() -> String {
        var tail: [UInt8] = [0x80]
        let used = Int(length % 64)
        tail += [UInt8](repeating: 0, count: (used < 56 ? 55 - used : 119 - used))
        let bits = length &* 8
        for i in (0..<8).reversed() { tail.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i)))) }
        let savedLength = length
        tail.withUnsafeBytes { update($0) }
        length = savedLength
        return h.map { String(format: "%08x", $0) }.joined()
    }
}

/// Hex SHA-256 of a file. Hashed from a mapping 4 MiB at a time, each piece faulted in with one
/// call and dropped from the resident set afterwards: no copy into a buffer (read() cost about 15 ms
/// of a 103 MB file) and no more than 4 MiB of it resident at once.
func sha256Hex(path: String) throws -> String {
    let file = try MappedFile(path: path)
    var hasher = SHA256()
    let step = 4 << 20
    var at = 0
    while at < file.bytes.count {
        let piece = UnsafeRawBufferPointer(rebasing: file.bytes[at ..< min(at + step, file.bytes.count)])
        file.prefault(piece)
        hasher.update(piece)
        file.release(piece)
        at += step
    }
    return hasher.finish()
}
