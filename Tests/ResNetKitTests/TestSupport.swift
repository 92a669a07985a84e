import Foundation
import Testing
@testable import ResNetKit

/// Paths the tests use, resolved from this file so the tests run from any working directory.
enum Paths {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = packageRoot.appendingPathComponent("fixtures")
    /// Real checkpoints others published, kept outside the repository.
    static let external = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures-external")

    /// The external file, or nil after printing why the test is skipped.
    static func externalFile(_ relative: String) -> String? {
        let url = external.appendingPathComponent(relative)
        if FileManager.default.fileExists(atPath: url.path) { return url.path }
        print("SKIPPED: \(relative) not found under ../shared/fixtures-external (external fixtures are not part of the repository)")
        return nil
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rnw-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Measurements a test reports besides its verdict (errors, counts, sizes): printed only when
/// `RESNET_CONVERT_TEST_LOG` is set, so a plain `swift test` shows results, failures and skips.
func testLog(_ message: @autoclosure () -> String) {
    if ProcessInfo.processInfo.environment["RESNET_CONVERT_TEST_LOG"] != nil { print(message()) }
}
