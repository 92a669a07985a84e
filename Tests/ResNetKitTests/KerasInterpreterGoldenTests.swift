import Foundation
import Testing
import ResNetKit

// The interpreter on real published Keras files against the outputs the real framework computed
// for the same inputs (io.npz beside each file, see fixtures-external/EXPECTED.md).

private let interpreterExternalDir = Paths.external
private let interpreterExternalPresent = FileManager.default.fileExists(atPath: interpreterExternalDir.path)

@Test("the interpreter reproduces the Keras output of a real model",
      .enabled(if: interpreterExternalPresent, "../shared/fixtures-external is absent: external golden tests skipped"),
      arguments: ["mlcommons-tiny/pretrainedResnet.h5", "leogem-keras-injector/ResNet20.keras"])
func interpreterReproducesRealKerasOutput(_ model: String) throws {
    let path = interpreterExternalDir.appendingPathComponent(model).path
    let io = try NPZ.read(path: interpreterExternalDir.appendingPathComponent(model).deletingLastPathComponent()
        .appendingPathComponent("io.npz").path)
    let input = try #require(io["input"]?.tensor), expected = try #require(io["output"]?.tensor)
    let graph = try #require(try readKerasFile(path: path).graph, "\(model) has no layer graph")
    let output = try interpretKerasGraph(graph, input: input, file: path)
    #expect(output.shape == expected.shape)
    let maxErr = zip(output.data, expected.data).map { abs($0 - $1) }.max() ?? .infinity
    let scale = expected.data.map { abs($0) }.max() ?? 0
    let tolerance = 1e-4 * max(1, scale)
    testLog("\(model): interpreter vs framework max|err| \(maxErr), max|ref| \(scale), tolerance \(tolerance)")
    #expect(maxErr <= tolerance)
}
