import Foundation
import Testing
import ZIPFoundation
@testable import ResNetKit

/// The byte-level JSON parser against Foundation's JSONDecoder (the decoder it replaced, used here
/// as the oracle only), and one test per kind of text it refuses.
@Suite struct JSONParserTests {
    // MARK: Oracle

    /// Python's NaN / Infinity / -Infinity outside strings turned into marked strings, which
    /// Foundation reads, the way parseKerasJSON worked before this parser.
    static func markNonFinite(_ data: Data) -> Data {
        let bytes = [UInt8](data)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var inString = false
        var i = 0
        let tokens = ["-Infinity", "Infinity", "NaN"].map { Array($0.utf8) }
        scan: while i < bytes.count {
            let c = bytes[i]
            if inString {
                out.append(c)
                if c == UInt8(ascii: "\\"), i + 1 < bytes.count { out.append(bytes[i + 1]); i += 2; continue }
                if c == UInt8(ascii: "\"") { inString = false }
                i += 1
                continue
            }
            if c == UInt8(ascii: "\"") { inString = true }
            for t in tokens where bytes.count - i >= t.count && Array(bytes[i ..< i + t.count]) == t {
                out += Array("\"\\u0001nonfinite:".utf8) + t + [UInt8(ascii: "\"")]
                i += t.count
                continue scan
            }
            out.append(c)
            i += 1
        }
        return Data(out)
    }

    /// Foundation's strict JSONDecoder (what parseKerasJSON used before), with the non-finite
    /// tokens carried through as marked strings. nil when refused.
    static func oracle(_ data: Data) -> JSONValue? {
        let mark = "\u{1}nonfinite:"
        func restore(_ v: JSONValue) -> JSONValue {
            switch v {
            case let .string(s) where s.hasPrefix(mark):
                switch s.dropFirst(mark.count) {
                case "NaN": return .number(.nan)
                case "Infinity": return .number(.infinity)
                default: return .number(-.infinity)
                }
            case let .array(a): return .array(a.map(restore))
            case let .object(o): return .object(o.mapValues(restore))
            default: return v
            }
        }
        return (try? JSONDecoder().decode(JSONValue.self, from: markNonFinite(data))).map(restore)
    }

    /// JSONDecoder reads a value only when it is decoded, so text under a key shadowed by an
    /// earlier duplicate is never checked. JSONSerialization reads every value: whether it
    /// refuses the text tells a real disagreement from that blind spot.
    static func eagerOracleRefuses(_ data: Data) -> Bool {
        (try? JSONSerialization.jsonObject(with: markNonFinite(data), options: [.fragmentsAllowed])) == nil
    }

    /// Equality that counts NaN as equal to NaN and tells -0 from 0.
    static func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case let (.number(x), .number(y)): return x.bitPattern == y.bitPattern || (x.isNaN && y.isNaN)
        case let (.array(x), .array(y)): return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        case let (.object(x), .object(y)):
            return x.count == y.count && x.allSatisfy { k, v in y[k].map { same(v, $0) } ?? false }
        default: return a == b
        }
    }

    static func ours(_ data: Data) -> Result<JSONValue, Error> {
        Result { try parseKerasJSON(data, file: "t.json", place: "config.json") }
    }

    /// Both parsers accept with the same value, or both refuse. Deliberate differences:
    /// Foundation accepts trailing commas, duplicate keys and stops at a NUL byte after the value,
    /// all of which this parser refuses.
    static func agreeWithOracle(_ data: Data, _ label: @autoclosure () -> String) {
        switch (ours(data), oracle(data)) {
        case let (.success(v), .some(w)):
            #expect(same(v, w), "values differ: \(label())")
        case (.failure, .none):
            break
        case let (.failure(error), .some):
            guard case let .invalidInput(_, place, reason)? = error as? ResNetError,
                  let offset = Int(place.split(separator: " ").last ?? "") else {
                Issue.record("unexpected error \(error)")
                return
            }
            if reason.contains("trailing comma") { return }
            // Duplicate keys are refused here (readers disagree on which value counts); Foundation
            // keeps one of them.
            if reason.contains("appears twice") { return }
            // Foundation stops reading at a NUL byte after the value (`4\0` is 4 to it); JSON
            // allows only whitespace there, and so does Python's json module.
            if reason.contains("after the JSON value"), offset < data.count, [UInt8](data)[offset] == 0 { return }
            if reason.contains("for a 64-bit float") {
                // JSONSerialization converts numbers lazily too (and reads an underflow as 0):
                // JSONDecoder must refuse the number on its own.
                let bytes = [UInt8](data)
                var end = offset
                while end < bytes.count, "0123456789+-.eE".utf8.contains(bytes[end]) { end += 1 }
                #expect(oracle(Data("[".utf8 + bytes[offset ..< end] + "]".utf8)) == nil,
                        "refused a number Foundation accepts: \(label()): \(reason)")
                return
            }
            #expect(eagerOracleRefuses(data), "refused what Foundation accepts: \(label()): \(reason)")
        case (.success, .none):
            Issue.record("accepted what Foundation refuses: \(label())")
        }
    }

    // MARK: Differential over real configs

    /// Every Keras config the tests can reach: `model_config` of each .h5 and `config.json` /
    /// `metadata.json` of each .keras, in the fixtures, the external fixtures when present, the
    /// fuzz regressions, and the fuzz harness's seeds and corpus when a fuzz run has made them.
    static func realConfigs() throws -> [(String, Data)] {
        var roots = [Paths.fixtures]
        if FileManager.default.fileExists(atPath: Paths.external.path) {
            roots.append(Paths.external)
        } else {
            print("SKIPPED: ../shared/fixtures-external not found; comparing repository fixtures only")
        }
        // The fuzz harness's seeds and grown corpus (git-ignored; present after a run.sh run).
        let fuzzDirectories = ["seeds", "corpus"].map { Paths.packageRoot.appendingPathComponent("tools/fuzz/\($0)/keras-config") }
        for directory in fuzzDirectories where FileManager.default.fileExists(atPath: directory.path) { roots.append(directory) }
        var found: [(String, Data)] = []
        for root in roots {
            guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { continue }
            for case let url as URL in walker {
                let name = url.path
                // Crafted to be refused (duplicate keys, configs that decode too large): not real configs.
                if name.contains("/hostile-resources/") { continue }
                if url.pathExtension == "h5" {
                    guard let h5 = try? HDF5File(path: name),
                          case let .string(text)? = try? h5.attribute("model_config", of: "/") else { continue }
                    found.append((name, Data(text.utf8)))
                } else if url.pathExtension == "keras" {
                    guard let archive = try? Archive(url: url, accessMode: .read, pathEncoding: nil) else { continue }
                    for member in ["config.json", "metadata.json"] {
                        guard let entry = archive[member] else { continue }
                        var data = Data()
                        _ = try? archive.extract(entry, skipCRC32: false) { data.append($0) }
                        found.append(("\(name)!\(member)", data))
                    }
                } else if url.path.contains("fuzz-regressions/keras-config") || fuzzDirectories.contains(root) {
                    found.append((name, try Data(contentsOf: url)))
                }
            }
        }
        return found
    }

    @Test func everyRealKerasConfigParsesAsFoundationDecodedIt() throws {
        let configs = try Self.realConfigs()
        #expect(configs.count >= 20, "found only \(configs.count) configs")
        var parsed = 0
        for (name, data) in configs {
            Self.agreeWithOracle(data, name)
            if case .success = Self.ours(data) { parsed += 1 }
        }
        // Every fixture config parses; only damaged fuzz inputs are refused.
        #expect(parsed >= configs.filter { !$0.0.contains("fuzz") }.count)
        testLog("JSON differential: \(configs.count) configs, \(parsed) parsed")
    }

    // MARK: Differential over generated documents

    /// A fixed seed makes every run generate the same documents.
    typealias Generator = SplitMix64

    static func space(_ g: inout Generator) -> String {
        ["", "", "", " ", "\n", "\t", "\r\n", "  "].randomElement(using: &g)!
    }

    static func digits(_ n: Int, _ g: inout Generator) -> String {
        String((0 ..< n).map { _ in "0123456789".randomElement(using: &g)! })
    }

    /// Numbers of many shapes, including ones both parsers must refuse (overflow, underflow).
    static func number(_ g: inout Generator) -> String {
        let sign = Bool.random(using: &g) ? "-" : ""
        switch Int.random(in: 0 ..< 10, using: &g) {
        case 0: return "\(Int.random(in: 0 ..< 2000, using: &g))"
        case 1: return "\(sign)\(Int.random(in: 1 ... 9, using: &g))\(digits(Int.random(in: 0 ... 30, using: &g), &g))"
        case 2: return ["0", "-0", "0.0", "-0.0", "0e0", "-0E+5", "0.000e-999"].randomElement(using: &g)!
        case 3:
            // Shortest round-trip text of a random finite Double, as Python's repr writes it.
            var d: Double
            repeat { d = Double(bitPattern: g.next()) } while !d.isFinite
            return "\(d)"
        case 4:
            let frac = digits(Int.random(in: 1 ... 25, using: &g), &g)
            let e = Bool.random(using: &g) ? "" : "\(["e", "E"].randomElement(using: &g)!)\(["", "+", "-"].randomElement(using: &g)!)\(Int.random(in: 0 ... 40, using: &g))"
            return "\(sign)\(Int.random(in: 0 ... 999, using: &g)).\(frac)\(e)"
        case 5: return "\(sign)\(Int.random(in: 1 ... 9, using: &g))e\(["", "+", "-"].randomElement(using: &g)!)\(Int.random(in: 280 ... 340, using: &g))"
        case 6: return "\(sign)\(Int.random(in: 1 ... 9, using: &g)).\(digits(Int.random(in: 1 ... 20, using: &g), &g))e-\(Int.random(in: 300 ... 330, using: &g))"
        case 7: return ["NaN", "Infinity", "-Infinity"].randomElement(using: &g)!
        case 8: return "\(sign)\(Float(bitPattern: UInt32(truncatingIfNeeded: g.next())).magnitude)".replacingOccurrences(of: "nan", with: "NaN").replacingOccurrences(of: "inf", with: "Infinity")
        default: return "\(sign)\(Double.random(in: 0 ..< 1, using: &g) * pow(10, Double(Int.random(in: -12 ... 12, using: &g))))"
        }
    }

    static func string(_ g: inout Generator) -> String {
        var s = "\""
        for _ in 0 ..< Int.random(in: 0 ... 12, using: &g) {
            switch Int.random(in: 0 ..< 12, using: &g) {
            case 0: s += ["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"].randomElement(using: &g)!
            case 1:
                var v: UInt32
                repeat { v = UInt32.random(in: 0 ... 0xFFFF, using: &g) } while (0xD800 ... 0xDFFF).contains(v)
                let hex = String(v, radix: 16, uppercase: Bool.random(using: &g))
                s += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            case 2:
                // An astral character as an escaped surrogate pair.
                let v = UInt32.random(in: 0x10000 ... 0x10FFFF, using: &g) - 0x10000
                s += String(format: "\\u%04X\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
            case 3: s += ["é", "中文", "😀", "\u{10FFFF}", "\u{7F}", "ß", "\u{FEFF}", "𝄞"].randomElement(using: &g)!
            case 4:
                var v: UInt32
                repeat { v = UInt32.random(in: 0x80 ... 0x10FFFF, using: &g) } while (0xD800 ... 0xDFFF).contains(v)
                s.unicodeScalars.append(Unicode.Scalar(v)!)
            default:
                s += String((0 ..< Int.random(in: 1 ... 6, using: &g)).map { _ in "abcXYZ_ .:0123-".randomElement(using: &g)! })
            }
        }
        return s + "\""
    }

    static func value(_ g: inout Generator, depth: Int) -> String {
        let pick = Int.random(in: 0 ..< (depth > 5 ? 6 : 9), using: &g)
        switch pick {
        case 0: return ["true", "false", "null"].randomElement(using: &g)!
        case 1, 2: return number(&g)
        case 3, 4, 5: return string(&g)
        case 6:
            let items = (0 ..< Int.random(in: 0 ... 5, using: &g)).map { _ in space(&g) + value(&g, depth: depth + 1) + space(&g) }
            return "[" + items.joined(separator: ",") + space(&g) + "]"
        default:
            // Keys from a small pool, so that duplicate keys occur.
            let members = (0 ..< Int.random(in: 0 ... 5, using: &g)).map { _ in
                space(&g) + (Bool.random(using: &g) ? "\"k\(Int.random(in: 0 ..< 4, using: &g))\"" : string(&g))
                    + space(&g) + ":" + space(&g) + value(&g, depth: depth + 1) + space(&g)
            }
            return "{" + members.joined(separator: ",") + space(&g) + "}"
        }
    }

    @Test func generatedDocumentsParseAsFoundationDecodesThem() {
        var g = Generator(state: 20261129)
        for n in 0 ..< 3000 {
            let text = Self.space(&g) + Self.value(&g, depth: 0) + Self.space(&g)
            Self.agreeWithOracle(Data(text.utf8), "document \(n): \(text.prefix(300))")
        }
    }

    /// Single-byte damage to generated documents: both parsers refuse, or accept the same value.
    @Test func damagedGeneratedDocumentsAreRefusedAsFoundationRefusesThem() {
        var g = Generator(state: 7)
        let inserts = Array("[]{}\",:\\ 0-.eE+aNI\u{1}".utf8) + [0xC3, 0xE2, 0x80, 0xFF]
        for n in 0 ..< 3000 {
            var bytes = Array(Self.value(&g, depth: 2).utf8)
            let at = Int.random(in: 0 ... bytes.count, using: &g)
            switch Int.random(in: 0 ..< 3, using: &g) {
            case 0 where at < bytes.count: bytes.remove(at: at)
            case 1 where at < bytes.count: bytes[at] = inserts.randomElement(using: &g)!
            default: bytes.insert(inserts.randomElement(using: &g)!, at: at)
            }
            Self.agreeWithOracle(Data(bytes), "damaged document \(n): \(String(decoding: bytes.prefix(300), as: UTF8.self))")
        }
    }

    /// The exact fast path for short numbers gives the same Double as the standard library's
    /// strtod-based conversion of the same token.
    @Test func numbersConvertAsTheStandardLibraryConvertsThem() throws {
        var g = Generator(state: 99)
        for _ in 0 ..< 20000 {
            let token = Self.number(&g)
            guard let expected = Double(token), expected.isFinite, !token.contains("N"), !token.contains("I") else { continue }
            let mantissaIsZero = token.split(whereSeparator: { $0 == "e" || $0 == "E" })[0].allSatisfy { !"123456789".contains($0) }
            if expected == 0 && !mantissaIsZero { continue }   // refused as underflow; see the refusal tests
            let v = try parseKerasJSON(Data(token.utf8), file: "t.json", place: "n")
            #expect(v.double?.bitPattern == expected.bitPattern, "\(token)")
        }
    }

    // MARK: Behaviour kept from Foundation

    // MARK: Ambiguity and size

    /// Python's json keeps the last of duplicate keys, Foundation and serde the first: a file with
    /// one means different things to different readers, so it is refused, at any depth.
    @Test("duplicate keys are refused at every depth", arguments: [
        #"{"a": 1, "b": 2, "a": 2}"#,
        #"{"config": {"name": "x", "name": "y"}}"#,
        #"[0, {"layers": [{"config": {"units": 1, "units": 1}}]}]"#,
        #"{"a": {}, "a": {}}"#,
    ])
    func duplicateKeysAreRefused(text: String) throws {
        do {
            _ = try parseKerasJSON(Data(text.utf8), file: "t.json", place: "config.json")
            Issue.record("accepted \(text)")
        } catch let e as ResNetError {
            #expect(e.exitCode == 3)
            #expect(e.description.hasPrefix("t.json") && e.description.contains("appears twice") && e.description.contains("refusing to guess"),
                    "\(e)")
        }
    }

    /// What the text decodes to is bounded by --max-header-bytes, not only the text itself: an
    /// array of tiny objects decodes to many times its size.
    @Test func theDecodedSizeIsBoundedByTheHeaderLimit() throws {
        let text = Data(("[" + Array(repeating: #"{"a1":1}"#, count: 2000).joined(separator: ",") + "]").utf8)
        var limits = ReadLimits.standard
        limits.maxHeaderBytes = text.count * 2
        do {
            _ = try limits.apply { try parseKerasJSON(text, file: "t.json", place: "config.json") }
            Issue.record("a \(text.count)-byte array of objects decoded under a \(limits.maxHeaderBytes)-byte limit")
        } catch let e as ResNetError {
            #expect(e.description.contains("--max-header-bytes") && e.description.contains("decodes to more than"), "\(e)")
        }
        limits.maxHeaderBytes = text.count * 30
        _ = try limits.apply { try parseKerasJSON(text, file: "t.json", place: "config.json") }
    }

    @Test func nestingOf512LevelsIsAcceptedAsWithFoundation() throws {
        let text = Data((String(repeating: "[", count: 512) + String(repeating: "]", count: 512)).utf8)
        let v = try parseKerasJSON(text, file: "t.json", place: "config.json")
        #expect(Self.oracle(text).map { Self.same($0, v) } == true)
        let objects = Data((String(repeating: #"{"a":"#, count: 511) + "[1]" + String(repeating: "}", count: 511)).utf8)
        Self.agreeWithOracle(objects, "511 objects around an array")
    }

    @Test func aLeadingByteOrderMarkIsSkippedAsWithFoundation() throws {
        let text = Data([0xEF, 0xBB, 0xBF] + Array(#"{"a": [1, 2.5]}"#.utf8))
        let v = try parseKerasJSON(text, file: "t.json", place: "config.json")
        #expect(v == .object(["a": .array([.number(1), .number(2.5)])]))
        Self.agreeWithOracle(text, "byte order mark")
    }

    @Test func pythonNonFiniteTokensAreNumbers() throws {
        let v = try parseKerasJSON(Data("[NaN, Infinity,-Infinity ,{\"x\":NaN}]".utf8), file: "t.json", place: "config.json")
        #expect(v[0]?.double?.isNaN == true)
        #expect(v[1]?.double == .infinity)
        #expect(v[2]?.double == -.infinity)
        #expect(v[3]?["x"]?.double?.isNaN == true)
    }

    @Test func stringsDecodeEscapesAndKeepRawUnicode() throws {
        let text = #"["a\"b\\c\/d\b\f\n\r\t", "\u00e9\u4E2D\ud83d\ude00\u0000", "é中😀", "\u0041"]"#
        let v = try parseKerasJSON(Data(text.utf8), file: "t.json", place: "config.json")
        #expect(v[0]?.string == "a\"b\\c/d\u{8}\u{C}\n\r\t")
        #expect(v[1]?.string == "é中😀\u{0}")
        #expect(v[2]?.string == "é中😀")
        #expect(v[3]?.string == "A")
    }

    /// Repeated short tokens share one value; tokens that differ only in kind, sign or escaping
    /// must not be confused with each other.
    @Test func repeatedTokensKeepTheirOwnValues() throws {
        let text = #"["float32", "float32", "\u0066loat32", "0.5", 0.5, 0.5, -0, 0, -0.0, 0.0, 1024, 1024, 1e2, 100, "1e2", "\n", "\\n"]"#
        let v = try parseKerasJSON(Data(text.utf8), file: "t.json", place: "config.json")
        #expect(Self.oracle(Data(text.utf8)).map { Self.same($0, v) } == true)
        #expect(v[2]?.string == "float32" && v[3]?.string == "0.5" && v[4]?.double == 0.5 && v[5]?.double == 0.5)
        #expect(v[6]?.double?.sign == .minus && v[7]?.double?.sign == .plus)
        #expect(v[8]?.double?.sign == .minus && v[9]?.double?.sign == .plus)
        #expect(v[12]?.double == 100 && v[14]?.string == "1e2" && v[15]?.string == "\n" && v[16]?.string == "\\n")
    }

    // MARK: Refusals

    /// Parses `bytes`; returns the byte offset and reason of the refusal, or nil if accepted.
    static func refusal(_ bytes: [UInt8], allowsNonFinite: Bool = true) -> (offset: Int, reason: String)? {
        do {
            _ = try parseJSON(Data(bytes), file: "t.json", place: "config.json", allowsNonFinite: allowsNonFinite)
            return nil
        } catch let ResNetError.invalidInput(file, place, reason) {
            guard file == "t.json", place.hasPrefix("config.json byte "), let offset = Int(place.dropFirst("config.json byte ".count)) else {
                Issue.record("refusal names \(file) at '\(place)'")
                return nil
            }
            return (offset, reason)
        } catch {
            Issue.record("not a ResNetError.invalidInput: \(error)")
            return nil
        }
    }

    static func expectRefusal(_ text: String, at offset: Int, _ mention: String, allowsNonFinite: Bool = true) {
        expectRefusal(Array(text.utf8), at: offset, mention, allowsNonFinite: allowsNonFinite)
    }

    static func expectRefusal(_ bytes: [UInt8], at offset: Int, _ mention: String, allowsNonFinite: Bool = true,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        guard let (at, reason) = refusal(bytes, allowsNonFinite: allowsNonFinite) else {
            Issue.record("accepted \(String(decoding: bytes.prefix(80), as: UTF8.self))", sourceLocation: sourceLocation)
            return
        }
        #expect(at == offset, "offset for \(String(decoding: bytes.prefix(80), as: UTF8.self)): \(reason)", sourceLocation: sourceLocation)
        #expect(reason.contains(mention), "reason: \(reason)", sourceLocation: sourceLocation)
    }

    @Test func trailingCommasAreRefused() {
        Self.expectRefusal("[1,2,]", at: 5, "trailing comma before ']'")
        Self.expectRefusal(#"{"a": 1 , }"#, at: 10, "trailing comma before '}'")
    }

    @Test func commentsAreRefused() {
        Self.expectRefusal("[1, // one\n 2]", at: 4, "expected a JSON value, found '/'")
        Self.expectRefusal("/* c */ {}", at: 0, "expected a JSON value")
        Self.expectRefusal("[1 /* c */]", at: 3, "expected ',' or ']' after an array element, found '/'")
    }

    @Test func singleQuotesAreRefused() {
        Self.expectRefusal("{'a': 1}", at: 1, "expected a string key in double quotes, found '''")
        Self.expectRefusal("['a']", at: 1, "expected a JSON value")
    }

    @Test func leadingZerosAreRefused() {
        Self.expectRefusal("01", at: 0, "leading zero")
        Self.expectRefusal("[-007]", at: 2, "leading zero")
        Self.expectRefusal(#"{"a":00.5}"#, at: 5, "leading zero")
    }

    @Test func numbersWithoutDigitsWhereTheGrammarNeedsThemAreRefused() {
        Self.expectRefusal("1.", at: 2, "a decimal point must be followed by a digit, found end of input")
        Self.expectRefusal("[1.e5]", at: 3, "a decimal point must be followed by a digit")
        Self.expectRefusal(".5", at: 0, "expected a JSON value, found '.'")
        Self.expectRefusal("1e", at: 2, "an exponent must have digits")
        Self.expectRefusal("[1e+]", at: 4, "an exponent must have digits, found ']'")
        Self.expectRefusal("-", at: 1, "'-' must be followed by a digit")
        Self.expectRefusal("+1", at: 0, "expected a JSON value")
    }

    @Test func controlCharactersInStringsAreRefused() {
        Self.expectRefusal("\"ab\u{1}\"", at: 3, "control character 0x1")
        Self.expectRefusal("[\"a\nb\"]", at: 3, "control character 0xA")
        Self.expectRefusal("[\"\\n\tb\"]", at: 4, "control character 0x9")   // after an escape, too
    }

    @Test func textAfterTheTopValueIsRefused() {
        Self.expectRefusal("{} x", at: 3, "unexpected 'x' after the JSON value")
        Self.expectRefusal("[1]]", at: 3, "after the JSON value")
        Self.expectRefusal("1 2", at: 2, "after the JSON value")
        Self.expectRefusal(Array("{}".utf8) + [0], at: 2, "byte 0x0 after the JSON value")
    }

    @Test func emptyInputIsRefused() {
        Self.expectRefusal("", at: 0, "no JSON value")
        Self.expectRefusal(" \n\t\r", at: 4, "no JSON value")
        Self.expectRefusal([0xEF, 0xBB, 0xBF], at: 3, "no JSON value")
    }

    @Test func textThatIsNotUTF8IsRefused() {
        Self.expectRefusal([0x22, 0xC0, 0x80, 0x22], at: 1, "not valid UTF-8")            // overlong NUL
        Self.expectRefusal([0x22, 0xED, 0xA0, 0x80, 0x22], at: 1, "not valid UTF-8")      // encoded surrogate
        Self.expectRefusal([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], at: 1, "not valid UTF-8") // past U+10FFFF
        Self.expectRefusal([0x22, 0x61, 0xE2, 0x82], at: 2, "cut off by the end of input")
        Self.expectRefusal([0x22, 0x5C, 0x6E, 0xFF, 0x22], at: 3, "byte 0xFF cannot start a character")
        Self.expectRefusal([0x7B, 0xC3, 0xA9, 0x7D], at: 1, "expected a string key")      // outside a string
    }

    @Test func loneAndMismatchedSurrogatesAreRefused() {
        Self.expectRefusal(#"["x\ud800"]"#, at: 3, #"lone high surrogate \uD800"#)
        Self.expectRefusal(#"["\uDC00\ud800"]"#, at: 2, #"lone low surrogate \uDC00"#)
        Self.expectRefusal(#"["\ud800\u0041"]"#, at: 2, #"followed by \u0041, which is not a low surrogate"#)
        Self.expectRefusal(#"["\ud800\n"]"#, at: 2, "lone high surrogate")
    }

    @Test func badEscapesAndUnterminatedStringsAreRefused() {
        Self.expectRefusal(#"["\x"]"#, at: 2, "unknown escape: a backslash followed by 'x'")
        Self.expectRefusal(#"["\u12"]"#, at: 2, "four hex digits")
        Self.expectRefusal(#"["\u12G4"]"#, at: 2, "four hex digits, found 'G'")
        Self.expectRefusal(#"["abc"#, at: 1, "unterminated string")
        Self.expectRefusal(#"["abc\"#, at: 5, "unterminated string")
    }

    @Test func unterminatedContainersAndMissingSeparatorsAreRefused() {
        Self.expectRefusal("[1, 2", at: 5, "unterminated array opened at byte 0")
        Self.expectRefusal(#"{"a": {"b": 1}"#, at: 14, "unterminated object opened at byte 0")
        Self.expectRefusal(#"{"a" 1}"#, at: 5, "expected ':' after an object key, found '1'")
        Self.expectRefusal(#"{"a": 1 "b": 2}"#, at: 8, "expected ',' or '}' after an object member")
        Self.expectRefusal("[", at: 1, "unterminated array")
    }

    @Test func nestingDeeperThan512LevelsIsRefused() {
        Self.expectRefusal(String(repeating: "[", count: 513) + String(repeating: "]", count: 513), at: 512,
                           "nested deeper than 512 levels")
        Self.expectRefusal(String(repeating: #"{"a":"#, count: 513) + "1" + String(repeating: "}", count: 513), at: 512 * 5,
                           "nested deeper than 512 levels")
        // No recursion: a hundred thousand brackets cost no stack.
        Self.expectRefusal(String(repeating: "[", count: 100_000), at: 512, "nested deeper")
    }

    @Test func numbersBeyondDoubleAreRefused() {
        Self.expectRefusal("[1e400]", at: 1, "too large for a 64-bit float")
        Self.expectRefusal("-1.5E+309", at: 0, "too large")
        Self.expectRefusal(String(repeating: "9", count: 400), at: 0, "too large")
        Self.expectRefusal("[1e-400]", at: 1, "too small for a 64-bit float (it would round to zero)")
        Self.expectRefusal("2.4703282292062327e-324", at: 0, "round to zero")
        // Zero itself is not an underflow, nor are subnormals or 85 digits.
        #expect(Self.refusal(Array("[0e-400, 0.000e999, 5e-324, 1e-310, \(String(repeating: "5", count: 85))]".utf8)) == nil)
    }

    @Test func wordsOtherThanTheNonFiniteTokensAreRefused() {
        Self.expectRefusal("[NaNx]", at: 1, "unknown word 'NaNx'")
        Self.expectRefusal("Inf", at: 0, "unknown word 'Inf'")
        Self.expectRefusal("[-NaN]", at: 2, "'-' must be followed by a digit, found 'N'")
        Self.expectRefusal("[Infinity1]", at: 1, "unknown word")
        Self.expectRefusal("nul", at: 0, "unknown word 'nul'")
        Self.expectRefusal("[truex]", at: 1, "unknown word 'truex'")
        Self.expectRefusal("[nan]", at: 1, "unknown word 'nan'")
    }

    @Test func strictJSONRefusesTheNonFiniteTokens() {
        Self.expectRefusal("[1, NaN]", at: 4, "expected a JSON value, found 'N'", allowsNonFinite: false)
        Self.expectRefusal("[-Infinity]", at: 2, "'-' must be followed by a digit", allowsNonFinite: false)
    }
}
