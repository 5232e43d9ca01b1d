import Testing

@testable import Metadata

/// The byte layout of metadata.log, independent of files.
@Suite struct MetadataLogFormatTests {
    @Test func headerIsMagicThenVersion() {
        #expect(MetadataLogFormat.header() == Array("MGTRMETA".utf8) + [0, 0, 0, 1])
    }

    @Test func putRecordLayout() {
        let body: [UInt8] = [0x01, 0, 0, 0, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0xFF]
        let crc = bitwiseCRC32C(body)
        let expected: [UInt8] =
            [0, 0, 0, 19, UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]
            + body
        #expect(MetadataLogFormat.encode(.put(key: "a", value: [0xFF], version: 2)) == expected)
    }

    @Test func deleteRecordLayout() {
        let record = MetadataLogFormat.encode(.delete(key: "ab", version: 5))
        #expect(Array(record[8...]) == [0x02, 0, 0, 0, 2, 0x61, 0x62, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0])
    }

    @Test func recordsRoundTrip() throws {
        let records: [MetadataRecord] = [
            .put(key: "/a", value: [], version: 0),
            .put(key: "/ünïcode/ключ", value: Array(0...255), version: Int64.max),
            .delete(key: "/a", version: 3),
        ]
        let file = MetadataLogFormat.header() + records.flatMap(MetadataLogFormat.encode)
        let scan = try MetadataLogFormat.scan(file)
        #expect(scan.header == .valid)
        #expect(scan.records == records)
        #expect(scan.validEnd == file.count)
        #expect(scan.tornBytes == 0)
    }

    @Test func malformedBodiesDoNotDecode() {
        // Unknown op.
        #expect(MetadataLogFormat.decodeBody([0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][...]) == nil)
        // Trailing byte.
        #expect(MetadataLogFormat.decodeBody([0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9][...]) == nil)
        // Key longer than the body.
        #expect(MetadataLogFormat.decodeBody([0x01, 0, 0, 0, 9, 0x61][...]) == nil)
        // Negative version.
        #expect(
            MetadataLogFormat.decodeBody([0x01, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0][...])
                == nil)
        // Invalid UTF-8 key.
        #expect(MetadataLogFormat.decodeBody([0x01, 0, 0, 0, 1, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][...]) == nil)
        // The well-formed version of the above decodes.
        #expect(
            MetadataLogFormat.decodeBody([0x01, 0, 0, 0, 1, 0x61, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][...])
                == .put(key: "a", value: [], version: 0))
    }

    @Test func emptyAndPartialHeadersAreUnwritten() throws {
        #expect(try MetadataLogFormat.scan([]).header == .unwritten)
        #expect(try MetadataLogFormat.scan(Array(MetadataLogFormat.header().prefix(7))).header == .unwritten)
        #expect(try MetadataLogFormat.scan([UInt8](repeating: 0, count: 100)).header == .unwritten)
        #expect(throws: MetadataLogFormat.ScanError.notAMetadataLog) {
            try MetadataLogFormat.scan([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        }
    }

    @Test func scanStopsAtATornTail() throws {
        let good = MetadataLogFormat.encode(.put(key: "/a", value: [1], version: 0))
        let next = MetadataLogFormat.encode(.put(key: "/b", value: [2, 3], version: 0))
        let prefix = MetadataLogFormat.header() + good
        for cut in 1..<next.count {
            let scan = try MetadataLogFormat.scan(prefix + next.prefix(cut))
            #expect(scan.records == [.put(key: "/a", value: [1], version: 0)])
            #expect(scan.validEnd == prefix.count)
            #expect(scan.tornBytes == cut)
        }
    }

    @Test func scanRejectsCorruptionFollowedByData() {
        let first = MetadataLogFormat.encode(.put(key: "/a", value: [1], version: 0))
        let second = MetadataLogFormat.encode(.put(key: "/b", value: [2], version: 0))
        var corrupted = first
        corrupted[corrupted.count - 1] ^= 1
        #expect(throws: MetadataLogFormat.ScanError.corruptRecord(offset: MetadataLogFormat.headerBytes)) {
            try MetadataLogFormat.scan(MetadataLogFormat.header() + corrupted + second)
        }
        // An absurd length followed by data is corruption too.
        var badLength = first
        badLength[0] = 0xFF
        #expect(throws: MetadataLogFormat.ScanError.corruptRecord(offset: MetadataLogFormat.headerBytes)) {
            try MetadataLogFormat.scan(MetadataLogFormat.header() + badLength + second)
        }
    }

    /// CRC-32C computed bit by bit, independent of the CRC32C module.
    private func bitwiseCRC32C(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
            }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
