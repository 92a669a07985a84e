import Foundation
import Testing
@testable import ResNetKit

/// The provenance hash must be real SHA-256: compared with the FIPS 180-2 examples and with the
/// hashes Python's hashlib wrote into the torch fixture manifest.
@Suite struct SHA256Tests {
    static func hex(_ bytes: [UInt8]) -> String {
        var h = SHA256()
        bytes.withUnsafeBytes { h.update($0) }
        return h.finish()
    }

    @Test func matchesTheStandardExamples() {
        #expect(Self.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Self.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(Self.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func matchesTheHashesInTheTorchManifest() throws {
        let manifest = Paths.fixtures.appendingPathComponent("torch/MANIFEST.json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: manifest)) as? [String: Any])
        let files = try #require(object["files"] as? [[String: Any]])
        #expect(files.count >= 10)
        for f in files {
            let path = Paths.fixtures.appendingPathComponent("torch").appendingPathComponent(f["path"] as! String).path
            #expect(try sha256Hex(path: path) == f["sha256"] as? String, "\(path)")
        }
    }
}
