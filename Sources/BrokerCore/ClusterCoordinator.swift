import ManagedLedger
import Foundation
import Logging
import Metadata
import NIOConcurrencyHelpers

/// A broker as the others see it: recorded at `/brokers/<brokerID>` (ephemeral) and in the
/// ownership keys of the bundles it owns.
/// One of a broker's named listeners (`advertisedListeners=name:pulsar://…,name:pulsar+ssl://…`):
/// the addresses a client that asks for that listener name is given.
public struct AdvertisedListener: Codable, Sendable, Hashable {
    public var pulsarURL: String?
    public var pulsarTLSURL: String?

    public init(pulsarURL: String? = nil, pulsarTLSURL: String? = nil) {
        self.pulsarURL = pulsarURL
        self.pulsarTLSURL = pulsarTLSURL
    }
}

public struct BrokerIdentity: Codable, Sendable, Hashable {
    /// `host:httpPort`, as Pulsar names brokers.
    public var brokerID: String
    /// `pulsar://host:port`: what LOOKUP hands to clients (that ask for no listener).
    public var pulsarURL: String
    /// `pulsar+ssl://host:tlsPort` (`brokerServicePortTls`); nil: the broker has no TLS listener.
    public var pulsarTLSURL: String?
    /// `http://host:httpPort`: the admin API.
    public var httpURL: String
    /// `https://host:httpsPort` (`webServicePortTls`); nil: no HTTPS listener.
    public var httpsURL: String?
    /// Random per process start, so a restarted broker never mistakes its previous life's keys for its own.
    public var instance: String
    /// Pulsar's `advertisedListeners` by name; nil or empty: none configured.
    public var listeners: [String: AdvertisedListener]?
    /// What each protocol endpoint beside Pulsar's advertises, by its `messagingProtocols` name
    /// (Pulsar's `LocalBrokerData.protocols`): `kafka` → `PLAINTEXT://host:port`.
    public var protocols: [String: String]?

    public init(brokerID: String, pulsarURL: String, httpURL: String, instance: String, pulsarTLSURL: String? = nil, httpsURL: String? = nil) {
        self.brokerID = brokerID
        self.pulsarURL = pulsarURL
        self.httpURL = httpURL
        self.instance = instance
        self.pulsarTLSURL = pulsarTLSURL
        self.httpsURL = httpsURL
    }
}

/// Cluster membership and bundle ownership of one broker, kept in a session-capable metadata
/// store (etcd): the broker's registration and its ownership keys are ephemeral, so they vanish
/// when its session lease expires (the process died or hung) and another broker may take its
/// bundles. Thread-safe (a lock guards the owned set). Fencing, not these keys, is what keeps a
/// broker that lost ownership from writing: see `ManagedLedger.open`.
///
/// Layout: `/brokers/<brokerID>` → `BrokerIdentity` JSON; `/ownership/<tenant>/<ns>/<range>` →
/// the owner's `BrokerIdentity` JSON.
public final class ClusterCoordinator: Sendable {
    public static let brokersPrefix = MetadataKeys.brokersPrefix
    public static let ownershipPrefix = MetadataKeys.ownershipPrefix

    public let identity: BrokerIdentity
    let metadata: any SessionCapableMetadataStore
    private let logger: Logger
    /// Bundles this broker owns, with the version of their ownership key.
    private let owned = NIOLockedValueBox<[NamespaceBundle: Int64]>([:])

    public init(identity: BrokerIdentity, metadata: any SessionCapableMetadataStore, logger: Logger) {
        self.identity = identity
        self.metadata = metadata
        var logger = logger
        logger[metadataKey: "broker"] = "\(identity.brokerID)"
        self.logger = logger
    }

    static func ownershipKey(_ bundle: NamespaceBundle) -> String { MetadataKeys.ownership(namespace: bundle.namespace, range: bundle.range) }
    var registrationKey: String { MetadataKeys.broker(identity.brokerID) }

    /// Records that this broker serves a non-persistent topic (ephemeral: gone with the session).
    public func announceNonPersistentTopic(_ path: String) async throws {
        try await metadata.putEphemeral(MetadataKeys.nonPersistentTopic(path), value: Array(identity.brokerID.utf8), expectedVersion: nil)
    }

    /// This broker no longer serves these non-persistent topics.
    public func withdrawNonPersistentTopics(_ paths: [String]) async {
        for path in paths { try? await metadata.delete(MetadataKeys.nonPersistentTopic(path), expectedVersion: nil) }
    }

    /// Records this broker as live (again, if its session was lost).
    public func register() async throws {
        let value = Array(try JSONEncoder().encode(identity))
        try await metadata.putEphemeral(registrationKey, value: value, expectedVersion: nil)
        logger.info("cluster.registered", metadata: ["pulsar-url": "\(identity.pulsarURL)"])
    }

    /// Live brokers, sorted by id.
    public func liveBrokers() async throws -> [BrokerIdentity] {
        var brokers: [BrokerIdentity] = []
        for key in try await metadata.list(prefix: Self.brokersPrefix) {
            if let stored = try await metadata.get(key), let broker = try? JSONDecoder().decode(BrokerIdentity.self, from: Data(stored.value)) {
                brokers.append(broker)
            }
        }
        return brokers.sorted { $0.brokerID < $1.brokerID }
    }

    /// Every owned bundle in the cluster, with its owner.
    public func allOwnership() async throws -> [(bundle: String, owner: BrokerIdentity)] {
        var result: [(String, BrokerIdentity)] = []
        for key in try await metadata.list(prefix: Self.ownershipPrefix) {
            if let stored = try await metadata.get(key), let owner = try? JSONDecoder().decode(BrokerIdentity.self, from: Data(stored.value)) {
                result.append((String(key.dropFirst(Self.ownershipPrefix.count)), owner))
            }
        }
        return result
    }

    /// The owner of a bundle, nil if nobody owns it.
    public func owner(of bundle: NamespaceBundle) async throws -> BrokerIdentity? {
        guard let stored = try await metadata.get(Self.ownershipKey(bundle)) else { return nil }
        return try? JSONDecoder().decode(BrokerIdentity.self, from: Data(stored.value))
    }

    /// Whether this broker owns `bundle` (as far as it knows; `verify` keeps that true).
    public func ownsHere(_ bundle: NamespaceBundle) -> Bool {
        owned.withLockedValue { $0[bundle] != nil }
    }

    /// Whether `key` is the ownership key of a bundle this broker owns.
    func ownsKey(_ key: String) -> Bool {
        owned.withLockedValue { owned in owned.keys.contains { Self.ownershipKey($0) == key } }
    }

    public var ownedBundles: [NamespaceBundle] {
        owned.withLockedValue { $0.keys.sorted() }
    }

    /// Takes the bundle if nobody owns it; returns the owner afterwards (this broker or the winner).
    public func acquire(_ bundle: NamespaceBundle) async throws -> BrokerIdentity {
        if ownsHere(bundle) { return identity }
        let value = Array(try JSONEncoder().encode(identity))
        do {
            let version = try await metadata.putEphemeral(Self.ownershipKey(bundle), value: value, expectedVersion: -1)
            owned.withLockedValue { $0[bundle] = version }
            logger.info("cluster.bundle-acquired", metadata: ["bundle": "\(bundle)"])
            return identity
        } catch MetadataStoreError.badVersion {
            if let owner = try await owner(of: bundle) {
                if owner == identity {
                    owned.withLockedValue { $0[bundle] = 0 }
                }
                return owner
            }
            // Released in between: try once more.
            return try await acquire(bundle)
        }
    }

    /// The live broker owning the fewest bundles (ties: lowest id), to place an unowned bundle on.
    public func leastLoadedBroker() async throws -> BrokerIdentity? {
        let brokers = try await liveBrokers()
        guard !brokers.isEmpty else { return nil }
        var counts: [String: Int] = [:]
        for (_, owner) in try await allOwnership() { counts[owner.brokerID, default: 0] += 1 }
        return brokers.min { (counts[$0.brokerID] ?? 0, $0.brokerID) < (counts[$1.brokerID] ?? 0, $1.brokerID) }
    }

    /// Gives a bundle up (graceful unload): deletes its ownership key if it is still this broker's.
    public func release(_ bundle: NamespaceBundle) async {
        guard let version = owned.withLockedValue({ $0.removeValue(forKey: bundle) }) else { return }
        do {
            if let stored = try await metadata.get(Self.ownershipKey(bundle)),
               let owner = try? JSONDecoder().decode(BrokerIdentity.self, from: Data(stored.value)), owner == identity
            {
                try await metadata.delete(Self.ownershipKey(bundle), expectedVersion: stored.version)
            }
            logger.info("cluster.bundle-released", metadata: ["bundle": "\(bundle)", "version": "\(version)"])
        } catch {
            logger.warning("cluster.bundle-release-failed", metadata: ["bundle": "\(bundle)", "error": "\(error)"])
        }
    }

    /// Checks that every bundle this broker believes it owns is still recorded as its own (the
    /// session may have expired while the process hung) and that its registration exists; returns
    /// the bundles it lost (forgotten here: the caller unloads their topics). When the metadata
    /// store cannot be reached nothing is declared lost: fencing protects the data meanwhile.
    public func verify() async -> [NamespaceBundle] {
        var lost: [NamespaceBundle] = []
        do {
            if try await metadata.get(registrationKey) == nil {
                logger.warning("cluster.registration-lost")
                try await register()
            }
            for bundle in ownedBundles {
                let stored = try await metadata.get(Self.ownershipKey(bundle))
                let owner = stored.flatMap { try? JSONDecoder().decode(BrokerIdentity.self, from: Data($0.value)) }
                if owner != identity {
                    lost.append(bundle)
                    owned.withLockedValue { _ = $0.removeValue(forKey: bundle) }
                    logger.warning("cluster.bundle-lost", metadata: [
                        "bundle": "\(bundle)", "new-owner": "\(owner?.brokerID ?? "none")",
                    ])
                }
            }
        } catch {
            logger.warning("cluster.verify-failed", metadata: ["error": "\(error)"])
        }
        return lost
    }
}
