import NIOConcurrencyHelpers

/// A rate of messages and bytes per second; a value <= 0 does not limit. From Pulsar's
/// `PublishRate` (`publishThrottlingRateInMsg`, `publishThrottlingRateInByte`) and `DispatchRate`
/// (`dispatchThrottlingRateInMsg`, `dispatchThrottlingRateInByte` per `ratePeriodInSecond`).
public struct RateLimit: Sendable, Equatable {
    public var messagesPerSecond: Double
    public var bytesPerSecond: Double

    public init(messagesPerSecond: Double, bytesPerSecond: Double) {
        self.messagesPerSecond = messagesPerSecond
        self.bytesPerSecond = bytesPerSecond
    }

    /// Whether either dimension limits anything.
    public var isLimiting: Bool { messagesPerSecond > 0 || bytesPerSecond > 0 }
}

/// Token buckets of messages and bytes, refilled at the limit's rate and holding at most one
/// second's worth. Traffic is never refused: `consume` takes what passed, possibly into debt, and
/// says how long the debt lasts, for the caller to stop reading (producers) or dispatching
/// (subscriptions) until then. Over time the rate converges to the limit. A pure value; time is
/// passed in as monotonic nanoseconds.
public struct TokenBucket: Sendable, Equatable {
    public private(set) var limit: RateLimit
    private var messageTokens: Double
    private var byteTokens: Double
    private var lastNanos: UInt64

    /// The longest single wait reported; a larger debt is waited off in several steps, each
    /// re-checked (so a lowered or removed limit takes effect).
    public static let maxWaitNanos: UInt64 = 5_000_000_000

    public init(limit: RateLimit, nowNanos: UInt64) {
        self.limit = limit
        messageTokens = max(limit.messagesPerSecond, 0)
        byteTokens = max(limit.bytesPerSecond, 0)
        lastNanos = nowNanos
    }

    private mutating func refill(_ nowNanos: UInt64) {
        guard nowNanos > lastNanos else { return }
        let seconds = Double(nowNanos - lastNanos) / 1e9
        lastNanos = nowNanos
        if limit.messagesPerSecond > 0 {
            messageTokens = min(limit.messagesPerSecond, messageTokens + seconds * limit.messagesPerSecond)
        }
        if limit.bytesPerSecond > 0 {
            byteTokens = min(limit.bytesPerSecond, byteTokens + seconds * limit.bytesPerSecond)
        }
    }

    /// Takes `messages` and `bytes`; returns how long to pause (nanoseconds) if that put a bucket
    /// into debt, nil otherwise.
    public mutating func consume(messages: Int, bytes: Int, nowNanos: UInt64) -> UInt64? {
        refill(nowNanos)
        if limit.messagesPerSecond > 0 { messageTokens -= Double(messages) }
        if limit.bytesPerSecond > 0 { byteTokens -= Double(bytes) }
        return wait(nowNanos)
    }

    /// How long the current debt lasts (nanoseconds), or nil if there is none.
    public mutating func wait(_ nowNanos: UInt64) -> UInt64? {
        refill(nowNanos)
        var seconds = 0.0
        if limit.messagesPerSecond > 0, messageTokens < 0 { seconds = max(seconds, -messageTokens / limit.messagesPerSecond) }
        if limit.bytesPerSecond > 0, byteTokens < 0 { seconds = max(seconds, -byteTokens / limit.bytesPerSecond) }
        guard seconds > 0 else { return nil }
        return min(UInt64(seconds * 1e9) + 1, Self.maxWaitNanos)
    }

    /// A new limit keeps the debt already run up (clamped to the new bucket's size).
    public mutating func update(_ newLimit: RateLimit, nowNanos: UInt64) {
        refill(nowNanos)
        limit = newLimit
        messageTokens = min(messageTokens, max(newLimit.messagesPerSecond, 0))
        byteTokens = min(byteTokens, max(newLimit.bytesPerSecond, 0))
    }
}

/// A topic's rate limit, shared by the connections of its producers (publish rate) or its
/// subscriptions (dispatch rate): a `TokenBucket` behind a lock. Unconfigured, every call is one
/// uncontended lock and returns nil.
public final class RateLimiter: Sendable {
    private let bucket = NIOLockedValueBox<TokenBucket?>(nil)

    public init() {}

    /// Sets the limit (nil or not limiting: off).
    public func configure(_ limit: RateLimit?, nowNanos: UInt64) {
        bucket.withLockedValue { current in
            guard let limit, limit.isLimiting else {
                current = nil
                return
            }
            if current == nil {
                current = TokenBucket(limit: limit, nowNanos: nowNanos)
            } else if current!.limit != limit {
                current!.update(limit, nowNanos: nowNanos)
            }
        }
    }

    public var limit: RateLimit? { bucket.withLockedValue { $0?.limit } }

    /// See `TokenBucket.consume`.
    public func consume(messages: Int, bytes: Int, nowNanos: UInt64) -> UInt64? {
        bucket.withLockedValue { $0?.consume(messages: messages, bytes: bytes, nowNanos: nowNanos) }
    }

    /// See `TokenBucket.wait`.
    public func wait(nowNanos: UInt64) -> UInt64? {
        bucket.withLockedValue { $0?.wait(nowNanos) }
    }
}
