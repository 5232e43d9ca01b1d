@testable import CRC32C
import Testing

@Suite struct CRC32CTests {
    @Test func checkValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test func emptyInput() {
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func incrementalEqualsWhole() {
        var generator = SystemRandomNumberGenerator()
        for length in [1, 7, 8, 9, 63, 64, 65, 1000] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            for split in [0, 1, length / 2, length] {
                var crc = CRC32C()
                crc.update(bytes[..<split])
                crc.update(bytes[split...])
                #expect(crc.value == CRC32C.checksum(bytes))
                #expect(crc.value == bitwise(bytes))
            }
        }
    }

    @Test func instructionAndTablesAgree() {
        var generator = SystemRandomNumberGenerator()
        for length in [0, 1, 3, 8, 15, 16, 17, 100, 1024, 4099] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var tables = CRC32C()
            bytes.withUnsafeBytes { tables.updateWithTables($0) }
            #expect(tables.value == bitwise(bytes))
            // Where the CPU has the instruction, `update` uses it: both must give the same value.
            var chosen = CRC32C()
            bytes.withUnsafeBytes { chosen.update($0) }
            #expect(chosen.value == tables.value, "length \(length), hardware: \(CRC32C.usesHardware)")
        }
    }

    /// The textbook bit-at-a-time definition, as the model.
    private func bitwise(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return crc ^ 0xFFFF_FFFF
    }
}
