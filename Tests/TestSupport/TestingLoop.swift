import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded

extension NIOAsyncTestingEventLoop {
    /// Runs the loop until `future` completes — work done off the loop (metadata, tasks, the
    /// thread pool) hops back onto it at any time — then returns the future's value.
    public func settle<T: Sendable>(_ future: EventLoopFuture<T>, polls: Int = 20_000) async throws -> T {
        let done = NIOLockedValueBox(false)
        future.whenComplete { _ in done.withLockedValue { $0 = true } }
        for _ in 0..<polls where !done.withLockedValue({ $0 }) {
            await run()
            try await Task.sleep(for: .milliseconds(1))
        }
        await run()
        return try await future.get()
    }

    /// Runs `body` on the loop, then runs what it queued there.
    @discardableResult
    public func onLoop<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let result = try await executeInContext(body)
        await run()
        return result
    }
}
