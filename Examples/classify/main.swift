// Loads a .rnw file and classifies the images in an .npy file: the smallest useful loader.
//
//   resnet-classify-example MODEL.rnw IMAGES.npy [--nhwc]
//
// IMAGES.npy holds float32 images, (N, C, H, W) or with --nhwc (N, H, W, C), already preprocessed
// the way the model expects (the spec's `preprocessing` note says how, when the source said).
import Foundation
import ResNetKit

func classify(arguments: [String]) throws {
    let positional = arguments.filter { !$0.hasPrefix("--") }
    guard positional.count == 2 else {
        throw ResNetError.usage("usage: resnet-classify-example MODEL.rnw IMAGES.npy [--nhwc]")
    }
    // Checks every checksum while copying the weights out (one pass); they come back as float32
    // whatever the stored dtype.
    let model = try RNWReader.readModel(at: positional[0])
    guard var images = try NPY.read(path: positional[1]).tensor, images.shape.count == 4 else {
        throw ResNetError.invalidInput(file: positional[1], place: "", reason: "expected a 4-D float array")
    }
    if arguments.contains("--nhwc") { images = images.permuted([0, 3, 1, 2]) }

    let output = try forward(model, input: images)
    let classes = output.count / images.shape[0]
    if let note = model.spec.preprocessing { print("preprocessing expected: \(note)") }
    for n in 0..<images.shape[0] {
        let row = Array(output.data[(n * classes)..<((n + 1) * classes)])
        let top = row.indices.sorted { row[$0] > row[$1] }.prefix(5)
        print("image \(n): " + top.map { "class \($0) (\(String(format: "%.4g", row[$0])))" }.joined(separator: ", "))
    }
}

do {
    try classify(arguments: Array(CommandLine.arguments.dropFirst()))
} catch let error as ResNetError {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(error.exitCode)
}
