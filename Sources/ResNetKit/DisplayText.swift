/// Text that came from a file (tensor and layer names, a spec's family, pickle class names, JSON
/// strings), made safe to show to people: a hostile name must not be able to move the cursor, clear
/// the screen, forge an "OK" line, reorder what follows it, or flood a terminal or a log.
///
/// Applied where such text enters a human-readable message (``ResNetError/description``, the
/// `text` of reports, the command-line printers); JSON output is left exact, its encoder escapes
/// by itself. The escaping is idempotent: its output contains no character it would escape, so a
/// message that passes two choke points is not escaped twice. Backslashes are therefore kept as
/// they are: the point is safety, not a reversible encoding.
public enum DisplayText {
    /// The longest name (a run of characters without spaces, quotes, commas or brackets) shown
    /// whole; a longer one is cut and followed by its length in bytes.
    public static let maxNameBytes = 256
    /// The longest message shown whole (after cutting long names); the rest is replaced by a count.
    public static let maxMessageBytes = 64 << 10

    /// `text` with control characters escaped and overlong names cut:
    /// C0 controls as `\0`, `\t`, `\n`, `\r` or `\x1b`, DEL as `\x7f`, C1 controls and the Unicode
    /// format characters that reorder or break lines (bidi embeddings, overrides and isolates, line
    /// and paragraph separators) as `\u{202e}`.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(min(text.utf8.count, maxMessageBytes) + 16)
        // A name is cut by the length of its escaped form, so that escaping the result again
        // changes nothing; the length reported is the original one.
        var runBytes = 0          // bytes of the current name in the original text
        var runShown = 0          // bytes of the current name as shown
        var runCut = false        // the current name was cut
        var shownBytes = 0        // bytes of `out` (counted as the message is cut by what it shows)
        var remaining = text.utf8.count
        for scalar in text.unicodeScalars {
            let size = UTF8.width(scalar)
            remaining -= size
            if isSeparator(scalar) {
                if runCut {
                    // A closing quote stays with the name: `'aaaa…' (1048576 bytes)`.
                    let quote = scalar == "'" || scalar == "\""
                    let note = (quote ? String(scalar) : "") + " (\(runBytes) bytes)"
                    out += note
                    shownBytes += note.utf8.count
                    runBytes = 0; runShown = 0; runCut = false
                    if quote { continue }
                }
                runBytes = 0; runShown = 0
            } else {
                runBytes += size
                if runCut { continue }
                runShown += escapedWidth(scalar)
                if runShown > maxNameBytes {
                    runCut = true
                    out += "…"
                    shownBytes += 3
                    continue
                }
            }
            // A short rest is kept, so that escaping a cut message again leaves it as it is.
            if shownBytes >= maxMessageBytes && remaining + size > 64 {
                out += "… (\(remaining + size) more bytes)"
                return out
            }
            let width = escapedWidth(scalar)
            shownBytes += width
            if width == size { out.unicodeScalars.append(scalar) } else { out += escaped(scalar) }
        }
        if runCut { out += " (\(runBytes) bytes)" }
        return out
    }

    /// Bytes that should be UTF-8 text (a name read from a file), escaped like ``escape(_:)``,
    /// with each byte that is not part of valid UTF-8 shown as `\xNN`.
    public static func escape<Bytes: Collection>(bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let a = Array(bytes)
        var text = ""
        var i = 0
        while i < a.count {
            let b0 = a[i]
            if b0 < 0x80 { text.unicodeScalars.append(Unicode.Scalar(b0)); i += 1; continue }
            let (n, minimum): (Int, UInt32)
            switch b0 {
            case 0xC2 ... 0xDF: (n, minimum) = (2, 0x80)
            case 0xE0 ... 0xEF: (n, minimum) = (3, 0x800)
            case 0xF0 ... 0xF4: (n, minimum) = (4, 0x10000)
            default: (n, minimum) = (0, 0)
            }
            var value = UInt32(b0) & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07)
            var valid = n > 0 && i + n <= a.count
            if valid {
                for k in 1 ..< n {
                    let b = a[i + k]
                    guard b & 0xC0 == 0x80 else { valid = false; break }
                    value = value << 6 | UInt32(b & 0x3F)
                }
            }
            if valid, value >= minimum, let s = Unicode.Scalar(value) {   // nil for surrogates and > U+10FFFF
                text.unicodeScalars.append(s)
                i += n
            } else {
                text += "\\x" + hex(b0)
                i += 1
            }
        }
        return escape(text)
    }

    /// Characters that end a name for the purpose of cutting long ones.
    static func isSeparator(_ s: Unicode.Scalar) -> Bool {
        switch s {
        case " ", "'", "\"", ",", ";", "(", ")", "[", "]", "{", "}", "\n", "\t", "\r", "…": return true
        default: return false
        }
    }

    /// Characters beyond the C0 controls that a terminal acts on: C1 controls, bidirectional controls
    /// and the line and paragraph separators. Everything that escapes text for a terminal uses this one list.
    public static func isTerminalFormatting(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x80 ... 0x9F, 0x061C, 0x200E, 0x200F, 0x2028, 0x2029, 0x202A ... 0x202E, 0x2066 ... 0x2069: true
        default: false
        }
    }

    /// The length in UTF-8 bytes of ``escaped(_:)``, without building it.
    static func escapedWidth(_ s: Unicode.Scalar) -> Int {
        switch s.value {
        case 0x00, 0x09, 0x0A, 0x0D: return 2
        case 0x01 ... 0x1F, 0x7F: return 4
        case _ where isTerminalFormatting(s): return 4 + String(s.value, radix: 16).count
        default: return UTF8.width(s)
        }
    }

    static func escaped(_ s: Unicode.Scalar) -> String {
        switch s.value {
        case 0x00: return "\\0"
        case 0x09: return "\\t"
        case 0x0A: return "\\n"
        case 0x0D: return "\\r"
        case 0x01 ... 0x1F, 0x7F: return "\\x" + hex(UInt8(s.value))
        case _ where isTerminalFormatting(s):
            return "\\u{" + String(s.value, radix: 16) + "}"
        default: return String(s)
        }
    }

    static func hex(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }
}

extension String {
    /// This text, from a file, as it may be shown to people (``DisplayText/escape(_:)``).
    public var displayed: String { DisplayText.escape(self) }
}

/// The first `limit` items joined by `separator`, saying how many were left out when the list is longer.
/// - total: how many there are, when `items` holds only the first few of them; `noun` names them in
///   the count ("classes").
func firstItems(_ items: [String], _ limit: Int, separator: String = ", ", total: Int? = nil, noun: String = "") -> String {
    let all = total ?? items.count
    let shown = items.prefix(limit).joined(separator: separator)
    return all > min(limit, items.count) ? "\(shown)\(separator)… (\(all)\(noun.isEmpty ? "" : " " + noun) in all)" : shown
}
