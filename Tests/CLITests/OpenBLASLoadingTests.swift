import Foundation
import Testing

/// OpenBLAS is opened on the first forward pass, not when the process starts (Sources/COpenBLAS):
/// a command that runs no forward pass works without it, and one that does fails with an error
/// naming it. The runs put a directory first on the loader's path whose `libopenblas.so.0` is not
/// a library, which is what a missing or broken OpenBLAS looks like to the process.
@Suite struct OpenBLASLoadingTests {
    static func runWithBrokenOpenBLAS(_ args: [String]) throws -> CLITests.Run {
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("not a shared library\n".utf8).write(to: dir.appendingPathComponent("libopenblas.so.0"))
        var environment = ProcessInfo.processInfo.environment
        environment["LD_LIBRARY_PATH"] = dir.path + (environment["LD_LIBRARY_PATH"].map { ":" + $0 } ?? "")
        return try CLITests.run(args, environment: environment)
    }

    @Test func convertWithoutVerificationRunsWithoutOpenBLAS() throws {
        let model = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let dir = try CLITests.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("good.rnw").path
        let r = try Self.runWithBrokenOpenBLAS(["convert", model, out, "--no-verify"])
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: out))
    }

    @Test func aForwardPassWithoutOpenBLASFailsNamingTheLibrary() throws {
        let model = CLITests.fixtures.appendingPathComponent("bad/good.h5").path
        let r = try Self.runWithBrokenOpenBLAS(["bench", model, "--size", "32", "--iterations", "1", "--warmup", "0"])
        #expect(r.code == 4, "\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains("libopenblas.so.0") && r.stderr.contains("cannot load OpenBLAS"), "\(r.stderr)")
    }
}
