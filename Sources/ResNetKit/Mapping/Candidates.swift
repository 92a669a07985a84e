import Foundation

/// One structure the weights allow: what a file cannot show by its tensors alone (where a stride
/// sits, whether a ReLU follows an addition, how option A splits its zero channels, whether the head
/// ends in softmax) is enumerated as candidates and settled by measurement: parity with goldens when
/// given, else the BatchNorm plausibility check.
public struct StructureCandidate: Sendable {
    /// The canonical model under this reading of the file.
    public var model: ResNetModel
    /// Where each canonical tensor came from (same convention as ``LoadedModel/mapping``).
    public var mapping: [TensorOrigin]
    /// What this candidate assumes, one short phrase per choice (e.g. `stem stride 1, no max pool`).
    public var choices: [String]

    public init(model: ResNetModel, mapping: [TensorOrigin], choices: [String]) {
        self.model = model; self.mapping = mapping; self.choices = choices
    }

    /// The choices as one line, or `as read` when the file left nothing open.
    public var summary: String { choices.isEmpty ? "as read" : choices.joined(separator: ", ") }
}
