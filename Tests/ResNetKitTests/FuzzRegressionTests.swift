import Foundation
import Testing
@testable import ResNetKit

/// Inputs the libFuzzer harnesses in tools/fuzz found crashing, each refused with a ResNetError
/// now. The bytes are committed under fixtures/fuzz-regressions (see tools/fuzz/README.md).
@Suite struct FuzzRegressionTests {
    static func bytes(_ name: String) throws -> Data {
        try Data(contentsOf: Paths.fixtures.appendingPathComponent("fuzz-regressions/\(name)"))
    }

    /// fuzz-npy: a member's local header offset past the end of the archive made ZIPFoundation's
    /// in-memory reader trap on its seek. The zip directory is now checked first.
    @Test func npzWithALocalHeaderPastTheEndIsRefused() throws {
        let data = try Self.bytes("npz-local-header-past-end.npz")
        #expect(throws: ResNetError.self) { try NPZ.read(data: data, file: "fuzz.npz") }
    }

    /// The directory check added for the case above must not refuse `numpy.savez_compressed`
    /// archives, whose members inflate to more than the whole archive.
    @Test func deflatedNPZLargerThanItsArchiveIsStillRead() throws {
        let zeros = Tensor(shape: [64, 64, 4], data: [Float](repeating: 0, count: 64 * 64 * 4))
        let data = try NPZ(arrays: ["x": NPYArray(zeros)]).encode(compressed: true)
        #expect(data.count < 64 * 64 * 4 * 4)
        #expect(try NPZ.read(data: data, file: "zeros.npz")["x"]?.tensor == zeros)
    }
}

/// fuzz-keras-config: a byte that is not UTF-8 next to an unquoted key made Foundation's JSON5
/// scanner trap. The strict byte-level parser refuses the unquoted key, naming its offset.
@Test func kerasConfigThatIsNotUTF8IsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-invalid-utf8-key.json")
    #expect {
        try parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    } throws: { error in
        guard case let .invalidInput(_, place, _) = error as? ResNetError else { return false }
        return place.hasPrefix("config.json byte ")
    }
}

/// fuzz-keras-config: `"epsilon":1.001e-` — an exponent sign with no digits — passed Foundation's
/// JSON5 scanner and then trapped when the number was converted. It is refused at the byte after
/// the sign.
@Test func kerasConfigWithAnExponentWithoutDigitsIsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-exponent-without-digits.json")
    #expect {
        try parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    } throws: { error in
        (error as? ResNetError)?.description.contains("an exponent must have digits") == true
    }
}

/// The inputs of the pre-scan that guarded Foundation against `1e-` (now gone): numbers with an
/// exponent sign and no digits are refused at the offset after the sign; the same bytes inside
/// strings or keys are text.
@Test("exponent signs without digits are refused outside strings only", arguments: [
    (#"{"a":1e-}"#, 8), (#"[1.e-]"#, 3), (#"[2e-"#, 4), (#"{"a":.5E+,"b":2}"#, 5),
    (#"{"a":1e-5}"#, nil), (#"{"a":"1e-"}"#, nil), (#"{"e-":1}"#, nil), (#"[NaN, -Infinity]"#, nil),
] as [(String, Int?)])
func exponentWithoutDigitsIsRefusedAtItsOffset(text: String, offset: Int?) {
    do {
        _ = try parseKerasJSON(Data(text.utf8), file: "t.json", place: "config.json")
        #expect(offset == nil, "accepted \(text)")
    } catch let ResNetError.invalidInput(_, place, _) {
        #expect(offset.map { "config.json byte \($0)" } == place, "\(text)")
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

/// fuzz-keras-config: a nested Functional model whose "config" key is damaged was force-unwrapped
/// in the graph builder. It is refused now. The damaged text also repeats a key, which the parser
/// refuses first; the builder sees it with one value per key (as Foundation decodes it).
@Test func kerasNestedModelWithoutAConfigIsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-nested-model-without-config.json")
    #expect(throws: ResNetError.self) { _ = try parseKerasJSON(data, file: "fuzz.json", place: "config.json") }
    let once = try JSONSerialization.data(withJSONObject: JSONSerialization.jsonObject(with: data))
    let json = try parseKerasJSON(once, file: "fuzz.json", place: "config.json")
    var builder = KerasGraphBuilder(file: "fuzz.json", place: "config.json")
    #expect(throws: ResNetError.self) { _ = try builder.build(json) }
}

/// fuzz-keras-config: a bare 85-digit integer trapped Foundation's JSON5 number validation. It is
/// a valid JSON number and reads as the nearest Double (as strict Foundation reads it); it is not
/// a model config, which the graph builder refuses.
@Test func kerasConfigThatIsALongBareNumberIsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-long-bare-integer.json")
    let value = try parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    #expect(value == .number(Double(String(repeating: "5", count: 85))!))
    var builder = KerasGraphBuilder(file: "fuzz.json", place: "config.json")
    #expect(throws: ResNetError.self) { _ = try builder.build(value) }
}

/// Python's json module writes NaN and Infinity; they still parse, as numbers, outside strings only.
@Test func kerasConfigKeepsPythonNonFiniteNumbers() throws {
    let text = #"{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN stays text", "d": "say \"NaN\""}"#
    let v = try parseKerasJSON(Data(text.utf8), file: "t.json", place: "config.json")
    #expect(v["a"]?.double?.isNaN == true)
    #expect(v["b"]?.array?.first?.double == .infinity && v["b"]?[1]?.double == -.infinity)
    #expect(v["c"]?.string == "NaN stays text")
    #expect(v["d"]?.string == #"say "NaN""#)
}
