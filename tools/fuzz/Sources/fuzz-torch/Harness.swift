import Foundation
import ResNetKit

/// Zip and legacy PyTorch checkpoints, through the public in-memory reader.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTorch(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: bytes, count: count)
    _ = try? readTorchCheckpoint(data: data, name: "<fuzz>")
    return 0
}
