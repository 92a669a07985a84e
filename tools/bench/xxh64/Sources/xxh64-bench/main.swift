// Checks the Swift xxHash64 against libxxhash on many lengths and alignments, then reports the
// throughput of both on a 100 MiB random buffer (best of 5), and of a plain copy and the copying
// hash (xxHash64Copying) into a destination whose pages are already mapped.
import CXXHash
import Foundation

let size = 100 * 1024 * 1024
var generator = SystemRandomNumberGenerator()
let bytes = (0..<(size + 8)).map { _ in UInt8.random(in: 0...255, using: &generator) }

bytes.withUnsafeBytes { all in
    for length in 0..<300 {
        for offset in 0..<3 {
            let slice = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + length)])
            for seed: UInt64 in [0, 0x9E37_79B1] where xxHash64(slice, seed: seed) != XXH64(slice.baseAddress, length, seed) {
                print("MISMATCH at length \(length), offset \(offset), seed \(seed)")
                exit(1)
            }
        }
    }
    print("Swift xxHash64 agrees with libxxhash \(XXH_versionNumber()) on lengths 0..<300, 3 alignments, 2 seeds")
    let buffer = UnsafeRawBufferPointer(rebasing: all[0..<size])
    for (name, hash) in [("libxxhash XXH64", { XXH64(buffer.baseAddress, size, 0) }), ("Swift xxHash64", { xxHash64(buffer) })] as [(String, () -> UInt64)] {
        var best = Double.infinity
        var result: UInt64 = 0
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            result = hash()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        print(String(format: "%@: %.2f GB/s  (hash %016llx)", name, Double(size) / best / 1e9, result))
    }
    let destination = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
    defer { destination.deallocate() }
    destination.initializeMemory(as: UInt8.self, repeating: 0, count: size)   // map every page first
    for (name, run) in [("copy (copyMemory)", { destination.copyMemory(from: buffer.baseAddress!, byteCount: size); return UInt64(0) }),
                        ("copy + Swift xxHash64, two passes", { destination.copyMemory(from: buffer.baseAddress!, byteCount: size); return xxHash64(buffer) }),
                        ("Swift xxHash64Copying, one pass", { xxHash64Copying(buffer, to: destination) })] as [(String, () -> UInt64)] {
        var best = Double.infinity
        var result: UInt64 = 0
        for _ in 0..<5 {
            let start = DispatchTime.now().uptimeNanoseconds
            result = run()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        print(String(format: "%@: %.2f GB/s, %.1f ms  (hash %016llx)", name, Double(size) / best / 1e9, best * 1e3, result))
    }
}
