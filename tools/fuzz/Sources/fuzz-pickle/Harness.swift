import Foundation
@_spi(Fuzzing) import ResNetKit

/// The restricted pickle machine over bare pickles, under both policies.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPickle(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: bytes, count: count)
    try? FuzzEntry.pickle(data, moduleRecords: true)
    try? FuzzEntry.pickle(data, moduleRecords: false)
    return 0
}
