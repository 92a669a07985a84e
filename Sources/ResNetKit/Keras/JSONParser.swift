import Foundation

// A byte-level JSON parser for configs and headers read from untrusted files. It replaces
// Foundation's JSONDecoder + Codable, which took 22-36 ms on the 100 KB ResNet-50 config and
// whose JSON5 mode trapped on malformed numbers (tools/fuzz findings).
//
// Grammar: RFC 8259 (whitespace is space, tab, LF, CR; a leading UTF-8 byte order mark is skipped,
// as RFC 8259 §8.1 allows and as Foundation did) plus, when `allowsNonFinite`, the bare tokens
// `NaN`, `Infinity` and `-Infinity` that Python's json module writes. Nothing else: no trailing
// commas (Foundation accepted them; Python never writes them), comments, single quotes or leading
// zeros.
//
// Choices made to match what Foundation's JSONDecoder returned for the same text:
// - duplicate object keys, at any depth, are refused: Python's json keeps the last, Foundation
//   and serde keep the first, so a file with one would mean different things to different
//   readers (neither Keras nor safetensors writers produce duplicates);
// - nesting: 512 levels of arrays/objects are accepted, 513 refused;
// - numbers are converted correctly rounded; a number whose digits overflow to ±infinity
//   (`1e400`, 400 digits) or that is not zero but rounds to zero (`1e-400`) is refused;
//   subnormals are kept. Integers of any length that fit (`9` × 85) are read as their nearest
//   Double;
// - `\u0000` is allowed in strings; a lone or mismatched UTF-16 surrogate escape is refused.
//
// The parser is iterative (an explicit stack of open containers), so depth costs heap, not
// stack. Memory: the finished value is an indirect enum, one heap box per value. Small values
// (true, false, empty containers, integers below 1024) and recently seen short tokens share
// boxes, so peak memory measured 3-6× the input for 30-70 MB arrays of numbers or strings; each
// object is a Swift Dictionary, so an array of tiny objects (`[{"a1":1},…]`, 46 MB) peaked at
// 14× (Foundation's JSONDecoder: 19×, and ten times slower). The parser keeps an estimate of
// what the finished value holds (every value a box and an array slot, every object
// member a dictionary entry) and refuses text whose estimate passes ``ReadLimits/maxHeaderBytes``,
// so a metadata block costs at most that much however it is shaped; the estimate is also charged
// to the file's ``ReadBudget`` when one is given.

/// Parses JSON text into a JSONValue, accepting Python's `NaN` / `Infinity` / `-Infinity`.
/// Failures name `place` and the byte offset of the problem.
func parseKerasJSON(_ data: Data, file: String, place: String, budget: ReadBudget? = nil) throws -> JSONValue {
    try parseJSON(data, file: file, place: place, allowsNonFinite: true, budget: budget)
}

/// Parses JSON text into a JSONValue. `allowsNonFinite` admits the bare tokens Python writes for
/// non-finite floats. Failures are `ResNetError.invalidInput` at `"<place> byte <offset>"`.
func parseJSON(_ data: Data, file: String, place: String, allowsNonFinite: Bool, budget: ReadBudget? = nil) throws -> JSONValue {
    try data.withUnsafeBytes { raw in
        var parser = JSONTextParser(bytes: raw.bindMemory(to: UInt8.self), file: file, place: place,
                                    allowsNonFinite: allowsNonFinite)
        let value = try parser.parse()
        try budget?.charge(parser.decodedEstimate, place: place, what: "the decoded JSON", probe: false)
        return value
    }
}

/// Values shared by every parse, so that repeated small values cost a pointer, not a heap box.
private enum SharedJSON {
    static let yes = JSONValue.bool(true)
    static let no = JSONValue.bool(false)
    static let emptyArray = JSONValue.array([])
    static let emptyObject = JSONValue.object([:])
    static let emptyString = JSONValue.string("")
    static let nan = JSONValue.number(.nan)
    static let infinity = JSONValue.number(.infinity)
    static let minusInfinity = JSONValue.number(-.infinity)
    /// 0 … 1023: shapes, strides, filter counts and flags in Keras configs.
    static let smallIntegers: [JSONValue] = (0 ..< 1024).map { .number(Double($0)) }
}

/// Powers of ten exactly representable as Double (10^22 is the largest), for the exact fast path.
private let exactPowersOfTen: [Double] = (0 ... 22).map { e in
    var p = 1.0
    for _ in 0 ..< e { p *= 10 }
    return p
}

/// Deepest nesting of arrays and objects accepted; Foundation's JSONDecoder refused 513 levels.
let jsonMaxDepth = 512

private struct JSONTextParser {
    let b: UnsafeBufferPointer<UInt8>
    let file: String
    let place: String
    let allowsNonFinite: Bool
    var i = 0

    /// One open array or object: its finished elements (member values), an object's keys (one
    /// per value, plus the pending one), and where it opened, for messages.
    struct Frame {
        var isObject: Bool
        var offset: Int
        var values: [JSONValue] = []
        var keys: [String] = []
    }
    var frames: [Frame] = []
    /// Bytes of a string with escapes, decoded.
    var scratch: [UInt8] = []
    /// Recently seen short number tokens and strings, so that a repeated value (`0.001`,
    /// `"float32"`) shares one heap box instead of allocating another.
    var numberCache = TokenCache()
    var stringCache = TokenCache()
    /// Bytes the decoded value holds, estimated, against `decodedCap`.
    var decodedEstimate = 0
    let decodedCap = ReadLimits.current.maxHeaderBytes

    /// Adds `bytes` to the estimate; refuses the text once it passes the cap.
    @inline(__always) mutating func account(_ bytes: Int) throws {
        decodedEstimate &+= bytes
        if decodedEstimate > decodedCap {
            throw ResNetError.invalidInput(file: file, place: "\(place) byte \(i)", reason: ReadLimits.current.reason(.headerBytes,
                found: "the JSON text decodes to more than \(decodedEstimate) bytes in memory (estimated)"))
        }
    }

    init(bytes: UnsafeBufferPointer<UInt8>, file: String, place: String, allowsNonFinite: Bool) {
        self.b = bytes
        self.file = file
        self.place = place
        self.allowsNonFinite = allowsNonFinite
    }

    func fail(_ offset: Int, _ reason: String) -> ResNetError {
        .invalidInput(file: file, place: "\(place) byte \(offset)", reason: "invalid JSON: \(reason)")
    }

    /// The byte at `offset` for a message: `'x'`, `byte 0x01` or `end of input`.
    func found(_ offset: Int) -> String {
        guard offset < b.count else { return "end of input" }
        let c = b[offset]
        if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "byte 0x\(String(c, radix: 16, uppercase: true))"
    }

    @inline(__always) mutating func skipWhitespace() {
        while i < b.count {
            let c = b[i]
            guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
            i += 1
        }
    }

    mutating func parse() throws -> JSONValue {
        if b.count >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF { i = 3 }
        skipWhitespace()
        guard i < b.count else { throw fail(i, "no JSON value (the text is empty or only whitespace)") }
        while true {
            // A value starts at `i` (whitespace skipped).
            var value: JSONValue
            let c = b[i]
            if c == UInt8(ascii: "[") || c == UInt8(ascii: "{") {
                guard frames.count < jsonMaxDepth else {
                    throw fail(i, "arrays and objects nested deeper than \(jsonMaxDepth) levels")
                }
                let isObject = c == UInt8(ascii: "{")
                let open = i
                i += 1
                skipWhitespace()
                if i < b.count && b[i] == (isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                    i += 1
                    value = isObject ? SharedJSON.emptyObject : SharedJSON.emptyArray
                } else {
                    frames.append(Frame(isObject: isObject, offset: open))
                    if isObject { try readKey() }
                    guard i < b.count else { throw fail(i, "unterminated \(isObject ? "object" : "array") opened at byte \(open)") }
                    continue
                }
            } else {
                value = try readScalar()
            }
            // A value is finished: attach it to the innermost open container, closing as many
            // containers as the text closes here.
            while true {
                guard !frames.isEmpty else {
                    skipWhitespace()
                    guard i == b.count else {
                        throw fail(i, "unexpected \(found(i)) after the JSON value (only whitespace may follow it)")
                    }
                    return value
                }
                try account(Self.valueBytes)
                frames[frames.count - 1].values.append(value)
                let isObject = frames[frames.count - 1].isObject
                skipWhitespace()
                let closer = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
                guard i < b.count else {
                    throw fail(i, "unterminated \(isObject ? "object" : "array") opened at byte \(frames[frames.count - 1].offset)")
                }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    skipWhitespace()
                    if i < b.count && b[i] == closer {
                        throw fail(i, "trailing comma before '\(Character(Unicode.Scalar(closer)))'")
                    }
                    if isObject { try readKey() }
                    guard i < b.count else {
                        throw fail(i, "unterminated \(isObject ? "object" : "array") opened at byte \(frames[frames.count - 1].offset)")
                    }
                    break
                }
                guard b[i] == closer else {
                    throw fail(i, "expected ',' or '\(Character(Unicode.Scalar(closer)))' after \(isObject ? "an object member" : "an array element"), found \(found(i))")
                }
                i += 1
                let frame = frames.removeLast()
                try account(Self.containerBytes + (isObject ? Self.memberBytes * frame.values.count : 0))
                value = isObject ? try closeObject(frame) : .array(frame.values)
            }
        }
    }

    /// Estimated bytes of one value in its container (array slot plus heap box), of a container
    /// itself, and of one object member (dictionary entry with its key).
    static let valueBytes = 32, containerBytes = 48, memberBytes = 48

    func closeObject(_ frame: Frame) throws -> JSONValue {
        var members = [String: JSONValue](minimumCapacity: frame.values.count)
        for k in 0 ..< frame.values.count {
            guard members.updateValue(frame.values[k], forKey: frame.keys[k]) == nil else {
                let key = frame.keys[k]
                let shown = key.utf8.count <= 200 ? key : String(decoding: key.utf8.prefix(200), as: UTF8.self) + "… (\(key.utf8.count) bytes)"
                throw ResNetError.invalidInput(file: file, place: "\(place) object at byte \(frame.offset)",
                    reason: "key '\(shown)' appears twice: Python's json keeps the last, other readers the first; refusing to guess")
            }
        }
        return .object(members)
    }

    /// Reads `"key"` and the `:` after it, leaving `i` at the member value.
    mutating func readKey() throws {
        guard i < b.count, b[i] == UInt8(ascii: "\"") else {
            throw fail(i, "expected a string key in double quotes, found \(found(i))")
        }
        let key = try readString()
        if key.utf8.count > 15 { try account(key.utf8.count) }
        frames[frames.count - 1].keys.append(key)
        skipWhitespace()
        guard i < b.count, b[i] == UInt8(ascii: ":") else {
            throw fail(i, "expected ':' after an object key, found \(found(i))")
        }
        i += 1
        skipWhitespace()
    }

    mutating func readScalar() throws -> JSONValue {
        let c = b[i]
        switch c {
        case UInt8(ascii: "\""):
            let open = i
            let s = try readString()
            if s.isEmpty { return SharedJSON.emptyString }
            if s.utf8.count > 15 { try account(s.utf8.count) }   // shorter strings live in the box
            // Only strings taken straight from the input (no escapes) are cached by their bytes.
            guard i - open - 2 == s.utf8.count, let key = TokenCache.key(b, open + 1, i - 1) else { return .string(s) }
            if let v = stringCache[key] { return v }
            let v = JSONValue.string(s)
            stringCache[key] = v
            return v
        case UInt8(ascii: "-"), UInt8(ascii: "0") ... UInt8(ascii: "9"):
            return try readNumber()
        case UInt8(ascii: "t"):
            try expectWord("true"); return SharedJSON.yes
        case UInt8(ascii: "f"):
            try expectWord("false"); return SharedJSON.no
        case UInt8(ascii: "n"):
            try expectWord("null"); return .null
        case UInt8(ascii: "N") where allowsNonFinite:
            try expectWord("NaN"); return SharedJSON.nan
        case UInt8(ascii: "I") where allowsNonFinite:
            try expectWord("Infinity"); return SharedJSON.infinity
        default:
            throw fail(i, "expected a JSON value, found \(found(i))")
        }
    }

    /// Consumes `word` at `i`, refusing a different or longer word (`nul`, `NaNx`, `Inf`).
    mutating func expectWord(_ word: StaticString) throws {
        let start = i
        let n = word.utf8CodeUnitCount
        let matches = b.count - i >= n && word.withUTF8Buffer { w in
            (0 ..< n).allSatisfy { b[start + $0] == w[$0] }
        }
        var end = start
        while end < b.count, isWordByte(b[end]) { end += 1 }
        guard matches, end == start + n else {
            // Raw bytes of the file: invalid UTF-8 is shown byte by byte (\xNN), not as U+FFFD.
            let seen = DisplayText.escape(bytes: UnsafeBufferPointer(rebasing: b[start ..< min(max(end, start + 1), start + 32)]))
            throw fail(start, "unknown word '\(seen)' (expected \(word))")
        }
        i = end
    }

    @inline(__always) func isWordByte(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
            || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "_")
    }

    @inline(__always) func isDigit(_ offset: Int) -> Bool {
        offset < b.count && b[offset] >= UInt8(ascii: "0") && b[offset] <= UInt8(ascii: "9")
    }

    /// Validates a number token on the bytes, then converts it correctly rounded: exactly when
    /// the digits and the power of ten are both exact Doubles (Clinger's fast path), otherwise
    /// with the standard library's strtod-based conversion of the validated token.
    mutating func readNumber() throws -> JSONValue {
        let start = i
        let negative = b[i] == UInt8(ascii: "-")
        if negative {
            i += 1
            if allowsNonFinite && i < b.count && b[i] == UInt8(ascii: "I") {
                try expectWord("Infinity")
                return SharedJSON.minusInfinity
            }
            guard isDigit(i) else { throw fail(i, "'-' must be followed by a digit, found \(found(i))") }
        }
        var mantissa: UInt64 = 0
        var significant = 0      // digits from the first non-zero one on
        var exponent10 = 0       // power of ten applied to `mantissa`
        var anyNonZero = false
        if b[i] == UInt8(ascii: "0") {
            i += 1
            if isDigit(i) { throw fail(i - 1, "a number may not have a leading zero") }
        } else {
            while isDigit(i) {
                let d = b[i] &- UInt8(ascii: "0")
                significant += 1
                if significant <= 19 { mantissa = mantissa &* 10 &+ UInt64(d) } else { exponent10 += 1 }
                i += 1
            }
            anyNonZero = true
        }
        let integerOnly = i >= b.count || (b[i] != UInt8(ascii: ".") && b[i] != UInt8(ascii: "e") && b[i] != UInt8(ascii: "E"))
        if integerOnly && !negative && significant <= 3 && mantissa < UInt64(SharedJSON.smallIntegers.count) {
            return SharedJSON.smallIntegers[Int(mantissa)]
        }
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            guard isDigit(i) else { throw fail(i, "a decimal point must be followed by a digit, found \(found(i))") }
            while isDigit(i) {
                let d = b[i] &- UInt8(ascii: "0")
                if d != 0 || significant > 0 {
                    significant += 1
                    if d != 0 { anyNonZero = true }
                }
                if significant <= 19 { mantissa = mantissa &* 10 &+ UInt64(d); exponent10 -= 1 }
                i += 1
            }
        }
        if i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E")) {
            i += 1
            var exponentNegative = false
            if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) {
                exponentNegative = b[i] == UInt8(ascii: "-")
                i += 1
            }
            guard isDigit(i) else { throw fail(i, "an exponent must have digits, found \(found(i))") }
            var e = 0
            while isDigit(i) {
                // Saturate: anything past a million overflows or underflows either way.
                if e < 1_000_000 { e = e * 10 + Int(b[i] &- UInt8(ascii: "0")) }
                i += 1
            }
            exponent10 += exponentNegative ? -e : e
        }
        let key = TokenCache.key(b, start, i)
        if let key, let v = numberCache[key] { return v }
        var magnitude: Double
        if !anyNonZero {
            magnitude = 0
        } else if significant <= 15 && exponent10 >= -22 && exponent10 <= 22 {
            magnitude = exponent10 >= 0 ? Double(mantissa) * exactPowersOfTen[exponent10]
                                        : Double(mantissa) / exactPowersOfTen[-exponent10]
        } else {
            let token = String(decoding: UnsafeBufferPointer(rebasing: b[start ..< i]), as: UTF8.self)
            guard let v = Double(token) else { throw fail(start, "number \(token.prefix(40)) could not be converted") }
            magnitude = v.magnitude
            guard magnitude.isFinite else {
                throw fail(start, "number \(token.prefix(40))\(token.count > 40 ? "…" : "") is too large for a 64-bit float")
            }
            guard magnitude != 0 else {
                throw fail(start, "number \(token.prefix(40))\(token.count > 40 ? "…" : "") is too small for a 64-bit float (it would round to zero)")
            }
        }
        let v = JSONValue.number(negative ? -magnitude : magnitude)
        if let key { numberCache[key] = v }
        return v
    }

    /// Reads the string whose opening quote is at `i`; leaves `i` after the closing quote.
    /// Strings without escapes are made straight from the input bytes.
    mutating func readString() throws -> String {
        let open = i
        i += 1
        let start = i
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: UnsafeBufferPointer(rebasing: b[start ..< i - 1]), as: UTF8.self)
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail(i, "control character 0x\(String(c, radix: 16, uppercase: true)) in a string (it must be escaped)") }
            if c >= 0x80 { try skipUTF8Sequence() } else { i += 1 }
        }
        guard i < b.count else { throw fail(open, "unterminated string") }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(rebasing: b[start ..< i]))
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if c == UInt8(ascii: "\\") {
                try readEscape()
            } else if c < 0x20 {
                throw fail(i, "control character 0x\(String(c, radix: 16, uppercase: true)) in a string (it must be escaped)")
            } else if c >= 0x80 {
                let s = i
                try skipUTF8Sequence()
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: b[s ..< i]))
            } else {
                scratch.append(c)
                i += 1
            }
        }
        throw fail(open, "unterminated string")
    }

    /// Decodes the escape at `i` (a backslash) into `scratch`.
    mutating func readEscape() throws {
        let at = i
        guard i + 1 < b.count else { throw fail(at, "unterminated string (it ends in a backslash)") }
        let e = b[i + 1]
        i += 2
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(e)
        case UInt8(ascii: "b"): scratch.append(0x08)
        case UInt8(ascii: "f"): scratch.append(0x0C)
        case UInt8(ascii: "n"): scratch.append(0x0A)
        case UInt8(ascii: "r"): scratch.append(0x0D)
        case UInt8(ascii: "t"): scratch.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try hex4(escapeAt: at)
            if scalar >= 0xDC00 && scalar <= 0xDFFF {
                throw fail(at, "lone low surrogate \\u\(hexText(scalar)) (not preceded by a high surrogate)")
            }
            if scalar >= 0xD800 && scalar <= 0xDBFF {
                guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                    throw fail(at, "lone high surrogate \\u\(hexText(scalar)) (not followed by a \\u low surrogate)")
                }
                let lowAt = i
                i += 2
                let low = try hex4(escapeAt: lowAt)
                guard low >= 0xDC00 && low <= 0xDFFF else {
                    throw fail(at, "high surrogate \\u\(hexText(scalar)) followed by \\u\(hexText(low)), which is not a low surrogate")
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            }
            appendUTF8(scalar)
        default:
            throw fail(at, "unknown escape: a backslash followed by \(found(at + 1)) in a string")
        }
    }

    func hexText(_ v: UInt32) -> String {
        let s = String(v, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - s.count)) + s
    }

    /// The four hex digits at `i` (after `\u`).
    mutating func hex4(escapeAt: Int) throws -> UInt32 {
        guard b.count - i >= 4 else { throw fail(escapeAt, "\\u must be followed by four hex digits") }
        var v: UInt32 = 0
        for k in 0 ..< 4 {
            let c = b[i + k]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw fail(escapeAt, "\\u must be followed by four hex digits, found \(found(i + k))")
            }
            v = v << 4 | UInt32(d)
        }
        i += 4
        return v
    }

    mutating func appendUTF8(_ v: UInt32) {
        switch v {
        case ..<0x80:
            scratch.append(UInt8(v))
        case ..<0x800:
            scratch.append(UInt8(0xC0 | v >> 6)); scratch.append(UInt8(0x80 | v & 0x3F))
        case ..<0x10000:
            scratch.append(UInt8(0xE0 | v >> 12)); scratch.append(UInt8(0x80 | v >> 6 & 0x3F))
            scratch.append(UInt8(0x80 | v & 0x3F))
        default:
            scratch.append(UInt8(0xF0 | v >> 18)); scratch.append(UInt8(0x80 | v >> 12 & 0x3F))
            scratch.append(UInt8(0x80 | v >> 6 & 0x3F)); scratch.append(UInt8(0x80 | v & 0x3F))
        }
    }

    /// Steps over the well-formed UTF-8 sequence starting at `i` (a byte ≥ 0x80), refusing
    /// overlong forms, surrogates, values past U+10FFFF and truncated sequences (Unicode
    /// Table 3-7).
    mutating func skipUTF8Sequence() throws {
        let c = b[i]
        let length: Int
        var low: UInt8 = 0x80, high: UInt8 = 0xBF   // allowed range of the second byte
        switch c {
        case 0xC2 ... 0xDF: length = 2
        case 0xE0: length = 3; low = 0xA0
        case 0xE1 ... 0xEC, 0xEE ... 0xEF: length = 3
        case 0xED: length = 3; high = 0x9F
        case 0xF0: length = 4; low = 0x90
        case 0xF1 ... 0xF3: length = 4
        case 0xF4: length = 4; high = 0x8F
        default: throw fail(i, "text is not valid UTF-8 (byte 0x\(String(c, radix: 16, uppercase: true)) cannot start a character)")
        }
        guard b.count - i >= length else { throw fail(i, "text is not valid UTF-8 (a character is cut off by the end of input)") }
        guard b[i + 1] >= low && b[i + 1] <= high else {
            throw fail(i, "text is not valid UTF-8 (bad byte 0x\(String(b[i + 1], radix: 16, uppercase: true)) after 0x\(String(c, radix: 16, uppercase: true)))")
        }
        for k in 2 ..< length where b[i + k] & 0xC0 != 0x80 {
            throw fail(i, "text is not valid UTF-8 (bad continuation byte 0x\(String(b[i + k], radix: 16, uppercase: true)))")
        }
        i += length
    }
}

/// A direct-mapped cache of JSON values by the bytes of their token (1 to 16 bytes, none zero,
/// so zero padding keeps different tokens apart).
private struct TokenCache {
    struct Key: Equatable { var low: UInt64; var high: UInt64 }
    static let slots = 512
    private var keys = [Key](repeating: Key(low: 0, high: 0), count: slots)
    private var values = [JSONValue](repeating: .null, count: slots)

    /// The key of `b[start ..< end]`, or nil when it is empty, longer than 16 bytes or holds a 0.
    @inline(__always) static func key(_ b: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> Key? {
        let n = end - start
        guard n > 0 && n <= 16 else { return nil }
        var low: UInt64 = 0, high: UInt64 = 0
        for k in 0 ..< n {
            let c = b[start + k]
            if c == 0 { return nil }
            if k < 8 { low |= UInt64(c) << (8 * UInt64(k)) } else { high |= UInt64(c) << (8 * UInt64(k - 8)) }
        }
        return Key(low: low, high: high)
    }

    @inline(__always) static func slot(_ key: Key) -> Int {
        Int(truncatingIfNeeded: ((key.low &* 0x9E37_79B9_7F4A_7C15) ^ (key.high &* 0xC2B2_AE3D_27D4_EB4F)) >> 55)
    }

    subscript(key: Key) -> JSONValue? {
        get {
            let s = Self.slot(key)
            return keys[s] == key ? values[s] : nil
        }
        set {
            let s = Self.slot(key)
            keys[s] = key
            values[s] = newValue ?? .null
        }
    }
}
