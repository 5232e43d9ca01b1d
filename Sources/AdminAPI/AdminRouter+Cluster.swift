import BrokerCore
import ManagedLedger
import Foundation
import Hummingbird

/// Cluster routes, in Pulsar's shapes: brokers, storage nodes ("bookies"), bundles and their
/// ownership, unloading, and the REST topic lookup.
extension AdminRouter {
    struct LookupData: Codable {
        var brokerUrl: String
        var httpUrl: String
        var nativeUrl: String
        var brokerUrlTls: String = ""
        var httpUrlTls: String = ""
    }

    struct BundlesData: Codable {
        var boundaries: [String]
        var numBundles: Int
    }

    struct OwnershipStatus: Codable {
        var broker_assignment = "shared"
        var is_controlled = false
        var is_active = true
    }

    struct BookieInfo: Codable { var bookieId: String }
    struct BookiesList: Codable { var bookies: [BookieInfo] }

    static func addClusterRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        router.get("/admin/v2/brokers/:cluster") { _, context in
            try checkCluster(context, broker)
            return try json(await broker.liveBrokers().map(\.brokerID))
        }
        router.get("/admin/v2/brokers/:cluster/:broker/ownedNamespaces") { _, context in
            try checkCluster(context, broker)
            let id = try parameter(context, "broker")
            var owned: [String: OwnershipStatus] = [:]
            for (bundle, owner) in try await broker.bundleOwnership() where owner.brokerID == id {
                owned[bundle] = OwnershipStatus()
            }
            return try json(owned)
        }
        router.get("/admin/v2/replication/status") { _, _ in
            guard let status = broker.replicationStatus else {
                throw AdminError(status: .notFound, reason: "This broker runs no re-replication: it is a standalone broker with local storage")
            }
            return try json(status)
        }
        router.get("/admin/v2/bookies/all") { _, _ in
            try json(BookiesList(bookies: try await broker.storageNodes().map { BookieInfo(bookieId: $0) }))
        }
        router.get("/admin/v2/namespaces/:tenant/:namespace/bundles") { _, context in
            let namespace = try namespace(context)
            _ = try await broker.namespaces.policies(namespace)
            let boundaries = NamespaceBundle.all(namespace: namespace).map { String($0.range.prefix(10)) }
                + [String(NamespaceBundle.all(namespace: namespace).last!.range.suffix(10))]
            return try json(BundlesData(boundaries: boundaries, numBundles: NamespaceBundle.defaultCount))
        }
        router.put("/admin/v2/namespaces/:tenant/:namespace/:bundle/unload") { _, context in
            let namespace = try namespace(context)
            _ = try await broker.namespaces.policies(namespace)
            let range = try parameter(context, "bundle")
            guard let bundle = NamespaceBundle.parse(namespace: namespace, range: range) else {
                throw AdminError(status: .badRequest, reason: "Invalid bundle range '\(range)' of namespace \(namespace): see GET .../bundles")
            }
            await broker.unloadBundle(bundle)
            return noContent()
        }
        router.put("/admin/v2/namespaces/:tenant/:namespace/unload") { _, context in
            let namespace = try namespace(context)
            _ = try await broker.namespaces.policies(namespace)
            for bundle in NamespaceBundle.all(namespace: namespace) { await broker.unloadBundle(bundle) }
            return noContent()
        }
        for domain in [TopicName.Domain.persistent, .nonPersistent] {
            router.put(RouterPath("/admin/v2/\(domain.rawValue)/:tenant/:namespace/:topic/unload")) { _, context in
                await broker.unloadTopic(try topicName(context, domain))
                return noContent()
            }
            router.get(RouterPath("/lookup/v2/topic/\(domain.rawValue)/:tenant/:namespace/:topic")) { _, context in
                let owner = try await broker.lookupOwner(try topicName(context, domain))
                return try json(LookupData(brokerUrl: owner.pulsarURL, httpUrl: owner.httpURL, nativeUrl: owner.pulsarURL))
            }
        }
    }

    static func checkCluster(_ context: AdminRequestContext, _ broker: BrokerService) throws {
        let cluster = try parameter(context, "cluster")
        guard cluster == broker.configuration.clusterName else {
            throw AdminError(status: .notFound, reason: "Cluster \(cluster) does not exist: this is cluster \(broker.configuration.clusterName)")
        }
    }
}
