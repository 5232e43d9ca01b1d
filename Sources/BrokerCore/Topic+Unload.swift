import ManagedLedger
import NIOCore

extension Topic {
    /// Stops serving the topic here: every producer and consumer is closed by the broker (their
    /// clients look the topic up again and reconnect, to whichever broker owns it then), and the
    /// cursors are flushed. After this the topic refuses producers, consumers and publishes.
    /// `flush`: false when the topic was taken over (its ledgers are fenced: nothing more can be written).
    func unload(flush: Bool) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        guard !isUnloaded else { return eventLoop.makeSucceededVoidFuture() }
        isUnloaded = true
        for (key, sink) in producerSinks {
            sink.closeProducerByBroker(producerID: key.producerID)
        }
        producers.removeAll()
        producerSinks.removeAll()
        stopReplicators()
        for subscription in subscriptions.values { closeConsumers(of: subscription) }
        logger.info("topic.unloaded", metadata: ["flush": "\(flush)"])
        guard flush else { return eventLoop.makeSucceededVoidFuture() }
        return flushCursors()
    }

    /// The error clients get from a topic that was unloaded under them.
    var unloadedError: BrokerError {
        BrokerError(.serviceNotReady, "topic \(name) was unloaded from this broker: look it up again")
    }
}
