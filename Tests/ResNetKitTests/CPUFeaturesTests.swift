import Foundation
import Testing
@testable import ResNetKit

/// The CPUID/XGETBV checks agree with what the kernel reports in /proc/cpuinfo (Linux; the kernel
/// lists a feature only when it also saves that register state).
@Test func cpuFeaturesAgreeWithProcCpuinfo() throws {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else {
        print("SKIPPED cpuFeaturesAgreeWithProcCpuinfo: no /proc/cpuinfo flags line")
        return
    }
    let flags = Set(line.split(separator: ":").last!.split(separator: " ").map(String.init))
    #expect(CPUFeatures.avx2FMA == (flags.contains("avx2") && flags.contains("fma")))
    let avx512 = ["avx512f", "avx512dq", "avx512bw", "avx512vl"].allSatisfy(flags.contains)
    #expect(CPUFeatures.avx512 == (avx512 && CPUFeatures.avx2FMA))
    if CPUFeatures.avx512 { #expect(CPUFeatures.avx2FMA) }
}
