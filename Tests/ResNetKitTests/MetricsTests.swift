import Foundation
import Testing
import ResNetKit

@Suite("Parity metrics")
struct MetricsTests {
    let reference = Tensor(shape: [2, 4], data: [1, 50, -3, 2, -0.5, 0.25, 0.75, 0])

    @Test("identical tensors pass with zero error, cosine 1 and full top-1 agreement")
    func identical() throws {
        let r = try ParityReport(output: reference, reference: reference)
        #expect(r.passed && r.maxAbsError == 0 && r.meanAbsError == 0 && r.maxRelativeError == 0)
        #expect(abs(r.cosine - 1) < 1e-12)
        #expect(r.top1Agreement == [true, true])
        #expect(r.referenceScale == 50)
        #expect(r.nonFinite == nil)
    }

    @Test("the error is judged relative to the reference scale, with a floor of 1")
    func relativeTolerance() throws {
        // Scale 50: 4e-3 is 8e-5 of it (passes), 6e-3 is 1.2e-4 (fails).
        var out = reference
        out.data[6] += 4e-3
        let ok = try ParityReport(output: out, reference: reference)
        #expect(ok.passed)
        #expect(ok.worstIndex == [1, 2])
        #expect(abs(ok.maxAbsError - 4e-3) < 1e-6 && abs(ok.maxRelativeError - 8e-5) < 1e-7)
        #expect(abs(ok.meanAbsError - 4e-3 / 8) < 1e-7)
        out.data[6] = reference.data[6] + 6e-3
        #expect(try !ParityReport(output: out, reference: reference).passed)

        // Probabilities below 1: the floor makes 5e-5 absolute acceptable, 2e-4 not.
        let small = Tensor(shape: [1, 3], data: [0.01, 0.002, 0.005])
        var near = small
        near.data[0] += 5e-5
        let floor = try ParityReport(output: near, reference: small)
        #expect(floor.passed && floor.referenceScale == 1)
        near.data[0] = small.data[0] + 2e-4
        #expect(try !ParityReport(output: near, reference: small).passed)
    }

    @Test("a custom tolerance is used and recorded")
    func customTolerance() throws {
        var out = reference
        out.data[0] += 0.01
        let r = try ParityReport(output: out, reference: reference, tolerance: 1e-3, toleranceNote: "float16 weights")
        #expect(r.passed && r.tolerance == 1e-3 && r.toleranceNote == "float16 weights")
    }

    @Test("NaN or infinity on either side fails with its own message", arguments: [Float.nan, .infinity, -.infinity])
    func nonFinite(bad: Float) throws {
        var out = reference
        out.data[3] = bad
        let r = try ParityReport(output: out, reference: reference)
        #expect(!r.passed)
        #expect(r.nonFinite?.contains("output has 1 NaN/Inf") == true && r.nonFinite?.contains("[0, 3]") == true)
        #expect(r.maxAbsError == 0)             // the finite pairs agree; only the non-finite value fails
        #expect(r.text.contains("non-finite"))

        let back = try ParityReport(output: reference, reference: out)
        #expect(!back.passed && back.nonFinite?.contains("reference has 1 NaN/Inf") == true)
        // Non-finite values never reach the numeric fields, so the report stays encodable as JSON.
        _ = try JSONEncoder().encode(back)
    }

    @Test("top-1 agreement is reported per batch row")
    func top1PerRow() throws {
        var out = reference
        out.data[4] = 1       // row 1 arg-max moves from index 2 to index 0
        let r = try ParityReport(output: out, reference: reference)
        #expect(r.top1Agreement == [true, false])
        #expect(r.text.contains("top-1 agrees on 1/2 rows"))
    }

    @Test("cosine of opposite tensors is -1; of a zero and a non-zero tensor 0")
    func cosine() throws {
        let negated = Tensor(shape: reference.shape, data: reference.data.map { -$0 })
        #expect(abs(try ParityReport(output: negated, reference: reference).cosine + 1) < 1e-12)
        #expect(try ParityReport(output: Tensor(zeros: [2, 4]), reference: reference).cosine == 0)
        #expect(try ParityReport(output: Tensor(zeros: [2, 4]), reference: Tensor(zeros: [2, 4])).cosine == 1)
    }

    @Test("different shapes cannot be compared")
    func shapeMismatch() throws {
        let e = try #require(throws: ResNetError.self) {
            try ParityReport(output: Tensor(zeros: [8]), reference: reference)
        }
        #expect(e.exitCode == 1 && e.description.contains("[2, 4]"))
    }

    @Test("the report round-trips through JSON and renders a short text")
    func codableAndText() throws {
        var out = reference
        out.data[1] += 1
        let r = try ParityReport(output: out, reference: reference)
        let back = try JSONDecoder().decode(ParityReport.self, from: JSONEncoder().encode(r))
        #expect(back == r)
        #expect(r.text.hasPrefix("parity FAILED"))
        #expect(r.text.contains("worst at [0, 1]"))
        #expect(try ParityReport(output: reference, reference: reference).text.hasPrefix("parity PASSED"))
    }
}
