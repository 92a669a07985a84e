import Foundation
import Testing
@testable import ResNetKit

/// The HWIO → OIHW transposes only move values, so every path must give the same bits as the
/// plain index loop, on any shape and any range of output channels, and write nothing else.
@Suite struct TransposeKernelTests {
    /// dst[o - lo][ii][k] = src[k][ii][o], one element at a time: the definition.
    static func indexLoop(_ src: [UInt32], hw: Int, i: Int, o: Int, outputs: Range<Int>) -> [UInt32] {
        var dst = [UInt32](repeating: 0, count: outputs.count * i * hw)
        for out in outputs {
            for ii in 0 ..< i {
                for k in 0 ..< hw { dst[((out - outputs.lowerBound) * i + ii) * hw + k] = src[(k * i + ii) * o + out] }
            }
        }
        return dst
    }

    /// Runs one path into a buffer with guard words on both sides; returns the bits written and
    /// whether the guards are intact.
    static func run(_ src: [UInt32], hw: Int, i: Int, o: Int, outputs: Range<Int>, path: TransposePath) -> (bits: [UInt32], guardsIntact: Bool) {
        let pad = 19, sentinel: UInt32 = 0x7FC0_BEEF
        var dst = [UInt32](repeating: sentinel, count: pad + outputs.count * i * hw + pad)
        src.withUnsafeBytes { s in
            dst.withUnsafeMutableBytes { d in
                let floats = d.bindMemory(to: Float.self)
                transposeToOIHW(s.bindMemory(to: Float.self), UnsafeMutableBufferPointer(rebasing: floats[pad ..< floats.count - pad]),
                                hw: hw, i: i, o: o, outputs: outputs, path: path)
            }
        }
        let intact = dst[..<pad].allSatisfy { $0 == sentinel } && dst[(dst.count - pad)...].allSatisfy { $0 == sentinel }
        return (Array(dst[pad ..< dst.count - pad]), intact)
    }

    @Test func everyPathGivesTheIndexLoopsBitsOnRandomShapesAndOutputRanges() {
        var rng = SplitMix64(state: 2024)
        if !CPUFeatures.avx2FMA { print("SKIPPED the AVX2 half of the transpose comparison: this CPU has no AVX2") }
        var cases = 0
        for hw in [1, 4, 9, 49] {
            for _ in 0 ..< 90 {
                let i = Int.random(in: 1 ... 70, using: &rng), o = Int.random(in: 1 ... 70, using: &rng)
                // Any bit pattern: NaN payloads, signed zeros and subnormals must come through unchanged.
                let src = (0 ..< hw * i * o).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
                let lo = Int.random(in: 0 ..< o, using: &rng)
                let hi = Int.random(in: lo + 1 ... o, using: &rng)
                for outputs in [0 ..< o, lo ..< hi] {
                    let expected = Self.indexLoop(src, hw: hw, i: i, o: o, outputs: outputs)
                    for path in CPUFeatures.avx2FMA ? [TransposePath.swift, .avx2] : [.swift] {
                        let got = Self.run(src, hw: hw, i: i, o: o, outputs: outputs, path: path)
                        #expect(got.bits == expected, "\(path): hw \(hw), i \(i), o \(o), outputs \(outputs)")
                        #expect(got.guardsIntact, "\(path) wrote outside its rows: hw \(hw), i \(i), o \(o), outputs \(outputs)")
                    }
                    cases += 1
                }
            }
        }
        #expect(cases == 720)
    }

    @Test func fullTilesAndRaggedEdgesOfTheAVX2KernelMatchTheSwiftLoops() {
        guard CPUFeatures.avx2FMA else {
            print("SKIPPED fullTilesAndRaggedEdgesOfTheAVX2KernelMatchTheSwiftLoops: this CPU has no AVX2")
            return
        }
        var rng = SplitMix64(state: 99)
        // Multiples of 8 and 16 (whole tiles and passes) next to one more and one fewer.
        for (hw, i, o) in [(9, 64, 64), (9, 16, 33), (1, 64, 256), (1, 65, 127), (49, 3, 64), (4, 8, 17), (1, 1, 1), (1, 8, 8)] {
            let src = (0 ..< hw * i * o).map { _ in UInt32(truncatingIfNeeded: rng.next()) }
            for outputs in [0 ..< o, 0 ..< min(o, 16), (o / 3) ..< o, (o - 1) ..< o, (o / 2) ..< (o / 2 + 1)] {
                let swift = Self.run(src, hw: hw, i: i, o: o, outputs: outputs, path: .swift)
                let avx2 = Self.run(src, hw: hw, i: i, o: o, outputs: outputs, path: .avx2)
                #expect(avx2.bits == swift.bits && avx2.guardsIntact, "hw \(hw), i \(i), o \(o), outputs \(outputs)")
            }
        }
    }

    /// The kernel's masked loads at the last output channels must not read past the source: here
    /// it ends at a page boundary with an inaccessible page behind it (a read there would fault).
    @Test func theAVX2KernelReadsNothingPastTheEndOfTheSource() throws {
        guard CPUFeatures.avx2FMA else {
            print("SKIPPED theAVX2KernelReadsNothingPastTheEndOfTheSource: this CPU has no AVX2")
            return
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard let base = mmap(nil, 3 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            Issue.record("mmap failed: \(errnoText())")
            return
        }
        defer { munmap(base, 3 * page) }
        #expect(mprotect(base + 2 * page, page, PROT_NONE) == 0)
        var rng = SplitMix64(state: 5)
        for (hw, i, o) in [(9, 5, 13), (1, 37, 13), (4, 3, 61), (49, 3, 7), (1, 3, 1)] {
            let count = hw * i * o
            let src = (base + 2 * page - count * 4).bindMemory(to: Float.self, capacity: count)
            for j in 0 ..< count { src[j] = Float.random(in: -1 ... 1, using: &rng) }
            let source = UnsafeBufferPointer(start: src, count: count)
            for outputs in [0 ..< o, (o - 1) ..< o, (o / 2) ..< o] {
                var viaAVX2 = [Float](repeating: 0, count: outputs.count * i * hw)
                var viaSwift = viaAVX2
                viaAVX2.withUnsafeMutableBufferPointer { transposeToOIHW(source, $0, hw: hw, i: i, o: o, outputs: outputs, path: .avx2) }
                viaSwift.withUnsafeMutableBufferPointer { transposeToOIHW(source, $0, hw: hw, i: i, o: o, outputs: outputs, path: .swift) }
                #expect(viaAVX2 == viaSwift, "hw \(hw), i \(i), o \(o), outputs \(outputs)")
            }
        }
    }
}
