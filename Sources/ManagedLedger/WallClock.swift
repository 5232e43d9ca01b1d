import Foundation
import NIOConcurrencyHelpers

/// The wall clock, in milliseconds since 1970, that everything time-based in the core reads:
/// message TTL and backlog age, delayed delivery, ledger rollover by age, expire-messages. Injected
/// (`ManagedLedgerConfiguration.clock`), so a test moves time with a `ManualWallClock` instead of
/// sleeping. Publish times come from clients; this clock is what they are compared with.
public struct WallClock: Sendable {
    private let read: @Sendable () -> Int64

    public init(nowMs: @escaping @Sendable () -> Int64) {
        read = nowMs
    }

    public func nowMs() -> Int64 { read() }

    /// The system's clock.
    public static let system = WallClock { Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)) }
}

/// A wall clock that only moves when told to. Thread-safe.
public final class ManualWallClock: Sendable {
    private let now: NIOLockedValueBox<Int64>

    public init(nowMs: Int64) {
        now = NIOLockedValueBox(nowMs)
    }

    public var nowMs: Int64 { now.withLockedValue { $0 } }

    public func advance(byMs milliseconds: Int64) {
        now.withLockedValue { $0 += milliseconds }
    }

    public var clock: WallClock {
        WallClock { [now] in now.withLockedValue { $0 } }
    }
}
