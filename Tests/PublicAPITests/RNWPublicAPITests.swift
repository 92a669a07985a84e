import Foundation
import Testing
import ResNetKit  // deliberately not @testable: pins what a loader can do with the public API alone

@Test func aLoaderCanWriteAndReadBackThroughThePublicAPIOnly() throws {
    let spec = ResNetSpec(
        family: "api-pin", inputChannels: 1, classes: 2,
        stem: [.conv(ConvOp(name: "conv1", inChannels: 1, outChannels: 2, kernel: [1, 1], padding: .valid, bias: true))],
        stages: [],
        head: [.globalAvgPool, .dense(DenseOp(name: "fc", inFeatures: 2, outFeatures: 2, bias: false))])
    var tensors: [String: Tensor] = [:]
    for (i, p) in spec.parameters.enumerated() {
        tensors[p.name] = Tensor(shape: p.shape, data: (0..<p.shape.reduce(1, *)).map { Float(i * 10 + $0) })
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("api-\(UUID().uuidString).rnw").path
    defer { try? FileManager.default.removeItem(atPath: path) }

    try RNWWriter.write(ResNetModel(spec: spec, tensors: tensors), to: path,
                        provenance: RNWProvenance(sourceFormat: "test", sourcePath: "x.pth"),
                        parity: [RNWParityRecord(passed: true, reference: "read-back", maxAbsError: 0, maxRelError: 0,
                                                 cosine: 1, top1Agreement: 1, tolerance: 0, policy: "exact")],
                        metadata: ["k": "v"])
    let reader = try RNWReader(path: path)
    #expect(reader.manifest.formatMajor == UInt32(RNWFormatVersion.major))
    #expect(reader.entry(named: "fc.weight")?.dtype == .float32)
    #expect(try reader.tensor(named: "conv1.bias") == tensors["conv1.bias"])
    let model = try RNWReader.readModel(at: path)
    #expect(model.spec == spec)
    #expect(model.tensors == tensors)
}
