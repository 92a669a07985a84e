import Foundation
import ResNetKit

/// `.rnw` files: header, manifest, spec and every tensor, through the public reader.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRNW(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: bytes, count: count)
    if let reader = try? RNWReader(data: data, name: "<fuzz>") {
        _ = try? reader.model()
    }
    return 0
}
