import Foundation
@_spi(Fuzzing) import ResNetKit

/// Keras model-config JSON (config.json / model_config) into the flat layer graph.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKerasConfig(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    try? FuzzEntry.kerasConfig(Data(bytes: bytes, count: count))
    return 0
}
