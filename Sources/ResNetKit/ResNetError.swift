/// Every failure the library reports. Each case says what went wrong, where (file and the place
/// inside it: HDF5 path, layer, tensor, byte offset) and why.
public enum ResNetError: Error, Sendable, CustomStringConvertible {
    /// The file is malformed, truncated, hostile or unsupported. CLI exit code 3.
    case invalidInput(file: String, place: String, reason: String)
    /// The file is well formed but uses something this tool does not support. CLI exit code 3.
    case unsupported(file: String, place: String, reason: String)
    /// Reading or writing failed at the operating-system level. CLI exit code 4.
    case io(file: String, reason: String)
    /// Source tensors could not be mapped onto the canonical model. CLI exit code 3.
    case mapping(file: String, reason: String)
    /// A numerical comparison failed. CLI exit code 1.
    case parityFailed(reason: String)
    /// Flags or arguments do not make sense together. CLI exit code 2.
    case usage(String)

    /// The process exit code the CLI uses for this error.
    public var exitCode: Int32 {
        switch self {
        case .invalidInput, .unsupported, .mapping: return 3
        case .io: return 4
        case .parityFailed: return 1
        case .usage: return 2
        }
    }

    /// The message for people. Every part may hold text from a file (a path, a tensor name, a JSON
    /// string), so each is escaped (``DisplayText/escape(_:)``): no control character reaches the
    /// terminal and overlong names are cut. Only a parity failure spans several lines, which its
    /// checks build with their names already escaped.
    public var description: String {
        func shown(_ place: String) -> String { place.isEmpty ? "(file)" : place.displayed }
        switch self {
        case let .invalidInput(file, place, reason):
            return "\(file.displayed): invalid input at \(shown(place)): \(reason.displayed)"
        case let .unsupported(file, place, reason):
            return "\(file.displayed): unsupported at \(shown(place)): \(reason.displayed)"
        case let .io(file, reason):
            return "\(file.displayed): I/O error: \(reason.displayed)"
        case let .mapping(file, reason):
            return "\(file.displayed): cannot map weights: \(reason.displayed)"
        case let .parityFailed(reason):
            return "parity failed: " + reason.split(separator: "\n", omittingEmptySubsequences: false)
                .map { String($0).displayed }.joined(separator: "\n")
        case let .usage(message):
            return message.displayed
        }
    }
}
