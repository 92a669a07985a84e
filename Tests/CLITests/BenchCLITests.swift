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

    /// `--explain` lists each convolution with its choice; a second run in a fresh process with the same
    /// cache file takes every choice from it (and the file is the only state shared between them).
    @Test func explainListsEveryConvolutionAndTheCacheIsReused() throws {
        let model = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let dir = try CLITests.tempDir()
        var env = ProcessInfo.processInfo.environment
        env["RESNET_KERNEL_CACHE"] = dir.appendingPathComponent("choices.json").path
        env["RESNET_PLAN_TUNING"] = nil
        let args = ["bench", model, "--batch", "1", "--size", "32", "--iterations", "1", "--threads", "2", "--explain"]
        let first = try CLITests.run(args, environment: env)
        #expect(first.code == 0, "\(first.stdout)\(first.stderr)")
        let lines = first.stdout.split(separator: "\n").filter { $0.contains("-> ") }
        #expect(!lines.isEmpty && lines.contains { $0.contains("[measured]") }, "\(first.stdout)")
        #expect(FileManager.default.fileExists(atPath: env["RESNET_KERNEL_CACHE"]!))
        let second = try CLITests.run(args, environment: env)
        #expect(second.code == 0, "\(second.stdout)\(second.stderr)")
        let again = second.stdout.split(separator: "\n").filter { $0.contains("-> ") }
        #expect(again.count == lines.count && !again.contains { $0.contains("[measured]") }, "\(second.stdout)")
        #expect(second.stdout.contains("(0.0 ms timing kernel candidates)"), "\(second.stdout)")
        // Pinned: nothing measured, nothing read from the cache.
        env["RESNET_PLAN_TUNING"] = "gemm-kernel=0,winograd=0,winograd-kernel=0,grouped=0"
        let pinned = try CLITests.run(args, environment: env)
        #expect(pinned.code == 0 && pinned.stdout.split(separator: "\n").filter { $0.contains("-> ") }.allSatisfy { $0.contains("-> gemm blas [fixed]") },
                "\(pinned.stdout)")
    }

    @Test func benchRefusesAZeroBatch() throws {
        let model = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let r = try CLITests.run(["bench", model, "--batch", "0", "--iterations", "1"])
        #expect(r.code == 2, "\(r.stdout)\(r.stderr)")
    }
}
