// Measures what checksum verification adds to opening a .rnw file.
//
//   swift build -c release --product rnw-open-bench
//   .build/release/rnw-open-bench MODEL.rnw [repetitions]
//
// For each mode it reports the best of N runs (page cache warm after the first), for
// (a) open only: header, manifest, layout, padding; (b) open + all tensors copied to float32;
// each with and without per-tensor xxHash64 verification.
import Foundation
import ResNetKit

let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write(Data("usage: rnw-open-bench MODEL.rnw [repetitions]\n".utf8))
    exit(2)
}
let path = args[1]
let repetitions = args.count > 2 ? Int(args[2]) ?? 7 : 7

func best(_ body: () throws -> Void) rethrows -> Double {
    var times: [Double] = []
    for _ in 0..<repetitions {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
    }
    return times.min()!
}

do {
    _ = try RNWReader(path: path)   // warm the page cache
    let openPlain = try best { _ = try RNWReader(path: path, verifyChecksums: false) }
    let openVerified = try best { _ = try RNWReader(path: path, verifyChecksums: true) }
    let loadPlain = try best { _ = try RNWReader(path: path, verifyChecksums: false).model() }
    let loadVerified = try best { _ = try RNWReader(path: path, verifyChecksums: true).model() }
    func row(_ name: String, _ a: Double, _ b: Double) {
        print(String(format: "%@: %.2f ms without checksums, %.2f ms with (+%.1f%%)", name, a, b, (b / a - 1) * 100))
    }
    print("\(path), best of \(repetitions)")
    row("open", openPlain, openVerified)
    row("open + read all tensors", loadPlain, loadVerified)
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(3)
}
