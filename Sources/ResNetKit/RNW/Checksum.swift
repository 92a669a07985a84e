// xxHash64 (Yann Collet's XXH64, as specified in xxhash's doc/xxhash_spec.md), written in Swift.
//
// Why not libxxhash: measured on one 100 MiB buffer in release builds (tools/bench/xxh64, best of
// 5 runs, this project's 2-core Linux x86-64 machine), this function hashed 10.6-11.7 GB/s and
// Debian's libxxhash 0.8.1 XXH64 9.6-9.9 GB/s, with identical results on every length 0..<300 at
// three misalignments and two seeds. Both run far above disk speed; the Swift version is no slower and saves a
// system library dependency. The bench package compiles this very file (symlink), so the numbers
// stay reproducible. Tests pin results against values printed by libxxhash.
//
// This file must stay free of other ResNetKit dependencies for that reason.

private let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
private let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
private let prime3: UInt64 = 0x1656_67B1_9E37_79F9
private let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
private let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

@inline(__always) private func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x << r) | (x >> (64 - r)) }
@inline(__always) private func xxRound(_ acc: UInt64, _ lane: UInt64) -> UInt64 { rotl(acc &+ lane &* prime2, 31) &* prime1 }
@inline(__always) private func xxMerge(_ acc: UInt64, _ v: UInt64) -> UInt64 { (acc ^ xxRound(0, v)) &* prime1 &+ prime4 }
@inline(__always) private func load64(_ b: UnsafeRawBufferPointer, _ i: Int) -> UInt64 {
    UInt64(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt64.self))
}

/// XXH64 of `bytes` with `seed` (the .rnw format uses seed 0 everywhere).
func xxHash64(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
    let n = bytes.count
    var i = 0
    var h: UInt64
    if n >= 32 {
        // Four independent lanes over 32-byte stripes.
        var v1 = seed &+ prime1 &+ prime2, v2 = seed &+ prime2, v3 = seed, v4 = seed &- prime1
        while n - i >= 32 {
            v1 = xxRound(v1, load64(bytes, i))
            v2 = xxRound(v2, load64(bytes, i + 8))
            v3 = xxRound(v3, load64(bytes, i + 16))
            v4 = xxRound(v4, load64(bytes, i + 24))
            i += 32
        }
        h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
        h = xxMerge(h, v1); h = xxMerge(h, v2); h = xxMerge(h, v3); h = xxMerge(h, v4)
    } else {
        h = seed &+ prime5
    }
    return xxTail(h &+ UInt64(n), bytes, from: i)
}

/// The end of XXH64: `h` (lanes merged, or the short-input start, plus the total length) takes
/// in the last bytes of `b` from `i` on (fewer than 32), then is mixed.
@inline(__always) private func xxTail(_ start: UInt64, _ b: UnsafeRawBufferPointer, from i0: Int) -> UInt64 {
    var h = start
    var i = i0
    let n = b.count
    while n - i >= 8 {
        h ^= xxRound(0, load64(b, i))
        h = rotl(h, 27) &* prime1 &+ prime4
        i += 8
    }
    if n - i >= 4 {
        h ^= UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt32.self))) &* prime1
        h = rotl(h, 23) &* prime2 &+ prime3
        i += 4
    }
    while i < n {
        h ^= UInt64(b[i]) &* prime5
        h = rotl(h, 11) &* prime1
        i += 1
    }
    h ^= h >> 33; h = h &* prime2
    h ^= h >> 29; h = h &* prime3
    h ^= h >> 32
    return h
}

/// XXH64 of `source` (seed 0 unless given), computed while the same loop copies `source` to
/// `destination`: one pass over the bytes instead of a hash pass and a copy pass. XXH64 is bound
/// by its 64-bit multiplies and a copy by loads and stores, so the two share a core's ports well;
/// this is what lets a verified read of a whole file cost little more than an unverified one
/// (docs/BENCHMARKS.md, "Opening a .rnw"). `destination` must hold `source.count` bytes and not overlap it.
/// Results equal ``xxHash64(_:seed:)`` on every input.
func xxHash64Copying(_ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer, seed: UInt64 = 0) -> UInt64 {
    let n = source.count
    guard n > 0, let base = source.baseAddress else { return xxHash64(source, seed: seed) }
    var i = 0
    var h: UInt64
    if n >= 32 {
        var v1 = seed &+ prime1 &+ prime2, v2 = seed &+ prime2, v3 = seed, v4 = seed &- prime1
        while n - i >= 32 {
            // Raw words are stored as they are (a byte copy); the hash reads them little-endian.
            let a = base.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let b = base.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self)
            let c = base.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self)
            let d = base.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self)
            destination.storeBytes(of: a, toByteOffset: i, as: UInt64.self)
            destination.storeBytes(of: b, toByteOffset: i + 8, as: UInt64.self)
            destination.storeBytes(of: c, toByteOffset: i + 16, as: UInt64.self)
            destination.storeBytes(of: d, toByteOffset: i + 24, as: UInt64.self)
            v1 = xxRound(v1, UInt64(littleEndian: a))
            v2 = xxRound(v2, UInt64(littleEndian: b))
            v3 = xxRound(v3, UInt64(littleEndian: c))
            v4 = xxRound(v4, UInt64(littleEndian: d))
            i += 32
        }
        h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
        h = xxMerge(h, v1); h = xxMerge(h, v2); h = xxMerge(h, v3); h = xxMerge(h, v4)
    } else {
        h = seed &+ prime5
    }
    // The tail (under 32 bytes) is copied as bytes and hashed exactly as in xxHash64.
    (destination + i).copyMemory(from: base + i, byteCount: n - i)
    return xxTail(h &+ UInt64(n), source, from: i)
}

/// XXH64 of bytes that arrive in pieces (seed 0): ``finish()`` equals ``xxHash64(_:seed:)`` of
/// all the pieces put together, however they were split. The streaming writer hashes each tensor
/// as it is produced, a few rows at a time, into small staging buffers.
struct XXHash64Stream {
    private var v1 = prime1 &+ prime2, v2 = prime2, v3: UInt64 = 0, v4 = 0 &- prime1
    private var total = 0
    /// Bytes not yet part of a 32-byte stripe (fewer than 32).
    private var pending: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    private var pendingCount = 0

    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        total += bytes.count
        var i = 0
        if pendingCount > 0 {
            let take = min(32 - pendingCount, bytes.count)
            withUnsafeMutableBytes(of: &pending) { p in
                (p.baseAddress! + pendingCount).copyMemory(from: base, byteCount: take)
            }
            pendingCount += take
            i = take
            guard pendingCount == 32 else { return }
            withUnsafeBytes(of: pending) { stripe($0, 0) }
            pendingCount = 0
        }
        while bytes.count - i >= 32 {
            stripe(bytes, i)
            i += 32
        }
        if i < bytes.count {
            withUnsafeMutableBytes(of: &pending) { p in
                p.baseAddress!.copyMemory(from: base + i, byteCount: bytes.count - i)
            }
            pendingCount = bytes.count - i
        }
    }

    @inline(__always) private mutating func stripe(_ b: UnsafeRawBufferPointer, _ i: Int) {
        v1 = xxRound(v1, load64(b, i))
        v2 = xxRound(v2, load64(b, i + 8))
        v3 = xxRound(v3, load64(b, i + 16))
        v4 = xxRound(v4, load64(b, i + 24))
    }

    func finish() -> UInt64 {
        var h: UInt64
        if total >= 32 {
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = xxMerge(h, v1); h = xxMerge(h, v2); h = xxMerge(h, v3); h = xxMerge(h, v4)
        } else {
            h = prime5
        }
        return withUnsafeBytes(of: pending) { xxTail(h &+ UInt64(total), UnsafeRawBufferPointer(rebasing: $0[0 ..< pendingCount]), from: 0) }
    }
}
