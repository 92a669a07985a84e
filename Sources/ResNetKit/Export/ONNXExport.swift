import Foundation

func exportONNX(_ model: ResNetModel, to path: String, display: String, inputSize: [Int]?, batch: Int?) throws
    -> (layout: String, check: String, notes: [String]) {
    throw ResNetError.unsupported(file: display, place: "", reason: "ONNX export is not written yet")
}
