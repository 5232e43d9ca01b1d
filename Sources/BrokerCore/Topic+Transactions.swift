import Foundation
import ManagedLedger
import Metadata
import NIOCore

/// One transaction's acknowledgements on a subscription, as stored (`MetadataKeys.transactionAcks`).
struct TransactionAcks: Codable, Sendable {
    var transaction: TransactionID
    var positions: [Position]
}

/// The topic's side of transactions: its buffer (`TransactionBufferState`), the registration of a
/// transaction before its first entry, and the markers that end one. On the topic's loop.
extension Topic {
    /// Loads the buffer's state (before anything is dispatched).
    func loadTransactionBuffer() async throws {
        guard let stored = try await metadata.get(MetadataKeys.transactionBuffer(name.metadataPath)) else { return }
        let state = try JSONDecoder().decode(TransactionBufferState.self, from: Data(stored.value))
        try await eventLoop.submit {
            self.transactionBuffer = state
            self.transactionBuffer.trim(before: self.managedLedger.firstPosition)
            self.transactionStateChanged()
        }.get()
    }

    /// Publishes entries of `transaction` (their attributes name it): its first here registers it,
    /// durably, before anything of it is written, so that even after a crash its entries are held
    /// back until it ends. Later ones wait for that registration, in order.
    package func publish(_ batch: PublishBatch, transaction: TransactionID, producerName: String) {
        eventLoop.preconditionInEventLoop()
        @Sendable func fail(_ error: BrokerError) {
            for index in 0..<batch.count { batch.replier.published(index: index, result: .failure(error)) }
        }
        let afterRegistration: (BrokerError?) -> Void = { error in
            if let error { fail(error) } else { self.publish(batch) }
        }
        if transactionRegistrations[transaction] != nil {
            transactionRegistrations[transaction]!.append(afterRegistration)
            return
        }
        if transactionBuffer.ongoing(transaction) != nil { return publish(batch) }
        if let refusal = publishRefusal { return fail(refusal) }
        transactionRegistrations[transaction] = [afterRegistration]
        // The offset the log's end has (looked up when the open ledger's index does not know it yet).
        let endOffset: EventLoopFuture<Int64> = nextOffsetOnLoop().map { eventLoop.makeSucceededFuture($0) }
            ?? eventLoop.makeFutureWithTask { await self.offsetBounds()?.next ?? 0 }
        endOffset.flatMap { lookedUp -> EventLoopFuture<Void> in
            let end = self.managedLedger.positionBeforeNextEntry
            // The log's end: after the last durable entry (entries still in flight land after it too).
            let lowerBound = Position(ledgerID: end.ledgerID, entryID: end.entryID + 1)
            self.transactionBuffer.register(
                transaction, at: lowerBound, offset: self.nextOffsetOnLoop() ?? lookedUp, producerName: producerName)
            self.transactionStateChanged()
            return self.persistTransactionBuffer()
        }.whenComplete { result in
            let waiting = self.transactionRegistrations.removeValue(forKey: transaction) ?? []
            var failure: BrokerError?
            if case .failure(let error) = result {
                // Unrecorded, its entries would be visible after a crash: they are refused.
                self.logger.warning("transaction.register-failed", metadata: [
                    "topic": "\(self.name)", "transaction": "\(transaction)", "error": "\(error)",
                ])
                self.transactionBuffer = self.persistedTransactionBuffer
                self.transactionStateChanged()
                failure = BrokerError(.metadata, "cannot register transaction \(transaction) on \(self.name): \(error)")
            }
            for body in waiting { body(failure) }
        }
    }

    /// Ends `transaction` here: its commit or abort marker is appended, then the buffer forgets it
    /// (aborted, its entries are skipped from now on), durably. A transaction that wrote nothing
    /// here ends at once; ending one twice is answered by the first.
    package func endTransaction(_ transaction: TransactionID, committed: Bool) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        if let ending = endingTransactions[transaction] { return ending }
        if transactionRegistrations[transaction] != nil {
            let promise = eventLoop.makePromise(of: Void.self)
            transactionRegistrations[transaction]!.append { error in
                if let error { return promise.fail(error) }
                self.endTransaction(transaction, committed: committed).cascade(to: promise)
            }
            return promise.futureResult
        }
        guard let ongoing = transactionBuffer.ongoing(transaction) else { return eventLoop.makeSucceededVoidFuture() }
        let promise = eventLoop.makePromise(of: Void.self)
        endingTransactions[transaction] = promise.futureResult
        let now = managedLedger.clock.nowMs()
        var attributes = EntryAttributes(numMessages: 1, publishTimeMs: now, producerName: ongoing.producerName)
        attributes.isMarker = true
        attributes.transactionID = transaction
        let body = transactionMarkerCodec?.markerBody(
            transaction: transaction, committed: committed, producerName: ongoing.producerName, publishTimeMs: now)
            ?? ByteBuffer()
        let encoded = Entry.encode(attributes: attributes, bodyLength: body.readableBytes) { $0.writeImmutableBuffer(body) }
        publish(encoded: encoded, attributes: attributes) { result in
            switch result {
            case .failure(let error):
                self.endingTransactions[transaction] = nil
                promise.fail(error)
            case .success(let position):
                let offset = self.offsetOfAppended(position, numMessages: 1)
                self.transactionBuffer.ended(transaction, committed: committed, markerPosition: position, markerOffset: offset)
                self.transactionBuffer.trim(before: self.managedLedger.firstPosition)
                self.transactionStateChanged()
                self.logger.debug("transaction.ended-on-topic", metadata: [
                    "topic": "\(self.name)", "transaction": "\(transaction)", "committed": "\(committed)",
                ])
                self.transactionLimitMoved()
                self.persistTransactionBuffer().whenComplete { result in
                    self.endingTransactions[transaction] = nil
                    promise.completeWith(result)
                }
            }
        }
        return promise.futureResult
    }

    /// The read limit moved (a transaction ended): subscriptions and offset readers waiting at it go on.
    private func transactionLimitMoved() {
        for subscription in subscriptions.values where !subscription.consumers.isEmpty {
            subscription.scheduleDispatch()
        }
        if !appendWaiters.isEmpty {
            let waiters = appendWaiters.values
            appendWaiters.removeAll()
            for waiter in waiters { waiter() }
        }
    }

    /// Writes the buffer's state as it is now, after the writes before it (so they land in order).
    private func persistTransactionBuffer() -> EventLoopFuture<Void> {
        let state = transactionBuffer
        let metadata = self.metadata
        let key = MetadataKeys.transactionBuffer(name.metadataPath)
        let previous = transactionBufferWrites ?? eventLoop.makeSucceededVoidFuture()
        let write = previous.flatMapError { _ in self.eventLoop.makeSucceededVoidFuture() }.flatMap {
            self.eventLoop.makeFutureWithTask {
                _ = try await metadata.put(key, value: Array(try JSONEncoder().encode(state)), expectedVersion: nil)
            }
        }.map { self.persistedTransactionBuffer = state }
        transactionBufferWrites = write
        return write
    }

    // MARK: acknowledgements

    /// Acknowledges `positions` on a subscription in `transaction`, durably (the subscription's
    /// transactional acknowledgements are written before the future completes).
    package func acknowledge(subscription name: String, positions: [Position], transaction: TransactionID) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name] else {
            return eventLoop.makeFailedFuture(BrokerError(.subscriptionNotFound, "subscription '\(name)' does not exist on \(self.name)"))
        }
        do {
            try subscription.acknowledge(positions, transaction: transaction)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return persistTransactionAcks(of: subscription)
    }

    /// The transaction ended: its acknowledgements on the subscription apply (committed) or the
    /// entries are delivered again (aborted). A subscription gone meanwhile has nothing to do.
    package func endTransaction(_ transaction: TransactionID, onSubscription name: String, committed: Bool) -> EventLoopFuture<Void> {
        eventLoop.preconditionInEventLoop()
        guard let subscription = subscriptions[name], subscription.transactionAcks[transaction] != nil else {
            return eventLoop.makeSucceededVoidFuture()
        }
        subscription.endTransaction(transaction, committed: committed)
        // A committed one's acknowledgements must be in the cursor before they leave this record.
        let flushed = committed ? subscription.cursor.flush() : eventLoop.makeSucceededVoidFuture()
        return flushed.flatMap { self.persistTransactionAcks(of: subscription) }
    }

    /// Restores the subscriptions' transactional acknowledgements (after their cursors are loaded).
    func loadTransactionAcks() async throws {
        let prefix = MetadataKeys.transactionAcks(ofTopic: name.metadataPath)
        for key in try await metadata.list(prefix: prefix) {
            let subscription = String(key.dropFirst(prefix.count))
            guard let stored = try await metadata.get(key),
                  let acks = try? JSONDecoder().decode([TransactionAcks].self, from: Data(stored.value))
            else { continue }
            try await eventLoop.submit {
                self.subscriptions[subscription]?.restoreTransactionAcks(
                    Dictionary(acks.map { ($0.transaction, $0.positions) }, uniquingKeysWith: +))
            }.get()
        }
    }

    private func persistTransactionAcks(of subscription: Subscription) -> EventLoopFuture<Void> {
        let acks = subscription.transactionAcks.map { TransactionAcks(transaction: $0.key, positions: $0.value) }
        let metadata = self.metadata
        let key = MetadataKeys.transactionAcks(ofTopic: name.metadataPath, subscription: subscription.name)
        let previous = transactionAckWrites[subscription.name] ?? eventLoop.makeSucceededVoidFuture()
        let write = previous.flatMapError { _ in self.eventLoop.makeSucceededVoidFuture() }.flatMap {
            self.eventLoop.makeFutureWithTask {
                if acks.isEmpty {
                    try await metadata.delete(key, expectedVersion: nil)
                } else {
                    _ = try await metadata.put(key, value: Array(try JSONEncoder().encode(acks)), expectedVersion: nil)
                }
            }
        }
        transactionAckWrites[subscription.name] = write
        return write
    }

    // MARK: readers

    /// On the loop: the transaction state offset readers need (Kafka's read_committed fetches).
    package var transactionState: TransactionBufferState {
        eventLoop.preconditionInEventLoop()
        return transactionBuffer
    }

    /// From any thread: the transaction state as of the last change, nil when the topic has no
    /// ongoing or aborted transaction (a Kafka fetch reads it without hopping to the loop).
    package var publishedTransactionState: TransactionBufferState? {
        transactionStatePublished.withLockedValue { $0 }
    }

    /// The buffer changed: what subscriptions and other threads read of it follows.
    func transactionStateChanged() {
        transactionView.update(transactionBuffer)
        let state = transactionBuffer
        let empty = state.ongoing.isEmpty && state.aborted.isEmpty
        transactionStatePublished.withLockedValue { $0 = empty ? nil : state }
    }

    /// Whether the transaction `id` was aborted here (its entries are never delivered).
    package func isAbortedTransaction(_ id: TransactionID) -> Bool {
        eventLoop.preconditionInEventLoop()
        return transactionView.aborted.contains(id)
    }

    /// Deletes the buffer's record (the topic is being deleted).
    func deleteTransactionBuffer() async throws {
        try await metadata.delete(MetadataKeys.transactionBuffer(name.metadataPath), expectedVersion: nil)
    }
}
