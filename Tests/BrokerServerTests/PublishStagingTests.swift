@testable import BrokerCore
@testable import ManagedLedger
@testable import BrokerServer
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// `StagedPublishes`: the entries of one socket read, encoded back to back and sliced.
@Suite struct PublishStagingTests {
    let topic = NonPersistentTopic(
        name: try! TopicName(parsing: "non-persistent://public/default/staging"), eventLoop: EmbeddedEventLoop(),
        logger: Logger(label: "test"))

    func stage(capacity: Int, bodies: [String]) -> StagedPublishes {
        var staged = StagedPublishes(
            topic: topic, buffer: ByteBufferAllocator().buffer(capacity: capacity), receivedAt: .now())
        for (index, body) in bodies.enumerated() {
            let attributes = EntryAttributes(numMessages: 1, publishTimeMs: Int64(index), producerName: "p")
            staged.add(attributes: attributes, producerID: 7, sequenceID: UInt64(index)) { $0.writeString(body) }
        }
        return staged
    }

    @Test(arguments: [64, 1 << 20])
    func slicesAreTheEncodedEntriesWhateverTheBufferSize(capacity: Int) throws {
        let bodies = ["a", "bb", String(repeating: "c", count: 300)]
        let entries = stage(capacity: capacity, bodies: bodies).entries(allocator: ByteBufferAllocator())
        #expect(entries.count == 3)
        for (index, entry) in entries.enumerated() {
            let expected = Entry.encode(
                attributes: EntryAttributes(numMessages: 1, publishTimeMs: Int64(index), producerName: "p"),
                bodyLength: bodies[index].utf8.count) { $0.writeString(bodies[index]) }
            #expect(entry == expected)
            #expect(String(buffer: try Entry.decode(entry).body) == bodies[index])
        }
    }

    @Test func aMostlyEmptyBufferIsNotPinnedByItsSlices() {
        // Sized for a whole read, then the read went on with another topic's SENDs.
        let entries = stage(capacity: 1 << 20, bodies: ["only"]).entries(allocator: ByteBufferAllocator())
        #expect(entries[0].storageCapacity < 4096)
    }
}
