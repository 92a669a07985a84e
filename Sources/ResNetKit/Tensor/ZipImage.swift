import CZlibCRC
import Foundation

/// A zip archive held as bytes (a mapped file): its directory checked by ``checkedZipDirectory``
/// (every entry against its local header, no duplicate names), members by name, and each
/// member's bytes either in place (stored) or inflated by zlib into a buffer of exactly the size
/// the directory declares, charged to a ``ReadBudget`` before it is allocated. The inflater stops
/// at that size: a member that inflates past it is refused at the first byte over, so a deflate
/// bomb costs no more than the size it declares, and that size was charged first.
final class ZipImage {
    let file: String
    let bytes: UnsafeRawBufferPointer
    /// Members in directory order.
    let members: [ZipMember]
    private let byName: [String: ZipMember]

    init(bytes: UnsafeRawBufferPointer, file: String, plainSizeWithinFile: Bool) throws {
        self.file = file
        self.bytes = bytes
        members = try checkedZipDirectory(bytes, file: file, plainSizeWithinFile: plainSizeWithinFile)
        byName = Dictionary(members.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })   // names are unique: checked
    }

    subscript(name: String) -> ZipMember? { byName[name] }

    /// Calls `body` with the plain bytes of `m`: in place for a stored member (CRC checked), else
    /// inflated (CRC checked) into a buffer freed when `body` returns. `budget` is charged the
    /// inflated size first.
    func withMember<R>(_ m: ZipMember, budget: ReadBudget, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let place = "\(m.name) (zip member)"
        if !m.compressed {
            let raw = UnsafeRawBufferPointer(rebasing: bytes[m.data])
            try checkCRC(raw, m, place: place)
            return try body(raw)
        }
        let out = try inflate(m, budget: budget)
        defer { free(out.baseAddress) }
        return try body(UnsafeRawBufferPointer(out))
    }

    private func checkCRC(_ raw: UnsafeRawBufferPointer, _ m: ZipMember, place: String) throws {
        let crc = ZipCRC32.checksum(raw)
        guard crc == m.crc32 else {
            throw ResNetError.invalidInput(file: file, place: place,
                reason: "CRC-32 is \(String(crc, radix: 16)), the zip directory says \(String(m.crc32, radix: 16)): damaged bytes")
        }
    }

    /// Inflates a deflated member into a new malloc'd buffer of exactly its declared size (the
    /// caller frees it). Raw deflate (no zlib header), as zip stores it.
    private func inflate(_ m: ZipMember, budget: ReadBudget) throws -> UnsafeMutableRawBufferPointer {
        let place = "\(m.name) (zip member)"
        func bad(_ reason: String) -> ResNetError { .invalidInput(file: file, place: place, reason: reason) }
        try budget.charge(m.uncompressedSize, place: place, what: "inflating the member to its declared size", probe: false)
        let out = try allocateBytes(m.uncompressedSize, file: file, place: place, what: "the inflated member")
        var done = false
        defer { if !done { free(out) } }
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw bad("zlib cannot start inflating")
        }
        defer { inflateEnd(&stream) }
        let input = UnsafeRawBufferPointer(rebasing: bytes[m.data])
        var inAt = 0, outAt = 0
        let spare = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        defer { spare.deallocate() }
        var ended = false
        // zlib counts in 32-bit units; input and output are fed in pieces of at most 1 GiB.
        while !ended {
            if stream.avail_in == 0 && inAt < input.count {
                let n = min(input.count - inAt, 1 << 30)
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.advanced(by: inAt).assumingMemoryBound(to: Bytef.self))
                stream.avail_in = uInt(n)
                inAt += n
            }
            let overflowProbe = outAt == m.uncompressedSize
            if overflowProbe {
                // The declared size is reached: one more byte of output means the member lies.
                stream.next_out = spare
                stream.avail_out = 1
            } else {
                let n = min(m.uncompressedSize - outAt, 1 << 30)
                stream.next_out = out.advanced(by: outAt).assumingMemoryBound(to: Bytef.self)
                stream.avail_out = uInt(n)
            }
            let before = stream.avail_out, beforeIn = stream.avail_in
            let status = zlibInflate(&stream)
            let produced = Int(before - stream.avail_out)
            if status != Z_STREAM_END && produced == 0 && stream.avail_in == beforeIn && stream.avail_in > 0 {
                throw bad("the deflate stream makes no progress")
            }
            if overflowProbe && produced > 0 {
                throw bad("inflates past the \(m.uncompressedSize) bytes the zip directory declares")
            }
            outAt += overflowProbe ? 0 : produced
            switch status {
            case Z_STREAM_END: ended = true
            case Z_OK: break
            case Z_BUF_ERROR:
                // No progress possible: either the input is used up (truncated stream) or the
                // output is full and the stream has not ended (checked on the next turn).
                if stream.avail_in == 0 && inAt == input.count { throw bad("the deflate stream ends before its end marker (truncated)") }
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "status \(status)"
                throw bad("cannot inflate: \(message)")
            }
        }
        guard outAt == m.uncompressedSize else {
            throw bad("inflated to \(outAt) bytes, the zip directory says \(m.uncompressedSize)")
        }
        let result = UnsafeMutableRawBufferPointer(start: out, count: m.uncompressedSize)
        try checkCRC(UnsafeRawBufferPointer(result), m, place: place)
        done = true
        return result
    }
}

/// zlib's `inflate` (a plain call; the name is taken by the method above).
private func zlibInflate(_ stream: UnsafeMutablePointer<z_stream>) -> Int32 {
    inflate(stream, Z_NO_FLUSH)
}
