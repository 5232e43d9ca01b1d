import ManagedLedger
import NIOCore

/// Answers the publisher of a `PublishBatch`: called once per entry (`index` into the batch), on the
/// topic's event loop, with where the entry was stored or why it was not. Duplicates (deduplication)
/// succeed with position `(-1, -1)`.
public protocol PublishReplier: AnyObject, Sendable {
    func published(index: Int, result: Result<Position, BrokerError>)
}

/// The entries a protocol edge hands to one topic at once: usually every SEND of one socket read.
/// The edge encodes them (`Entry.encode`) back to back into one buffer and passes slices of it, so
/// a burst of small messages costs one allocation instead of one per message, and one reply object
/// (`replier`) instead of a completion closure per message. A reference type because the managed
/// ledger holds it (as the entries' `AppendReceiver`) until the last entry is durable; used on the
/// topic's event loop only after `publish`.
public final class PublishBatch: @unchecked Sendable {
    public let entries: [ByteBuffer]
    public let attributes: [EntryAttributes]
    let replier: any PublishReplier
    /// The topic that appended the batch (set by `Topic.publish(_:)`): counts and deduplication
    /// state are updated as entries become durable.
    var topic: Topic?
    /// When the batch was handed to the topic (for the write-latency histogram).
    let createdNanos = NIODeadline.now().uptimeNanoseconds

    public init(entries: [ByteBuffer], attributes: [EntryAttributes], replier: any PublishReplier) {
        precondition(entries.count == attributes.count, "one attributes value per entry")
        self.entries = entries
        self.attributes = attributes
        self.replier = replier
    }

    public var count: Int { entries.count }
}

extension PublishBatch: AppendReceiver {
    package func appendCompleted(tag: Int, result: Result<Position, BrokerError>) {
        switch result {
        case .success(let position):
            topic?.entryPersisted(
                attributes[tag], bytes: entries[tag].readableBytes, at: position,
                latencyNanos: NIODeadline.now().uptimeNanoseconds &- createdNanos)
            replier.published(index: tag, result: result)
        case .failure:
            topic?.entryFailed(attributes[tag])
            replier.published(index: tag, result: result)
        }
    }
}

/// A `PublishReplier` around a closure, for publishing one entry at a time.
final class ClosurePublishReplier: PublishReplier, @unchecked Sendable {
    private let completion: (Result<Position, BrokerError>) -> Void

    init(_ completion: @escaping (Result<Position, BrokerError>) -> Void) {
        self.completion = completion
    }

    func published(index: Int, result: Result<Position, BrokerError>) {
        completion(result)
    }
}
