import NIOCore

/// The delays between reconnection attempts, as the Java and C++ clients compute them: start at
/// `initial`, double after every attempt up to `max`, and shave a random 0–9 % off each delay (never
/// below `initial`) so that many clients that lost the same broker do not come back in lock step.
/// `reset()` after a successful reconnection. A pure value, owned by one producer or consumer.
struct Backoff {
    static let defaultInitial: TimeAmount = .milliseconds(100)
    static let defaultMax: TimeAmount = .seconds(60)

    let initial: TimeAmount
    let max: TimeAmount
    private var next: TimeAmount

    init(initial: TimeAmount = Self.defaultInitial, max: TimeAmount = Self.defaultMax) {
        precondition(initial.nanoseconds > 0 && max >= initial, "backoff needs 0 < initial <= max")
        self.initial = initial
        self.max = max
        self.next = initial
    }

    /// The delay before the next attempt; `jitterPercent` (0...9) is drawn at random unless a test fixes it.
    mutating func nextDelay(jitterPercent: Int64 = Int64.random(in: 0...9)) -> TimeAmount {
        let current = next
        next = Swift.min(TimeAmount.nanoseconds(next.nanoseconds.multipliedReportingOverflow(by: 2).partialValue), max)
        if next.nanoseconds <= 0 { next = max }
        let shaved = TimeAmount.nanoseconds(current.nanoseconds - current.nanoseconds / 100 * jitterPercent)
        return Swift.max(initial, shaved)
    }

    mutating func reset() { next = initial }
}
