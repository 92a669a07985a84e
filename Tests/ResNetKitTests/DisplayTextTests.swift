import Foundation
import Testing
@testable import ResNetKit

/// Text from files as it is shown to people: control characters escaped, long names cut, and the
/// escaping idempotent so that two choke points never escape twice.
@Suite struct DisplayTextTests {
    @Test func controlCharactersAreEscaped() {
        #expect(DisplayText.escape("a\u{1b}[2Jb") == "a\\x1b[2Jb")
        #expect(DisplayText.escape("x\ny\rz\tw\0v") == "x\\ny\\rz\\tw\\0v")
        #expect(DisplayText.escape("del\u{7f}") == "del\\x7f")
        #expect(DisplayText.escape("c1\u{9b}31m") == "c1\\u{9b}31m")
        #expect(DisplayText.escape("bidi\u{202e}txt.exe\u{2066}") == "bidi\\u{202e}txt.exe\\u{2066}")
        #expect(DisplayText.escape("line\u{2028}sep") == "line\\u{2028}sep")
        // Ordinary text, including non-ASCII letters and backslashes, is left as it is.
        #expect(DisplayText.escape("layer1.0.conv1.weight → ünïcode \\x1b") == "layer1.0.conv1.weight → ünïcode \\x1b")
    }

    @Test func invalidUTF8IsShownByteByByte() {
        #expect(DisplayText.escape(bytes: [0x61, 0xFF, 0x62, 0xC3, 0xA9, 0xE2, 0x82]) == "a\\xffbé\\xe2\\x82")
        #expect(DisplayText.escape(bytes: [0xED, 0xA0, 0x80]) == "\\xed\\xa0\\x80")   // a UTF-16 surrogate
        #expect(DisplayText.escape(bytes: [0xC0, 0x80]) == "\\xc0\\x80")               // overlong NUL
        #expect(DisplayText.escape(bytes: [0x1B, 0x5B]) == "\\x1b[")
    }

    @Test func longNamesAreCutWithTheirLength() {
        let name = String(repeating: "a", count: 1 << 20)
        let shown = DisplayText.escape("no scheme maps '\(name)', pass --map")
        #expect(shown == "no scheme maps '" + String(repeating: "a", count: DisplayText.maxNameBytes) + "…' (1048576 bytes), pass --map")
        // Escapes count towards the cut: a name of ESC bytes is cut at the same shown width.
        let escs = DisplayText.escape(String(repeating: "\u{1b}", count: 1000))
        #expect(escs.utf8.count < DisplayText.maxNameBytes + 40)
        #expect(escs.hasSuffix("… (1000 bytes)"))
    }

    @Test func longMessagesAreCut() {
        let words = Array(repeating: "word", count: 100_000).joined(separator: " ")
        let shown = DisplayText.escape(words)
        #expect(shown.utf8.count < DisplayText.maxMessageBytes + 64)
        #expect(shown.hasSuffix("more bytes)"))
    }

    @Test func escapingIsIdempotent() {
        let samples = [
            "a\u{1b}[2J\nOK: forged\0", String(repeating: "b", count: 5000) + "' tail",
            String(repeating: "\u{1b}", count: 3000), Array(repeating: "k\u{7}ey", count: 40_000).joined(separator: ", "),
            "'" + String(repeating: "é", count: 400) + "'",
        ]
        for s in samples {
            let once = DisplayText.escape(s)
            #expect(DisplayText.escape(once) == once)
            #expect(!once.unicodeScalars.contains { $0.value < 0x20 || (0x7F ... 0x9F).contains($0.value) })
        }
    }

    @Test func errorDescriptionsEscapeEveryPart() {
        let e = ResNetError.invalidInput(file: "f\u{1b}.pt", place: "tensor 'a\nOK: b'", reason: "bad \u{0}")
        #expect(e.description == "f\\x1b.pt: invalid input at tensor 'a\\nOK: b': bad \\0")
        let p = ResNetError.parityFailed(reason: "line 1\u{1b}\n  line 2")
        #expect(p.description == "parity failed: line 1\\x1b\n  line 2")
    }

    @Test func placeholdersAreReplacedByTheFile() throws {
        let e = ResNetError.mapping(file: "model", reason: "r").naming(model: "m.pth", input: "io.npz")
        #expect(e.description == "m.pth: cannot map weights: r")
        let i = ResNetError.invalidInput(file: "input", place: "input tensor", reason: "r").naming(model: "m.pth", input: "io.npz")
        #expect(i.description == "io.npz: invalid input at input tensor: r")
        #expect(throws: ResNetError.self) {
            try namingFiles(model: "m.pth") { throw ResNetError.unsupported(file: "model", place: "p", reason: "r") }
        }
        do {
            try namingFiles(model: "m.pth") { throw ResNetError.unsupported(file: "model", place: "p", reason: "r") }
        } catch {
            #expect("\(error)" == "m.pth: unsupported at p: r")
        }
    }
}
