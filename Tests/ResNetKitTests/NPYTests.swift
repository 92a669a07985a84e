import Foundation
import Testing
import ResNetKit

let externalFixtures: URL = Paths.external

/// Every `io.npz` golden under the external fixtures folder, sorted; empty when the folder is absent.
func externalGoldens() -> [String] {
    let dirs = (try? FileManager.default.contentsOfDirectory(atPath: externalFixtures.path)) ?? []
    return dirs.sorted().map { externalFixtures.appendingPathComponent($0).appendingPathComponent("io.npz").path }
        .filter { FileManager.default.fileExists(atPath: $0) }
}

/// Raw `.npy` bytes with the given header text (padded to end in '\n') and payload.
func npyBytes(_ header: String, _ payload: [UInt8], major: UInt8 = 1) -> Data {
    let text = Array((header + "\n").utf8)
    var out: [UInt8] = [0x93] + Array("NUMPY".utf8) + [major, 0]
    if major == 1 {
        out += [UInt8(text.count & 0xFF), UInt8(text.count >> 8)]
    } else {
        out += [UInt8(text.count & 0xFF), UInt8((text.count >> 8) & 0xFF), UInt8((text.count >> 16) & 0xFF), UInt8(text.count >> 24)]
    }
    return Data(out + text + payload)
}

func littleEndianFloats(_ values: [Float]) -> [UInt8] {
    values.flatMap { v -> [UInt8] in let b = v.bitPattern; return (0..<4).map { UInt8((b >> (8 * UInt32($0))) & 0xFF) } }
}

/// Made by numpy 2.4.6:
///   np.savez_compressed(f, ramp=np.arange(6, dtype='<f8').reshape(2, 3),
///       big=np.asfortranarray(np.arange(6, dtype='>f4').reshape(2, 3)), flags=np.array([True, False, True]),
///       small=np.arange(-2, 2, dtype='<i8'), layout=np.array('NHWC'))
/// Every member is deflated; `big` is big-endian and stored in Fortran order.
let numpyCompressedNPZ = Data(base64Encoded: [
        "UEsDBC0AAAAIAAAAIQDwzTtG//////////8IABQAcmFtcC5ucHkBABAAsAAAAAAAAABXAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxc",
        "pG6loG6TZqGuo6Cell9UUpSYF59flJIKEndLzClOBYoXZyQWpAL5GkY6CsaaOgq1CmQDLgYU8MEeynCAUBxQWgBKizgAAFBLAwQt",
        "AAAACAAAACEACdnRj///////////BwAUAGJpZy5ucHkBABAAmAAAAAAAAABWAAAAAAAAAJvsF+obEMnIUMZQrZ6SWpxcpG6loG6X",
        "ZqKuo6Cell9UUpSYF59flJIKEg8pKk0FChdnJBakArkaRjoKxpo6CrUK5AMuBiBwcGBgsG8A0iAM4i9gYAAAUEsDBC0AAAAIAAAA",
        "IQAWk4y7//////////8JABQAZmxhZ3MubnB5AQAQAIMAAAAAAAAARwAAAAAAAACb7BfqGxDJyFDGUK2eklqcXKRupaBek2SorqOg",
        "npZfVFKUmBefX5SSChJ3S8wpTgWKF2ckFqQC+RrGOpo6CrUKFAAuRgZGAFBLAwQtAAAACAAAACEAufLOUf//////////CQAUAHNt",
        "YWxsLm5weQEAEACgAAAAAAAAAE0AAAAAAAAAm+wX6hsQychQxlCtnpJanFykbqWgbpNpoa6joJ6WX1RSlJgXn1+UkgoSd0vMKU4F",
        "ihdnJBakAvkaJjqaOgq1ChQArn//UQEDFDBCaQBQSwMELQAAAAgAAAAhALbCzOP//////////woAFABsYXlvdXQubnB5AQAQAJAA",
        "AAAAAAAATgAAAAAAAACb7BfqGxDJyFDGUK2eklqcXKRupaBuE2qirqOgnpZfVFKUmBefX5SSChJ3S8wpTgWKF2ckFqQC+RqaOgq1",
        "ChQBLj8GBgYPIA4HYmcgBgBQSwECLQMtAAAACAAAACEA8M07RlcAAACwAAAACAAAAAAAAAAAAAAAgAEAAAAAcmFtcC5ucHlQSwEC",
        "LQMtAAAACAAAACEACdnRj1YAAACYAAAABwAAAAAAAAAAAAAAgAGRAAAAYmlnLm5weVBLAQItAy0AAAAIAAAAIQAWk4y7RwAAAIMA",
        "AAAJAAAAAAAAAAAAAACAASABAABmbGFncy5ucHlQSwECLQMtAAAACAAAACEAufLOUU0AAACgAAAACQAAAAAAAAAAAAAAgAGiAQAA",
        "c21hbGwubnB5UEsBAi0DLQAAAAgAAAAhALbCzONOAAAAkAAAAAoAAAAAAAAAAAAAAIABKgIAAGxheW91dC5ucHlQSwUGAAAAAAUA",
        "BQARAQAAtAIAAAAA",].joined())!

@Suite("NPY and NPZ reading")
struct NPYTests {
    @Test("external io.npz goldens have the documented arrays",
          .enabled(if: !externalGoldens().isEmpty, "../shared/fixtures-external is absent: external goldens not checked"))
    func externalGoldensRead() throws {
        for path in externalGoldens() {
            let npz = try NPZ.read(path: path)
            let layout = try #require(npz["layout"]?.string, "\(path): no layout string")
            #expect(["NCHW", "NHWC"].contains(layout), "\(path)")
            let input = try #require(npz["input"]?.tensor, "\(path): no input")
            let output = try #require(npz["output"]?.tensor, "\(path): no output")
            #expect(input.shape == (layout == "NCHW" ? [2, 3, 32, 32] : [2, 32, 32, 3]), "\(path)")
            #expect(output.shape == [2, 10], "\(path)")
            #expect(npz["input"]?.descr == "<f4" && npz["output"]?.descr == "<f4")
            #expect(input.data.allSatisfy(\.isFinite) && output.data.allSatisfy(\.isFinite))
            #expect(output.data[0..<10] != output.data[10..<20], "\(path): batch rows should differ")
        }
    }

    @Test("the NHWC goldens hold the NCHW input draw transposed",
          .enabled(if: externalGoldens().count >= 2, "../shared/fixtures-external is absent: cross-layout check skipped"))
    func goldenLayoutsAgree() throws {
        var nchw: Tensor?, nhwc: Tensor?
        for path in externalGoldens() {
            let npz = try NPZ.read(path: path)
            if npz["layout"]?.string == "NCHW", nchw == nil { nchw = npz["input"]?.tensor }
            if npz["layout"]?.string == "NHWC", nhwc == nil { nhwc = npz["input"]?.tensor }
        }
        let a = try #require(nchw), b = try #require(nhwc)
        #expect(a.permuted([0, 2, 3, 1]) == b)
    }

    @Test("a numpy savez_compressed archive reads back: f8, big-endian Fortran f4, bool, i8 and a 0-d string")
    func numpyCompressed() throws {
        let npz = try NPZ.read(data: numpyCompressedNPZ, file: "numpy.npz")
        #expect(npz.names == ["big", "flags", "layout", "ramp", "small"])
        #expect(npz["ramp"]?.tensor == Tensor(shape: [2, 3], data: [0, 1, 2, 3, 4, 5]))
        #expect(npz["big"]?.tensor == Tensor(shape: [2, 3], data: [0, 1, 2, 3, 4, 5]))
        #expect(npz["big"]?.descr == ">f4")
        #expect(npz["flags"]?.tensor == Tensor(shape: [3], data: [1, 0, 1]))
        #expect(npz["small"]?.tensor == Tensor(shape: [4], data: [-2, -1, 0, 1]))
        #expect(npz["layout"]?.string == "NHWC" && npz["layout"]?.shape == [])
        #expect(npz["layout"]?.tensor == nil && npz["ramp"]?.string == nil)
    }

    @Test("a hand-made npz round-trips, stored and deflated, from memory and from a path", arguments: [false, true])
    func roundTrip(compressed: Bool) throws {
        let tensor = Tensor(shape: [2, 3, 4, 5], data: (0..<120).map { Float($0) * 0.25 - 7 })
        let original = NPZ(arrays: ["input": NPYArray(tensor), "layout": NPYArray(string: "NCHW"),
                                    "scalar": NPYArray(Tensor(shape: [], data: [3.5]))])
        let data = try original.encode(compressed: compressed)
        let back = try NPZ.read(data: data)
        #expect(back.arrays == original.arrays)
        #expect(back["input"]?.tensor == tensor)

        let url = FileManager.default.temporaryDirectory.appendingPathComponent("npy-roundtrip-\(UUID().uuidString).npz")
        try data.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(try NPZ.read(path: url.path).arrays == original.arrays)
    }

    @Test("npy format versions 2 and 3 are read like version 1", arguments: [UInt8(1), 2, 3])
    func versions(major: UInt8) throws {
        let data = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", littleEndianFloats([1, -2, 3.5]), major: major)
        #expect(try NPY.read(data).tensor == Tensor(shape: [3], data: [1, -2, 3.5]))
    }

    @Test("element types convert to float32", arguments: [
        ("<f2", [0x00, 0x3C, 0x00, 0xC0] as [UInt8], [1, -2] as [Float]),
        (">f2", [0x3C, 0x00, 0xC0, 0x00], [1, -2]),
        ("<f8", [0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 0, 0, 0, 0, 0, 0, 0x04, 0xC0], [1, -2.5]),
        (">f4", [0x3F, 0x80, 0, 0, 0xC0, 0x20, 0, 0], [1, -2.5]),
        ("<i4", [0xFE, 0xFF, 0xFF, 0xFF, 7, 0, 0, 0], [-2, 7]),
        (">i4", [0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0, 7], [-2, 7]),
        ("<i8", [0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0, 0, 0, 0], [-3, 1]),
        ("|u1", [0, 255], [0, 255]),
        ("|b1", [1, 0], [1, 0]),
    ])
    func elementTypes(descr: String, payload: [UInt8], expected: [Float]) throws {
        let data = npyBytes("{'descr': '\(descr)', 'fortran_order': False, 'shape': (2,), }", payload)
        #expect(try NPY.read(data).tensor == Tensor(shape: [2], data: expected))
    }

    @Test("Fortran-order arrays come back in C order")
    func fortranOrder() throws {
        // The 2x3 matrix [[0, 1, 2], [3, 4, 5]] stored column by column.
        let data = npyBytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", littleEndianFloats([0, 3, 1, 4, 2, 5]))
        #expect(try NPY.read(data).tensor == Tensor(shape: [2, 3], data: [0, 1, 2, 3, 4, 5]))
    }

    @Test("0-d unicode and bytes strings lose their NUL padding")
    func strings() throws {
        let unicode = npyBytes("{'descr': '<U6', 'fortran_order': False, 'shape': (), }",
                               Array("NCHW".unicodeScalars).flatMap { [UInt8($0.value), 0, 0, 0] } + [UInt8](repeating: 0, count: 8))
        #expect(try NPY.read(unicode).string == "NCHW")
        let bigUnicode = npyBytes("{'descr': '>U2', 'fortran_order': False, 'shape': (), }", [0, 0, 0, 0x4E, 0, 0, 0, 0x43])
        #expect(try NPY.read(bigUnicode).string == "NC")
        let bytes = npyBytes("{'descr': '|S5', 'fortran_order': False, 'shape': (), }", Array("NHWC".utf8) + [0])
        #expect(try NPY.read(bytes).string == "NHWC")
    }

    // MARK: - bad files

    func invalidReason(_ data: Data) -> String? {
        do { _ = try NPY.read(data, file: "bad.npy"); return nil } catch let e as ResNetError {
            if case .invalidInput = e { return e.description }
            if case .unsupported = e { return "unsupported: " + e.description }
            return nil
        } catch { return nil }
    }

    @Test("a truncated npy header is refused")
    func truncatedHeader() throws {
        let whole = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", littleEndianFloats([1, 2]))
        #expect(invalidReason(whole.prefix(30))?.contains("truncated") == true)
        #expect(invalidReason(whole.prefix(7))?.contains("too short") == true)
        #expect(invalidReason(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", [])) != nil)
    }

    @Test("a shape whose element count overflows is refused")
    func shapeOverflow() throws {
        let data = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", [])
        #expect(invalidReason(data)?.contains("overflows") == true)
        let bytes = npyBytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }", [])
        #expect(invalidReason(bytes)?.contains("overflows") == true)
    }

    @Test("data shorter or longer than the shape says is refused")
    func dataLength() throws {
        let short = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", littleEndianFloats([1, 2]))
        #expect(invalidReason(short)?.contains("needs 40 bytes of data, the file has 8") == true)
        let long = npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", littleEndianFloats([1, 2]))
        #expect(invalidReason(long)?.contains("unexpected bytes") == true)
    }

    @Test("bad magic, unknown versions, odd headers and unsupported dtypes are refused", arguments: [
        Data([0x93] + Array("NUMPX".utf8) + [1, 0, 0, 0]),
        npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", [0, 0, 0, 0], major: 4),
        npyBytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", [0, 0, 0, 0]),
        npyBytes("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", [0, 0, 0, 0, 0, 0, 0, 0]),
        npyBytes("{'descr': '<f4', 'shape': (1,), }", [0, 0, 0, 0]),
        npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", []),
        npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", [0, 0, 0, 0]),
        npyBytes("{'descr': '<U2', 'fortran_order': False, 'shape': (2,), }", [UInt8](repeating: 65, count: 16)),
        npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } __import__('os')", [0, 0, 0, 0]),
    ])
    func malformed(data: Data) throws {
        #expect(invalidReason(data) != nil)
    }

    @Test("an npz that is not a zip, or whose member is corrupt, is refused")
    func badArchives() throws {
        #expect(throws: ResNetError.self) { try NPZ.read(data: Data("not a zip at all".utf8), file: "x.npz") }
        let tensor = Tensor(shape: [64], data: (0..<64).map(Float.init))
        var data = try NPZ(arrays: ["input": NPYArray(tensor)]).encode(compressed: false)
        // Flip one byte of the stored float data: the CRC must catch it.
        let marker = Data(littleEndianFloats([33]))
        let at = try #require(data.range(of: marker)).lowerBound
        data[at] ^= 0xFF
        let e = try #require(throws: ResNetError.self) { try NPZ.read(data: data, file: "x.npz") }
        #expect(e.description.contains("CRC"))
        let missing = try #require(throws: ResNetError.self) { try NPZ.read(path: "/nonexistent/io.npz") }
        #expect(missing.exitCode == 4)
    }
}
