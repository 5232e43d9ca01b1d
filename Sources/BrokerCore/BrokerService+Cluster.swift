import ManagedLedger
import Metadata
import Logging
import NIOCore

/// What LOOKUP answers for a topic.
public enum LookupAnswer: Sendable, Equatable {
    /// This broker serves the topic.
    case local
    /// Another broker owns the topic: connect there.
    case connect(BrokerIdentity)
    /// Nobody owns the topic yet; ask this broker (authoritatively), which will take it.
    case redirect(BrokerIdentity)
}

extension BrokerService {
    /// Where a client should go for `name`. Standalone: here. In a cluster: the owner of the
    /// topic's bundle; an unowned bundle is placed on the live broker owning the fewest bundles
    /// (this one when `authoritative`, i.e. the client was redirected here, or when it is the least loaded).
    public func lookup(_ name: TopicName, authoritative: Bool) async throws -> LookupAnswer {
        // Coordinator 0 (the coordinator-assign topic's partition 0): here in standalone, else its bundle's owner.
        if servesTransactionCoordinatorAssign(name) {
            guard cluster != nil else { return .local }
        } else {
            try await checkTopicAllowed(name)
        }
        guard let cluster else { return .local }
        let bundle = NamespaceBundle.bundle(for: name)
        if cluster.ownsHere(bundle) { return .local }
        if let owner = try await cluster.owner(of: bundle) {
            return owner == cluster.identity ? .local : .connect(owner)
        }
        if !authoritative, let candidate = try await cluster.leastLoadedBroker(), candidate != cluster.identity {
            return .redirect(candidate)
        }
        let owner = try await cluster.acquire(bundle)
        return owner == cluster.identity ? .local : .connect(owner)
    }

    /// The broker that serves (or should serve) `name`'s bundle, for protocols that answer with
    /// an address instead of a LOOKUP (Kafka's Metadata and FindCoordinator): nil when it is this
    /// one (always in standalone). An unowned bundle is placed as `lookup` places it. Unlike
    /// `lookup`, checks nothing about the topic: `name` may stand for something else that hashes
    /// into the namespace's bundles (a Kafka group).
    public func placement(of name: TopicName) async throws -> BrokerIdentity? {
        guard let cluster else { return nil }
        let bundle = NamespaceBundle.bundle(for: name)
        if cluster.ownsHere(bundle) { return nil }
        if let owner = try await cluster.owner(of: bundle) { return owner == cluster.identity ? nil : owner }
        if let candidate = try await cluster.leastLoadedBroker(), candidate != cluster.identity { return candidate }
        let owner = try await cluster.acquire(bundle)
        return owner == cluster.identity ? nil : owner
    }

    /// Whether this broker serves `name`'s bundle, taking it when nobody does (always true in
    /// standalone).
    public func servesHere(_ name: TopicName) async throws -> Bool {
        guard let cluster else { return true }
        let bundle = NamespaceBundle.bundle(for: name)
        if cluster.ownsHere(bundle) { return true }
        return try await cluster.acquire(bundle) == cluster.identity
    }

    /// Makes sure this broker owns the topic's bundle before serving it (taking the bundle if
    /// nobody owns it); fails with ServiceNotReady, which makes clients look the topic up again,
    /// when another broker owns it.
    func claimOwnership(of name: TopicName) async throws {
        guard let cluster else { return }
        let bundle = NamespaceBundle.bundle(for: name)
        if cluster.ownsHere(bundle) { return }
        let owner = try await cluster.acquire(bundle)
        guard owner == cluster.identity else {
            throw BrokerError(
                .serviceNotReady,
                "topic \(name) is served by broker \(owner.brokerID) (\(owner.pulsarURL)), not this one: look the topic up again")
        }
    }

    /// Registers this broker in the cluster (no-op in standalone).
    public func registerInCluster() async throws {
        try await cluster?.register()
    }

    /// Checks that this broker still owns its bundles (a hung process can lose its session) and
    /// unloads the topics of those it lost. The broker process runs it once a second, and at once
    /// when `watchOwnership` sees a change.
    public func verifyOwnership() async {
        guard let cluster else { return }
        for bundle in await cluster.verify() {
            await unloadTopics(in: bundle, flush: false)
        }
    }

    /// Until cancelled: reacts at once when an ownership key of ours changes (its lease expired
    /// while this process hung, or an admin moved it); the periodic check covers a broken watch.
    public func watchOwnership() async {
        guard let cluster else { return }
        while !Task.isCancelled {
            do {
                for await event in try await cluster.metadata.watch(prefix: MetadataKeys.ownershipPrefix) {
                    if Task.isCancelled { return }
                    guard cluster.ownsKey(event.key) else { continue }
                    await verifyOwnership()
                }
            } catch {
                logger.debug("cluster.ownership-watch-failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    /// Admin unload of a bundle: its topics are closed here (cursors flushed), then the bundle is
    /// released, so the next lookup places it anew.
    public func unloadBundle(_ bundle: NamespaceBundle) async {
        await unloadTopics(in: bundle, flush: true)
        await cluster?.release(bundle)
    }

    /// Admin unload of one topic (standalone too): closes its clients; the next use loads it again.
    public func unloadTopic(_ name: TopicName) async {
        guard let topic = loadedTopic(name) else { return }
        forgetTopic(name)
        try? await topic.eventLoop.flatSubmit { topic.unload(flush: true) }.get()
    }

    /// Unloads every loaded topic of `bundle`.
    func unloadTopics(in bundle: NamespaceBundle, flush: Bool) async {
        let topics = loadedTopics.filter { NamespaceBundle.bundle(for: $0.name) == bundle }
        for topic in topics {
            forgetTopic(topic.name)
            try? await topic.eventLoop.flatSubmit { topic.unload(flush: flush) }.get()
        }
        forgetNonPersistentTopics { NamespaceBundle.bundle(for: $0) == bundle }
        if !topics.isEmpty {
            logger.info("cluster.bundle-topics-unloaded", metadata: ["bundle": "\(bundle)", "topics": "\(topics.count)"])
        }
    }

    /// The topic's managed ledger failed (typically: another broker fenced its ledger after
    /// taking the bundle over). Stop serving it; clients reconnect through a new lookup.
    func managedLedgerFailed(_ topic: Topic) {
        logger.warning("topic.managed-ledger-failed", metadata: [
            "topic": "\(topic.name)", "error": "\(topic.managedLedger.failure.map { "\($0)" } ?? "?")",
        ])
        forgetTopic(topic.name)
        _ = topic.unload(flush: false)
        if let cluster {
            let bundle = NamespaceBundle.bundle(for: topic.name)
            topic.eventLoop.makeFutureWithTask {
                // Still ours? Then keep it (the next load recovers the ledger); if not, forget it.
                if let owner = try? await cluster.owner(of: bundle), owner != cluster.identity {
                    for lost in await cluster.verify() where lost == bundle {
                        await self.unloadTopics(in: bundle, flush: false)
                    }
                }
            }.whenComplete { _ in }
        }
    }
}

/// What the admin API reports about the cluster (Pulsar's shapes are built by the HTTP layer).
extension BrokerService {
    /// This broker's id (`host:httpPort`) as Pulsar names brokers.
    public var brokerID: String {
        cluster?.identity.brokerID ?? String(configuration.advertisedHTTPURL.dropFirst("http://".count))
    }

    /// Live brokers: in standalone, this one.
    public func liveBrokers() async throws -> [BrokerIdentity] {
        guard let cluster else {
            return [BrokerIdentity(
                brokerID: brokerID, pulsarURL: configuration.advertisedPulsarURL,
                httpURL: configuration.advertisedHTTPURL, instance: "standalone",
                pulsarTLSURL: configuration.advertisedPulsarTLSURL, httpsURL: configuration.advertisedHTTPSURL)]
        }
        return try await cluster.liveBrokers()
    }

    /// Registered storage nodes (`/storage-nodes/<host:port>`); empty in standalone (its storage is local).
    public func storageNodes() async throws -> [String] {
        guard cluster != nil else { return [] }
        let prefix = MetadataKeys.storageNodesPrefix
        return try await metadata.list(prefix: prefix).map { String($0.dropFirst(prefix.count)) }
    }

    /// Owned bundles of the whole cluster, `tenant/ns/range` → owner (standalone: every loaded
    /// topic's bundle is this broker's).
    public func bundleOwnership() async throws -> [(bundle: String, owner: BrokerIdentity)] {
        if let cluster { return try await cluster.allOwnership() }
        let me = try await liveBrokers()[0]
        let bundles = Set(loadedTopics.map { NamespaceBundle.bundle(for: $0.name) })
        return bundles.sorted().map { ("\($0)", me) }
    }

    /// The broker serving `name` (taking its bundle here if nobody owns it), for the REST lookup.
    public func lookupOwner(_ name: TopicName) async throws -> BrokerIdentity {
        switch try await lookup(name, authoritative: true) {
        case .local:
            let brokers = try await liveBrokers()
            let me = brokers.first { $0.brokerID == brokerID } ?? cluster?.identity ?? brokers[0]
            return me
        case .connect(let owner), .redirect(let owner): return owner
        }
    }
}

/// What the re-replication auditor of this broker reports (cluster brokers only).
public struct ReplicationStatusReport: Codable, Sendable, Equatable {
    /// Whether this broker's auditor is the leader (only the leader audits).
    public var isLeader: Bool
    public var auditsCompleted: Int
    public var ledgersAudited: Int
    public var entriesCopied: Int
    public var nodesReplaced: Int
    public var entriesUnrecoverable: Int
    /// Closed ledgers the last pass found missing a copy or placed on a node that is gone.
    public var underReplicatedLedgers: Int

    public init(
        isLeader: Bool, auditsCompleted: Int, ledgersAudited: Int, entriesCopied: Int, nodesReplaced: Int,
        entriesUnrecoverable: Int, underReplicatedLedgers: Int
    ) {
        self.isLeader = isLeader
        self.auditsCompleted = auditsCompleted
        self.ledgersAudited = ledgersAudited
        self.entriesCopied = entriesCopied
        self.nodesReplaced = nodesReplaced
        self.entriesUnrecoverable = entriesUnrecoverable
        self.underReplicatedLedgers = underReplicatedLedgers
    }
}

extension BrokerService {
    /// Where `replicationStatus` comes from (set by the process that runs an auditor).
    public func setReplicationStatusSource(_ source: @escaping @Sendable () -> ReplicationStatusReport) {
        replicationStatusSource.withLockedValue { $0 = source }
    }

    /// The auditor's report, nil when this broker runs none (standalone).
    public var replicationStatus: ReplicationStatusReport? {
        replicationStatusSource.withLockedValue { $0 }?()
    }
}
