import Foundation
import Testing
@testable import ResNetKit

/// The layouts real libraries write that no naming table lists (fixtures/recognition, made by
/// tools/make_recognition_fixtures.py with torch, timm, transformers and Lightning, BatchNorm
/// statistics calibrated on synthetic natural-looking images): each converts with its goldens and
/// no --arch or --map, and without goldens the BatchNorm plausibility check keeps or finds the
/// structure that reproduces them.
@Suite struct RecognitionFixtureTests {
    struct Case: CustomStringConvertible, Sendable {
        var file: String
        var golden: String
        var description: String { file }
    }

    static let cases: [Case] = {
        let root = Paths.fixtures.appendingPathComponent("recognition")
        guard let data = FileManager.default.contents(atPath: root.appendingPathComponent("MANIFEST.json").path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let fixtures = json["fixtures"] as? [[String: Any]] else { return [] }
        var out: [Case] = []
        for f in fixtures {
            guard let golden = f["golden"] as? String, let files = f["files"] as? [[String: Any]] else { continue }
            for file in files {
                guard let path = file["path"] as? String, !path.hasSuffix(".json") else { continue }
                out.append(Case(file: root.appendingPathComponent(path).path, golden: root.appendingPathComponent(golden).path))
            }
        }
        return out
    }()

    @Test func theManifestListsEveryLayout() {
        #expect(Self.cases.count >= 22, "\(Self.cases.map(\.file))")
    }

    @Test("converts with its goldens, no --arch or --map", arguments: cases)
    func convertsWithGoldens(_ c: Case) throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try convert(input: c.file, output: dir.appendingPathComponent("out.rnw").path, options: .init(expect: c.golden))
        #expect(report.passed, "\(c.file): \(report.checks.map(\.detail).joined(separator: "\n"))")
    }

    /// Layouts whose one wrong choice the statistics cannot see (measured; see the "Recognising
    /// architectures" article): whether a zero-channel shortcut average-pools or subsamples. The
    /// notes must say the choice was not checked.
    static let notSettledWithoutGoldens: [String: String] = [
        "avgpool-zeropad": "zero-channel shortcut: subsample",
    ]

    @Test("without goldens, BatchNorm plausibility settles on the structure the goldens confirm", arguments: cases)
    func plausibilityFindsTheStructure(_ c: Case) throws {
        let name = URL(fileURLWithPath: c.file).deletingLastPathComponent().lastPathComponent
        let body = {
            let loaded = try settleStructure(try loadModel(path: c.file), goldens: nil)
            let goldens = try Goldens(path: c.golden, inputChannels: loaded.model.spec.inputChannels)
            let check = try Verifier.checkGoldens(loaded.model, goldens: goldens, aliases: Verifier.layerAliases(loaded))
            let passed = check.passed
            #expect(passed, "\(c.file): \(loaded.notes.filter { $0.contains("plausib") }.joined(separator: "\n"))")
        }
        if let unseen = Self.notSettledWithoutGoldens[name] {
            let loaded = try settleStructure(try loadModel(path: c.file), goldens: nil)
            #expect(loaded.notes.contains { $0.hasPrefix("not checked without goldens") && $0.contains(unseen) }, "\(loaded.notes)")
            withKnownIssue("the statistics cannot see \(unseen)") { try body() }
        } else {
            try body()
        }
    }
}
