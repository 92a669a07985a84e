import Foundation
import ResNetKit

/// `.npy` arrays and `.npz` archives (golden files), through the public readers.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: bytes, count: count)
    if data.starts(with: [0x50, 0x4B]) {
        _ = try? NPZ.read(data: data, file: "<fuzz>")
    } else {
        _ = try? NPY.read(data, file: "<fuzz>")
    }
    return 0
}
