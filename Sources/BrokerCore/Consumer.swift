import ManagedLedger
import NIOCore

/// Where a consumer's messages go: implemented by each protocol edge (the Pulsar connection).
/// Called on the topic's event loop; implementations hand bytes to their channel (thread-safe).
public protocol ConsumerSink: AnyObject, Sendable {
    /// Sends one entry to the consumer `consumerID` of this sink.
    /// `ackSet` (batch entries partly acknowledged): bit i set = message i still to deliver.
    func sendMessage(
        consumerID: UInt64, position: Position, partitionIndex: Int32, redeliveryCount: UInt32, ackSet: [Int64]?,
        entry: Entry)
    /// Flushes what `sendMessage` wrote.
    func flush()
    /// Tells the client its consumer was closed by the broker (it will reconnect).
    func closeConsumerByBroker(consumerID: UInt64)
    /// Tells the consumer whether it is the active one (Failover).
    func activeConsumerChanged(consumerID: UInt64, isActive: Bool)
    /// Whether the connection takes more writes now; dispatch skips a consumer whose connection
    /// does not (its client stopped reading) until it does. Thread-safe.
    var isWritable: Bool { get }
}

extension ConsumerSink {
    public var isWritable: Bool { true }
}

/// Who is at the other end of a sink, for stats (`address` in Pulsar's consumer and publisher stats);
/// sinks that know say so.
public protocol ClientAddressed {
    /// The client's address as Pulsar prints it (`/127.0.0.1:54321`), or "".
    var clientAddress: String { get }
}

/// Where a producer's receipts go.
public protocol ProducerSink: AnyObject, Sendable {
    func closeProducerByBroker(producerID: UInt64)
    /// Whether the producer's connection is still open (a reconnecting client may take over the
    /// name of a producer whose connection is already gone).
    var isConnected: Bool { get }
}

/// Subscription types, with Pulsar's values.
public enum SubscriptionType: Int, Sendable, CustomStringConvertible {
    case exclusive = 0
    case shared = 1
    case failover = 2
    case keyShared = 3

    public var description: String {
        switch self {
        case .exclusive: "Exclusive"
        case .shared: "Shared"
        case .failover: "Failover"
        case .keyShared: "Key_Shared"
        }
    }
}

/// Where a new subscription starts.
public enum InitialPosition: Sendable {
    case latest
    case earliest
}

/// Identifies a consumer: the connection it lives on and the client's id for it (ids are per connection).
public struct ConsumerKey: Hashable, Sendable {
    public var connectionID: UInt64
    public var consumerID: UInt64
    public init(connectionID: UInt64, consumerID: UInt64) {
        self.connectionID = connectionID
        self.consumerID = consumerID
    }
}

/// One consumer attached to a subscription. Owned by the topic's event loop.
final class Consumer: @unchecked Sendable {
    let key: ConsumerKey
    let name: String
    let priorityLevel: Int32
    let sink: any ConsumerSink
    let keySharedPolicy: KeySharedPolicy?
    /// Messages the client is ready to receive (may go negative: a batch can overdraw).
    var permits: Int64 = 0
    /// Entries delivered and not yet acknowledged, with their message counts.
    var pending: [Position: Int32] = [:]
    /// Messages delivered and not yet acknowledged.
    var unackedMessages: Int64 = 0
    var messagesOut: Int64 = 0
    var bytesOut: Int64 = 0
    /// Messages put back for redelivery at this consumer's request.
    var messagesRedelivered: Int64 = 0
    /// Out and redelivered, per second (sampled by the policy pass).
    var rateMeter = RateMeter()
    /// When it subscribed (epoch ms) and from where.
    var connectedSinceMs: Int64 = 0
    var address = ""

    /// Whether dispatch may give this consumer an entry now: it has permits and its connection
    /// takes writes.
    var canReceive: Bool { permits > 0 && sink.isWritable }

    init(key: ConsumerKey, name: String, priorityLevel: Int32, sink: any ConsumerSink, keySharedPolicy: KeySharedPolicy? = nil) {
        self.key = key
        self.keySharedPolicy = keySharedPolicy
        self.name = name
        self.priorityLevel = priorityLevel
        self.sink = sink
    }
}

/// The address of a sink that knows it (`ClientAddressed`), else "".
func clientAddress(of sink: AnyObject) -> String { (sink as? any ClientAddressed)?.clientAddress ?? "" }
