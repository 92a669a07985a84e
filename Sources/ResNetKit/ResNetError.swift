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

extension ResNetError {
    /// The file names that code working on in-memory models and tensors (the forward pass, the
    /// spec checks, the dtype encoders) puts in its errors, not knowing which file the model or the
    /// input tensor came from. The pipeline entry points replace them (``naming(model:input:)``) so
    /// that every message names a real file.
    static let modelPlaceholder = "model"
    static let inputPlaceholder = "input"

    /// Whether this error names one of the placeholders instead of a file.
    var namesPlaceholder: Bool {
        switch self {
        case let .invalidInput(file, _, _), let .unsupported(file, _, _), let .io(file, _), let .mapping(file, _):
            return file == Self.modelPlaceholder || file == Self.inputPlaceholder
        case .parityFailed, .usage: return false
        }
    }

    /// This error with the placeholders replaced by the files they stand for (nil keeps one).
    func naming(model: String?, input: String?) -> ResNetError {
        func named(_ file: String) -> String {
            if file == Self.modelPlaceholder, let model { return model }
            if file == Self.inputPlaceholder, let input { return input }
            return file
        }
        switch self {
        case let .invalidInput(file, place, reason): return .invalidInput(file: named(file), place: place, reason: reason)
        case let .unsupported(file, place, reason): return .unsupported(file: named(file), place: place, reason: reason)
        case let .io(file, reason): return .io(file: named(file), reason: reason)
        case let .mapping(file, reason): return .mapping(file: named(file), reason: reason)
        case .parityFailed, .usage: return self
        }
    }
}

extension ResNetError {
    /// The message without its file: the place and the reason, for quoting inside another error.
    var withoutFile: String {
        switch self {
        case let .invalidInput(_, place, reason): return place.isEmpty ? reason : "at \(place): \(reason)"
        case let .unsupported(_, place, reason): return "unsupported" + (place.isEmpty ? "" : " at \(place)") + ": \(reason)"
        case let .io(_, reason): return "I/O error: \(reason)"
        case let .mapping(_, reason): return reason
        case let .parityFailed(reason): return reason
        case let .usage(message): return message
        }
    }
}

/// Runs `body`, naming the files behind the placeholders in any ``ResNetError`` it throws: `model`
/// is the file the model was read from, `input` the file the input tensor came from.
func namingFiles<T>(model: String?, input: String? = nil, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as ResNetError where e.namesPlaceholder {
        throw e.naming(model: model, input: input)
    }
}
