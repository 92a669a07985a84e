import ArgumentParser
import Foundation
import ResNetKit

@main
struct ResNetConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resnet-convert",
        abstract: "Convert ResNet weights between frameworks, proving parity with a reference forward pass.",
        discussion: """
        Exit codes: 0 ok, 1 parity failed, 2 usage, 3 invalid/unsupported/refused input, 4 I/O error \
        (including an existing output refused by --no-clobber). With --json a failure also prints a JSON \
        object {"error": {...}} on stdout.
        """,
        version: resnetConvertVersion,
        subcommands: [Convert.self, Verify.self, Inspect.self, Diff.self, Export.self, Bench.self],
        defaultSubcommand: Convert.self
    )

    /// Maps every failure onto the documented exit codes (ArgumentParser's own usage code is 64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as ResNetError {
            Terminal.error(error.description)
            Terminal.jsonError(ErrorReport(error))
            Foundation.exit(error.exitCode)
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            // ArgumentParser starts its messages with "Error: "; ours says "error: " once.
            var message = fullMessage(for: error)
            if message.hasPrefix("Error: ") { message.removeFirst("Error: ".count) }
            Terminal.error(message)
            Terminal.jsonError(ErrorReport(exitCode: 2, kind: "usage", file: nil, place: nil,
                                           message: message.split(separator: "\n").first.map(String.init) ?? message))
            Foundation.exit(2)
        }
    }
}

/// The JSON object `--json` prints on stdout when a command fails: the exit code, the kind of
/// failure, the file and place when the error names them, and the message for people.
struct ErrorReport: Encodable {
    struct Body: Encodable {
        var exitCode: Int32
        var kind: String
        var file: String?
        var place: String?
        var message: String
    }
    var error: Body

    init(exitCode: Int32, kind: String, file: String?, place: String?, message: String) {
        error = Body(exitCode: exitCode, kind: kind, file: file, place: place, message: message)
    }

    init(_ e: ResNetError) {
        switch e {
        case let .invalidInput(file, place, _): self.init(exitCode: e.exitCode, kind: "invalid_input", file: file, place: place, message: e.description)
        case let .unsupported(file, place, _): self.init(exitCode: e.exitCode, kind: "unsupported", file: file, place: place, message: e.description)
        case let .io(file, _): self.init(exitCode: e.exitCode, kind: "io", file: file, place: nil, message: e.description)
        case let .mapping(file, _): self.init(exitCode: e.exitCode, kind: "mapping", file: file, place: nil, message: e.description)
        case .parityFailed: self.init(exitCode: e.exitCode, kind: "parity_failed", file: nil, place: nil, message: e.description)
        case .usage: self.init(exitCode: e.exitCode, kind: "usage", file: nil, place: nil, message: e.description)
        }
    }
}

/// Output helpers: results on stdout, errors and progress on stderr (progress only on a terminal).
enum Terminal {
    /// `message` is escaped line by line (``DisplayText``): the library escapes the names inside
    /// its messages, this catches anything that reached a message another way.
    static func error(_ message: String) {
        FileHandle.standardError.write(Data("error: \(escapedLines(message))\n".utf8))
    }

    static let isInteractive = isatty(STDERR_FILENO) == 1

    /// Progress messages name files and quote notes, so they are escaped whole.
    static func progress(_ message: String) {
        guard isInteractive else { return }
        FileHandle.standardError.write(Data("… \(message.displayed)\n".utf8))
    }

    /// Prints text for people on stdout. Fields from files must already be escaped where they are
    /// interpolated (a line break inside a name cannot be told from ours here); each line is escaped
    /// once more so that no control character reaches the terminal whatever was missed.
    static func show(_ text: String) {
        print(escapedLines(text))
    }

    private static func escapedLines(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { String($0).displayed }.joined(separator: "\n")
    }

    /// Whether `--json` was given (before any `--`): failures then print a JSON error object too.
    static let wantsJSON = CommandLine.arguments.dropFirst().prefix { $0 != "--" }.contains("--json")

    /// Prints `report` on stdout when `--json` was given. Fields from files are escaped like every
    /// other JSON this tool prints.
    static func jsonError(_ report: ErrorReport) {
        guard wantsJSON else { return }
        try? json(report)
    }

    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        print(jsonSafeForTerminals(String(decoding: try encoder.encode(value), as: UTF8.self)))
    }

    /// The encoder escapes C0 controls but passes C1 controls and the bidi and line-separator
    /// characters through raw, which a terminal showing the JSON would act on. They can only occur
    /// inside JSON strings, where `\uXXXX` denotes the very same character: the values stay exact.
    static func jsonSafeForTerminals(_ json: String) -> String {
        var out = ""
        out.reserveCapacity(json.utf8.count)
        for s in json.unicodeScalars {
            if s.value == 0x7F || DisplayText.isTerminalFormatting(s) {
                let hex = String(s.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(s)
            }
        }
        return out
    }
}

extension Layout: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.uppercased()) }
}

extension DType: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument.lowercased() {
        case "f32", "float32": self = .float32
        case "f16", "float16": self = .float16
        case "bf16", "bfloat16": self = .bfloat16
        case "int8", "i8": self = .int8
        default: return nil
        }
    }
    public static var allValueStrings: [String] { ["f32", "f16", "bf16", "int8"] }
}

/// How to read a source file: shared by every command that reads one.
struct SourceOptions: ParsableArguments {
    @Option(help: "Architecture preset (see `inspect --list-presets`): needed for Keras weights-only files; for PyTorch files it fixes the structure instead of detecting it.")
    var arch: String?

    @Option(name: .customLong("map"), help: "JSON naming table for a PyTorch layout no built-in scheme knows (see the Mapping article).")
    var mapFile: String?

    @Option(help: ArgumentHelp("PyTorch checkpoints: the entry holding the weights, as a dotted path (e.g. state_dict_ema, model), instead of the automatic choice.", valueName: "path"))
    var weights: String?
}

/// A limit given on the command line: a count or a byte size with an optional K/M/G/T suffix.
struct LimitValue: ExpressibleByArgument {
    var value: Int
    init?(argument: String) {
        guard let v = ReadLimits.parseByteCount(argument) else { return nil }
        value = v
    }
}

/// Resource limits for reading untrusted files (``ReadLimits``): shared by every command that reads one.
struct LimitOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Largest tensor, in bytes once decoded to float32 (default 2G).", valueName: "size"))
    var maxTensorBytes: LimitValue?

    @Option(help: ArgumentHelp("Largest total of all tensors of one file, in bytes as float32 (default 8G).", valueName: "size"))
    var maxTotalBytes: LimitValue?

    @Option(help: ArgumentHelp("Most entries in one pickle's memo (default 1M = 1048576).", valueName: "n"))
    var maxPickleMemo: LimitValue?

    @Option(help: ArgumentHelp("Deepest nesting in a pickle: open MARKs, nested modules (default 200).", valueName: "n"))
    var maxPickleDepth: LimitValue?

    @Option(help: ArgumentHelp("Largest metadata block, as stored and as decoded: a pickle, a Keras model config, a safetensors header, a .rnw manifest (default 256M).", valueName: "size"))
    var maxHeaderBytes: LimitValue?

    @Option(help: ArgumentHelp("Most memory reading one file may take (inflated members, tensors as float32, decoded configs), as a multiple of the file's size on top of 64M (default 16).", valueName: "n"))
    var maxExpansion: LimitValue?

    /// The standard limits with the flags given applied.
    var readLimits: ReadLimits {
        var l = ReadLimits.standard
        if let v = maxTensorBytes { l.maxTensorBytes = v.value }
        if let v = maxTotalBytes { l.maxTotalBytes = v.value }
        if let v = maxPickleMemo { l.maxPickleMemo = v.value }
        if let v = maxPickleDepth { l.maxPickleDepth = v.value }
        if let v = maxHeaderBytes { l.maxHeaderBytes = v.value }
        if let v = maxExpansion { l.maxExpansion = v.value }
        return l
    }
}
