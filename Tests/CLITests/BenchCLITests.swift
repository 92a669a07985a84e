import Foundation
import Testing

/// `resnet-convert bench`: the JSON fields exist and make sense. No timing is asserted: machines are noisy.
@Suite struct BenchCLITests {
    @Test func benchJSONHasTheDocumentedFields() throws {
        let model = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let dir = try CLITests.tempDir()
        let rnw = dir.appendingPathComponent("good.rnw").path
        let c = try CLITests.run([model, rnw])
        #expect(c.code == 0, "\(c.stdout)\(c.stderr)")
        for file in [model, rnw] {
            let r = try CLITests.run(["bench", file, "--batch", "2", "--size", "32", "--iterations", "1", "--threads", "1", "--json"])
            #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            let json = try #require(object, "not a JSON object: \(r.stdout)")
            for key in ["median_ms", "min_ms", "throughput_per_s", "threads", "batch", "size", "load_ms"] {
                #expect(json[key] != nil, "\(key) missing in \(r.stdout)")
            }
            #expect(json["batch"] as? Int == 2 && json["size"] as? Int == 32 && json["threads"] as? Int == 1)
            #expect((json["median_ms"] as? Double ?? 0) > 0)
            #expect((json["open_rnw_ms"] != nil) == (file == rnw), "open_rnw_ms is reported for .rnw files only")
        }
    }

    @Test func benchRefusesAZeroBatch() throws {
        let model = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let r = try CLITests.run(["bench", model, "--batch", "0", "--iterations", "1"])
        #expect(r.code == 2, "\(r.stdout)\(r.stderr)")
    }
}
