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
/// scanner trap. Config text is now validated as UTF-8 before it is decoded.
@Test func kerasConfigThatIsNotUTF8IsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-invalid-utf8-key.json")
    #expect {
        try parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    } throws: { error in
        (error as? ResNetError)?.description.contains("not valid UTF-8") == true
    }
}

/// fuzz-keras-config: `"epsilon":1.001e-` — an exponent sign with no digits — passes Foundation's
/// JSON5 scanner and then traps when the number is converted. Such numbers are refused first.
@Test func kerasConfigWithAnExponentWithoutDigitsIsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-exponent-without-digits.json")
    #expect {
        try parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    } throws: { error in
        (error as? ResNetError)?.description.contains("no exponent digits") == true
    }
}

@Test("exponent signs without digits are found outside strings only", arguments: [
    (#"{"a":1e-}"#, 6), (#"{"a":.5E+,"b":2}"#, 7), (#"[1.e-]"#, 3), (#"[2e-"#, 2),
    (#"{"a":1e-5}"#, nil), (#"{"a":"1e-"}"#, nil), (#"{'a':'x\'1e-'}"#, nil), (#"{"e-":1}"#, nil), (#"[NaN, -Infinity]"#, nil),
] as [(String, Int?)])
func exponentWithoutDigitsScan(text: String, offset: Int?) {
    #expect(exponentWithoutDigits(Data(text.utf8)) == offset)
}

/// fuzz-keras-config: a nested Functional model whose "config" key is damaged was force-unwrapped
/// in the graph builder. It is refused now.
@Test func kerasNestedModelWithoutAConfigIsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-nested-model-without-config.json")
    let json = try parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    var builder = KerasGraphBuilder(file: "fuzz.json", place: "config.json")
    #expect(throws: ResNetError.self) { _ = try builder.build(json) }
}

/// fuzz-keras-config: a bare 85-digit integer trapped Foundation's JSON5 number validation. Config
/// text is now decoded as strict JSON (NaN / Infinity from Python are marked and restored), so the
/// text is simply not a model config.
@Test func kerasConfigThatIsALongBareNumberIsRefused() throws {
    let data = try FuzzRegressionTests.bytes("keras-config-long-bare-integer.json")
    let value = try? parseKerasJSON(data, file: "fuzz.json", place: "config.json")
    #expect(value == nil || value?.object == nil, "a bare number is not a config")
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
