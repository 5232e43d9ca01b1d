import ManagedLedger
import NIOCore

extension Topic {
    /// Applies the namespace policies: remembers the limits, expires messages past their TTL,
    /// enforces the backlog quota, rolls an aged ledger, and trims ledgers retention no longer keeps.
    /// Called on the event loop by the broker's policy task, about once a second.
    func enforce(_ policies: EffectivePolicies) {
        eventLoop.preconditionInEventLoop()
        self.policies = policies
        let nowNanos = NIODeadline.now().uptimeNanoseconds
        sampleRates(nowNanos: nowNanos)
        publishRateLimiter.configure(policies.publishRate, nowNanos: nowNanos)
        dispatchRateLimiter.configure(policies.dispatchRate, nowNanos: nowNanos)
        setDeduplication(enabled: policies.deduplicationEnabled)
        let nowMs = managedLedger.clock.nowMs()
        if policies.messageTTLSeconds > 0 {
            expireMessages(olderThanMs: nowMs.saturatingSubtract(policies.messageTTLSeconds.saturatingMultiply(1000)))
        }
        enforceBacklogQuota(policies, nowMs: nowMs)
        checkCompactionThreshold(policies, nowMs: nowMs)
        configureOffload(policies)
        managedLedger.deleteOffloadedLocalCopies()
        managedLedger.offloadIfOverThreshold()
        managedLedger.rollIfAged()
        updateReplicators(policies)
        let durable = subscriptions.values.filter(\.isDurable)
        let slowest = durable.map(\.cursor.markDelete).min()
        // Without a retention policy, what no subscription has consumed yet is kept.
        guard policies.retentionConfigured || !durable.isEmpty else { return }
        managedLedger.trim(
            slowest: durable.isEmpty ? nil : slowest,
            retentionTimeMs: policies.retentionTimeMinutes < 0 ? -1 : policies.retentionTimeMinutes.saturatingMultiply(60_000),
            retentionSizeBytes: policies.retentionSizeMB < 0 ? -1 : policies.retentionSizeMB.saturatingMultiply(1024 * 1024))
    }

    /// Where, when and for how long the managed ledger offloads: the namespace's settings, else the broker's.
    func configureOffload(_ policies: EffectivePolicies) {
        eventLoop.preconditionInEventLoop()
        managedLedger.offloadTarget = policies.offloadTarget ?? offloadDefaults.target
        managedLedger.offloadThresholdBytes = policies.offloadThreshold ?? offloadDefaults.thresholdBytes
        managedLedger.offloadDeletionLagMs = policies.offloadDeletionLagMs ?? offloadDefaults.deletionLagMs
    }

    /// Entries examined per subscription and pass when looking for expired messages.
    static let maxEntriesExaminedForExpiry = 10_000

    /// Acknowledges, on every durable subscription's behalf, the entries published before `cutoffMs`.
    public func expireMessages(olderThanMs cutoffMs: Int64) {
        eventLoop.preconditionInEventLoop()
        for subscription in subscriptions.values where subscription.isDurable {
            expire(subscription, olderThanMs: cutoffMs)
        }
    }

    func expire(_ subscription: Subscription, olderThanMs cutoffMs: Int64) {
        var last: Position?
        var position = managedLedger.next(after: subscription.cursor.markDelete)
        // Whole blocks the ledgers' indexes show as older go without a read; the block holding the
        // first entry at or after the cutoff is then looked at entry by entry.
        if let known = managedLedger.lastEntryKnownPublished(before: cutoffMs, after: subscription.cursor.markDelete) {
            last = known
            position = managedLedger.next(after: known)
        }
        var examined = 0
        scan: while let current = position, examined < Topic.maxEntriesExaminedForExpiry {
            switch managedLedger.entryAtHand(current) {
            case .entry(let entry):
                guard entry.attributes.publishTimeMs < cutoffMs else { break scan }
                last = current
            case .unreadable:
                break  // stops nothing: it goes with the expired entries after it
            case .fetching:
                break scan  // not at hand in a cluster: the next pass finds it fetched
            }
            position = managedLedger.next(after: current)
            examined += 1
        }
        if let last {
            subscription.acknowledgeCumulative(upTo: last)
            subscription.lastExpireTimestampMs = managedLedger.clock.nowMs()
        }
    }

    /// Feeds the rate meters the counters (stats' `msgRateIn`, `msgRateOut`, ...).
    func sampleRates(nowNanos: UInt64) {
        var outMessages: Int64 = 0
        var outBytes: Int64 = 0
        for (name, subscription) in subscriptions {
            var messages: Int64 = 0
            var bytes: Int64 = 0
            for consumer in subscription.consumers {
                messages += consumer.messagesOut
                bytes += consumer.bytesOut
                consumer.rateMeter.sample([consumer.messagesOut, consumer.bytesOut, consumer.messagesRedelivered], nowNanos: nowNanos)
            }
            outMessages += messages
            outBytes += bytes
            subscriptionRateMeters[name, default: RateMeter()].sample(
                [messages, bytes, subscription.messagesRedelivered], nowNanos: nowNanos)
        }
        for name in subscriptionRateMeters.keys where subscriptions[name] == nil { subscriptionRateMeters[name] = nil }
        rateMeter.sample([messagesIn, bytesIn, outMessages, outBytes], nowNanos: nowNanos)
        countProducerRun()
        let connected = Set(producers.values)
        for name in producerCounters.keys where !connected.contains(name) {
            producerCounters[name] = nil
            producerRateMeters[name] = nil
        }
        for (name, counters) in producerCounters {
            producerRateMeters[name, default: RateMeter()].sample([counters.messages, counters.bytes], nowNanos: nowNanos)
        }
    }

    private func enforceBacklogQuota(_ policies: EffectivePolicies, nowMs: Int64) {
        guard policies.backlogQuotaLimitBytes >= 0 || policies.backlogQuotaLimitTimeSeconds >= 0 else {
            backlogQuotaExceeded = false
            return
        }
        let over = subscriptions.values.filter { subscription in
            guard subscription.isDurable else { return false }
            let markDelete = subscription.cursor.markDelete
            if policies.backlogQuotaLimitBytes >= 0, managedLedger.sizeAfter(markDelete) > policies.backlogQuotaLimitBytes {
                return true
            }
            if policies.backlogQuotaLimitTimeSeconds >= 0, let oldest = managedLedger.next(after: markDelete),
               case .entry(let entry) = managedLedger.entryAtHand(oldest),
               nowMs.saturatingSubtract(entry.attributes.publishTimeMs) > policies.backlogQuotaLimitTimeSeconds.saturatingMultiply(1000)
            {
                return true
            }
            return false
        }
        switch policies.backlogQuotaPolicy {
        case .consumerBacklogEviction:
            backlogQuotaExceeded = false
            for subscription in over { evict(subscription, policies: policies, nowMs: nowMs) }
        case .producerException, .producerRequestHold:
            let exceeded = !over.isEmpty
            if exceeded, !backlogQuotaExceeded {
                logger.warning("topic.backlog-quota-exceeded", metadata: ["producers.closed": "\(producerSinks.count)"])
                for (key, sink) in producerSinks { sink.closeProducerByBroker(producerID: key.producerID) }
                producers.removeAll()
                producerSinks.removeAll()
            }
            backlogQuotaExceeded = exceeded
        }
    }

    /// Skips the oldest entries of a subscription until its backlog fits the quota.
    private func evict(_ subscription: Subscription, policies: EffectivePolicies, nowMs: Int64) {
        var last: Position?
        var position = managedLedger.next(after: subscription.cursor.markDelete)
        var examined = 0
        scan: while let current = position, examined < Topic.maxEntriesExaminedForExpiry {
            let sizeOK = policies.backlogQuotaLimitBytes < 0
                || managedLedger.sizeAfter(last ?? subscription.cursor.markDelete) <= policies.backlogQuotaLimitBytes
            var timeOK = true
            if policies.backlogQuotaLimitTimeSeconds >= 0 {
                switch managedLedger.entryAtHand(current) {
                case .entry(let entry):
                    timeOK = nowMs.saturatingSubtract(entry.attributes.publishTimeMs)
                        <= policies.backlogQuotaLimitTimeSeconds.saturatingMultiply(1000)
                case .unreadable:
                    break
                case .fetching:
                    if sizeOK { break scan }  // the next pass goes on once it is fetched
                }
            }
            if sizeOK && timeOK { break }
            last = current
            position = managedLedger.next(after: current)
            examined += 1
        }
        if let last {
            logger.info("subscription.backlog-evicted", metadata: ["subscription": "\(subscription.name)", "up-to": "\(last)"])
            subscription.acknowledgeCumulative(upTo: last)
        }
    }
}
