import NIOCore
import PulsarProtocol

/// One received message. `payload` is a slice of the received frame (no copy). A pure value.
public struct Message: Sendable {
    public var id: MessageID
    public var payload: ByteBuffer
    public var producerName: String
    public var sequenceID: Int64
    /// Publish time set by the producer (ms since the epoch).
    public var publishTimeMs: UInt64
    /// Event time set by the application, if any (ms since the epoch).
    public var eventTimeMs: UInt64?
    public var partitionKey: String?
    public var properties: [String: String]
    /// How often the broker delivered this message before (0 on the first delivery).
    public var redeliveryCount: UInt32
    /// The writer's schema version (its producer's), nil if it had no schema.
    public var schemaVersion: Int64? = nil
}

/// How a subscription spreads messages over its consumers (notes §5.2).
public enum SubscriptionType: Sendable, Hashable {
    case exclusive, shared, failover, keyShared

    var wireValue: Pulsar_Proto_CommandSubscribe.SubType {
        switch self {
        case .exclusive: return .exclusive
        case .shared: return .shared
        case .failover: return .failover
        case .keyShared: return .keyShared
        }
    }
}

/// Where a new durable subscription starts.
public enum InitialPosition: Sendable, Hashable {
    case latest, earliest
}
