import NIOCore
import NIOTestUtils
import TestSupport
import Testing
@testable import Replication

@Suite struct StorageProtocolTests {
    static func payload(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    static let messages: [StorageMessage] = [
        .request(requestID: 1, .addEntry(ledgerID: 7, entryID: 0, payload: payload("hello"))),
        .request(requestID: 2, .addEntry(ledgerID: -1, entryID: Int64.max, payload: ByteBuffer())),
        .request(requestID: 3, .readEntry(ledgerID: 7, entryID: 12)),
        .request(requestID: 4, .readLastAddConfirmed(ledgerID: 7)),
        .request(requestID: 5, .fence(ledgerID: 7)),
        .request(requestID: UInt64.max, .deleteLedger(ledgerID: 7)),
        .request(requestID: 7, .recoveryAddEntry(ledgerID: 7, entryID: 3, payload: payload("again"))),
        .request(requestID: 8, .listEntries(ledgerID: 7, fromEntryID: 2)),
        .request(requestID: 9, .authenticate(method: "token", data: payload("eyJhbGciOiJIUzI1NiJ9.e30.sig"))),
        .request(requestID: 10, .authenticate(method: "none", data: ByteBuffer())),
        .response(requestID: 9, StorageResponse(requestType: 8, status: .ok, body: payload("broker"))),
        .response(requestID: 10, StorageResponse(requestType: 8, status: .unauthenticated, body: payload("Failed to authenticate"))),
        .response(requestID: 7, StorageResponse(requestType: 6, status: .ok)),
        .response(requestID: 8, StorageResponse(requestType: 7, status: .ok, body: StorageResponse.entryList([2, 5, 9]))),
        .response(requestID: 1, StorageResponse(requestType: 1, status: .ok)),
        .response(requestID: 3, StorageResponse(requestType: 2, status: .ok, body: payload("entry"))),
        .response(requestID: 4, StorageResponse(requestType: 3, status: .ok, body: ByteBuffer(integer: Int64(41)))),
        .response(requestID: 5, StorageResponse(requestType: 4, status: .fenced, body: payload("fenced"))),
        .response(requestID: 6, StorageResponse(requestType: 5, status: .notFound)),
    ]

    @Test func roundTripsEveryMessage() throws {
        for message in Self.messages {
            var buffer = StorageMessageEncoder.encode(message)
            var decoder = StorageMessageDecoder()
            let decoded = try decoder.decode(buffer: &buffer)
            #expect(decoded == message)
            #expect(buffer.readableBytes == 0)
        }
        let lac = StorageResponse(requestType: 3, status: .ok, body: ByteBuffer(integer: Int64(41)))
        #expect(lac.lastAddConfirmed == 41)
        #expect(StorageResponse(requestType: 7, status: .ok, body: StorageResponse.entryList([2, 5])).entryIDs == [2, 5])
    }

    @Test func dripFedAndCoalescedBytes() throws {
        let pairs = Self.messages.map { (StorageMessageEncoder.encode($0), [$0]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { StorageMessageDecoder() }
    }

    @Test func oversizedLengthIsRefusedBeforeBuffering() {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(ReplicationLimits.maxFrameSizeBytes + 1))
        buffer.writeInteger(UInt8(1)) // only 5 bytes arrived: refused from the length alone
        var decoder = StorageMessageDecoder()
        #expect(throws: ReplicationError.self) { try decoder.decode(buffer: &buffer) }
    }

    @Test func malformedFramesThrow() {
        let frames: [[UInt8]] = [
            [0, 0, 0, 3, 1, 0, 0],                                   // too small
            [0, 0, 0, 9, 9, 0, 0, 0, 0, 0, 0, 0, 1],                 // unknown type
            [0, 0, 0, 10, 0x89, 0, 0, 0, 0, 0, 0, 0, 1, 0],          // answer to an unknown type
            [0, 0, 0, 9, 8, 0, 0, 0, 0, 0, 0, 0, 1],                 // authenticate without a method length
            [0, 0, 0, 11, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],          // authenticate with an empty method
            [0, 0, 0, 13, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 5, 0x74, 0x6f], // method longer than the frame
            [0, 0, 0, 11, 8, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff],    // method longer than the limit
            [0, 0, 0, 10, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0],             // read with a short ledger id
            [0, 0, 0, 10, 0x81, 0, 0, 0, 0, 0, 0, 0, 1, 99],         // unknown status
            [0, 0, 0, 14, 0x83, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], // LAC of 4 bytes
            [0, 0, 0, 22, 0x87, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1], // list of 2 ids with 1
        ]
        for bytes in frames {
            var buffer = ByteBuffer(bytes: bytes)
            var decoder = StorageMessageDecoder()
            #expect(throws: ReplicationError.self) { try decoder.decode(buffer: &buffer) }
        }
    }

    @Test func randomBytesNeverTrap() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2_000 {
            let count = Int.random(in: 0..<40, using: &rng)
            var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if count >= 4, Bool.random(using: &rng) { bytes[0] = 0; bytes[1] = 0; bytes[2] = 0; bytes[3] = UInt8(count - 4) }
            var buffer = ByteBuffer(bytes: bytes)
            var decoder = StorageMessageDecoder()
            _ = try? decoder.decode(buffer: &buffer)
        }
    }
}

