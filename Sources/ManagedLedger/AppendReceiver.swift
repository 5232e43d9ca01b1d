import NIOCore

/// Hears how each append of a managed ledger ended: one call per entry, on the topic's event loop.
/// `tag` is what the appender passed with the entry (an index into its own bookkeeping), so one
/// receiver object serves many entries and no closure is allocated per entry.
package protocol AppendReceiver: AnyObject {
    func appendCompleted(tag: Int, result: Result<Position, BrokerError>)
}

/// An `AppendReceiver` around a closure, for the callers that append one entry at a time.
package final class ClosureAppendReceiver: AppendReceiver {
    private let completion: (Result<Position, BrokerError>) -> Void

    package init(_ completion: @escaping (Result<Position, BrokerError>) -> Void) {
        self.completion = completion
    }

    package func appendCompleted(tag: Int, result: Result<Position, BrokerError>) {
        completion(result)
    }
}
