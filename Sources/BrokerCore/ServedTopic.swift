import ManagedLedger
import NIOCore

/// What a producer's registration got: access now (with the topic epoch of an exclusive mode), or
/// a place in the WaitForExclusive queue.
public enum ProducerGrant: Sendable {
    case ready(name: String, topicEpoch: UInt64?)
    case waiting(name: String, ready: EventLoopFuture<UInt64>)
    /// Produce once the raised topic epoch is durable (the future gives it, or fails: no access).
    case persisting(name: String, ready: EventLoopFuture<UInt64>)
}

/// What a protocol edge needs from a topic, persistent or not. Every method must be called on
/// the topic's `eventLoop`.
public protocol ServedTopic: AnyObject, Sendable {
    var name: TopicName { get }
    /// `name.partitionIndex`, parsed once.
    var partitionIndex: Int32 { get }
    var eventLoop: any EventLoop { get }
    /// The namespace's publish rate for this topic; any thread may call it (connections do).
    var publishRateLimiter: RateLimiter { get }
    func addProducer(connectionID: UInt64, producerID: UInt64, name: String, sink: any ProducerSink) throws(BrokerError) -> String
    /// With an access mode: ready now, or (WaitForExclusive) once the others are gone.
    func addProducer(
        connectionID: UInt64, producerID: UInt64, name: String, sink: any ProducerSink,
        accessMode: ProducerAccessMode, topicEpoch: UInt64?
    ) throws(BrokerError) -> ProducerGrant
    func removeProducer(connectionID: UInt64, producerID: UInt64)
    /// What PRODUCER_SUCCESS reports as `last_sequence_id`: -1 unless deduplication is on.
    func lastPublishedSequenceID(producerName: String) -> Int64
    /// `encoded` is what `Entry.encode` produced; `completion` runs on the event loop, in publish order.
    func publish(encoded: ByteBuffer, attributes: EntryAttributes, completion: @escaping (Result<Position, BrokerError>) -> Void)
    /// Publishes many entries at once (the hot path); `batch.replier` hears about each, in order.
    func publish(_ batch: PublishBatch)
    func subscribe(_ request: SubscribeRequest, sink: any ConsumerSink) -> EventLoopFuture<Void>
    func createSubscriptionIfMissing(_ subscriptionName: String) -> EventLoopFuture<Void>
    @discardableResult
    func closeConsumer(subscription name: String, key: ConsumerKey) -> EventLoopFuture<Void>
    func flow(subscription name: String, key: ConsumerKey, permits: UInt32)
    func acknowledge(subscription name: String, positions: [Position])
    func acknowledgeBatchIndexes(subscription name: String, position: Position, ackSet: [Int64])
    func acknowledgeCumulative(subscription name: String, upTo position: Position)
    func redeliver(subscription name: String, key: ConsumerKey, positions: [Position])
    func unsubscribe(subscription name: String, key: ConsumerKey) -> EventLoopFuture<Void>
    /// The last entry (with its last batch index) and the subscription's mark-delete position; nil
    /// if the subscription is gone. Completes on the loop; may await a read of the last entry.
    func lastMessage(subscription name: String) -> EventLoopFuture<LastMessageInfo?>
    func seek(subscription name: String, to target: StartPosition) throws(BrokerError)
    /// Called off the loop (it awaits its reads, then resets on the loop).
    func seek(subscription name: String, publishTimeMs timestampMs: Int64) async throws
    /// Whether anything uses the topic: a producer, a consumer or stored messages (a consumer's
    /// schema registers only on a topic without any, as in Pulsar).
    var isInUse: Bool { get }
}

extension Topic: ServedTopic {
    /// Geo-replicators do not count: theirs are the remote's schemas, registered when they have one.
    public var isInUse: Bool {
        numberOfEntries > 0 || producers.values.contains { !Replication.isReplicatorCursor($0) }
            || subscriptions.contains { !Replication.isReplicatorCursor($0.key) && !$0.value.consumers.isEmpty }
    }
}
