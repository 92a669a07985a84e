// Measures what checksum verification adds to opening a .rnw file.
//
//   swift build -c release --product rnw-open-bench
//   .build/release/rnw-open-bench MODEL.rnw [repetitions]
//
// For each mode it reports the best and the median of N rounds (page cache warm after the first), for
// (a) open only: header, manifest, layout, padding (+ every tensor's xxHash64 when verifying);
// (b) open, then copy all tensors to float32 (verified: hash at open, then copy);
// (c) the same in one call, readModel(at:) (verified: hashed on a second thread during the copy);
// each with and without per-tensor checksum verification.
import Foundation
import ResNetKit

let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write(Data("usage: rnw-open-bench MODEL.rnw [repetitions]\n".utf8))
    exit(2)
}
let path = args[1]
let repetitions = args.count > 2 ? Int(args[2]) ?? 7 : 7

/// Runs every mode once per round, in a rotating order, so that load from other processes on a
/// shared machine falls on all modes alike; returns each mode's times in milliseconds.
func rounds(_ modes: [() throws -> Void]) throws -> [[Double]] {
    var times = [[Double]](repeating: [], count: modes.count)
    for r in 0..<repetitions {
        for k in 0..<modes.count {
            let m = (r + k) % modes.count
            let start = DispatchTime.now().uptimeNanoseconds
            try modes[m]()
            times[m].append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
    }
    return times
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

do {
    _ = try RNWReader(path: path)   // warm the page cache
    let t = try rounds([
        { _ = try RNWReader(path: path, verifyChecksums: false) },
        { _ = try RNWReader(path: path, verifyChecksums: true) },
        { _ = try RNWReader(path: path, verifyChecksums: false).model() },
        { _ = try RNWReader(path: path, verifyChecksums: true).model() },
        { _ = try RNWReader.readModel(at: path, verifyChecksums: false) },
        { _ = try RNWReader.readModel(at: path, verifyChecksums: true) },
    ])
    func row(_ name: String, _ a: [Double], _ b: [Double]) {
        print(String(format: "%@: best %.2f ms without checksums, %.2f ms with (+%.1f%%); median %.2f / %.2f ms (+%.1f%%)",
                     name, a.min()!, b.min()!, (b.min()! / a.min()! - 1) * 100,
                     median(a), median(b), (median(b) / median(a) - 1) * 100))
    }
    print("\(path), \(repetitions) rounds")
    row("open", t[0], t[1])
    row("open, then read all tensors (RNWReader(path:).model())", t[2], t[3])
    row("open and read in one call (RNWReader.readModel(at:))", t[4], t[5])
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(3)
}
