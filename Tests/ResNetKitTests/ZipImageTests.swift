import Foundation
import Testing
@testable import ResNetKit

/// The zip reader under every reader of zips (`.pth`, `.keras`, `.npz`): members are inflated into
/// a buffer of the size the directory declares, charged to the budget first, and any disagreement
/// between that size, the stream and the CRC is refused.
@Suite struct ZipImageTests {
    /// A raw deflate stream of one stored block holding `data` (final block, no compression).
    static func storedBlock(_ data: [UInt8]) -> [UInt8] {
        let n = UInt16(data.count)
        return [0x01, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8(~n >> 8)] + data
    }

    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * UInt32($0))) & 0xFF) } }

    /// A one-member zip whose directory and local header both declare `plain` bytes and `crc`.
    static func zip(name: String, stream: [UInt8], plain: Int, crc: UInt32) -> Data {
        let n = Array(name.utf8)
        let sizes = le32(crc) + le32(UInt32(stream.count)) + le32(UInt32(plain))
        var out = le32(0x0403_4B50) + le16(20) + le16(0) + le16(8) + le16(0) + le16(0x21) + sizes + le16(n.count) + le16(0) + n + stream
        let cd = out.count
        out += le32(0x0201_4B50) + le16(20) + le16(20) + le16(0) + le16(8) + le16(0) + le16(0x21) + sizes
            + le16(n.count) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0) + le32(0) + n
        out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(1) + le16(1) + le32(UInt32(out.count - cd)) + le32(UInt32(cd)) + le16(0)
        return Data(out)
    }

    static func crc(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { ZipCRC32.checksum($0) } }

    /// Reads the member back, or returns the refusal's text.
    static func read(_ data: Data, limits: ReadLimits = .standard) -> Result<[UInt8], Error> {
        Result {
            let image = try MappedFile(copying: data, name: "t.zip")
            let zip = try ZipImage(bytes: image.bytes, file: "t.zip", plainSizeWithinFile: false)
            let budget = ReadBudget(file: "t.zip", fileBytes: data.count, limits: limits)
            return try zip.withMember(try #require(zip["m"]), budget: budget) { Array($0) }
        }
    }

    static func refusal(_ r: Result<[UInt8], Error>) -> String {
        if case let .failure(e) = r { return "\(e)" }
        return "accepted"
    }

    let payload = Array("the member's plain bytes".utf8)

    @Test func aDeflatedMemberReadsBack() throws {
        let r = Self.read(Self.zip(name: "m", stream: Self.storedBlock(payload), plain: payload.count, crc: Self.crc(payload)))
        #expect(try r.get() == payload)
    }

    @Test func aStreamShorterThanDeclaredIsRefused() {
        let r = Self.read(Self.zip(name: "m", stream: Self.storedBlock(payload), plain: payload.count + 5, crc: Self.crc(payload)))
        #expect(Self.refusal(r).contains("inflated to \(payload.count) bytes"), "\(Self.refusal(r))")
    }

    @Test func aStreamLongerThanDeclaredIsRefusedAtTheFirstByteOver() {
        let r = Self.read(Self.zip(name: "m", stream: Self.storedBlock(payload), plain: payload.count - 1, crc: Self.crc(payload)))
        #expect(Self.refusal(r).contains("inflates past the \(payload.count - 1) bytes"), "\(Self.refusal(r))")
    }

    @Test func aTruncatedStreamIsRefused() {
        let stream = Array(Self.storedBlock(payload).dropLast(4))
        let r = Self.read(Self.zip(name: "m", stream: stream, plain: payload.count, crc: Self.crc(payload)))
        #expect(Self.refusal(r).contains("ends before its end marker"), "\(Self.refusal(r))")
    }

    @Test func aWrongCRCIsRefused() {
        let r = Self.read(Self.zip(name: "m", stream: Self.storedBlock(payload), plain: payload.count, crc: Self.crc(payload) ^ 1))
        #expect(Self.refusal(r).contains("CRC-32"), "\(Self.refusal(r))")
    }

    /// The declared size is charged before anything is allocated: a member declaring 3 GiB in a
    /// file of a hundred bytes is refused naming the flag, whatever its stream holds.
    @Test func aDeclaredSizeOverTheBudgetIsRefusedBeforeInflating() {
        let r = Self.read(Self.zip(name: "m", stream: Self.storedBlock(payload), plain: 3 << 30, crc: Self.crc(payload)))
        #expect(Self.refusal(r).contains("--max-expansion"), "\(Self.refusal(r))")
    }
}
