import BrokerCore
import Foundation
import Hummingbird

/// Geo-replication routes, in Pulsar's shapes: the clusters this one knows
/// (`/admin/v2/clusters/{cluster}`), a namespace's replication clusters and a topic's own.
extension AdminRouter {
    static func addReplicationRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        router.get("/admin/v2/clusters") { _, _ in try json(await broker.clusters.list()) }
        router.get("/admin/v2/clusters/:cluster") { _, context in
            try json(await broker.clusters.get(parameter(context, "cluster")))
        }
        router.put("/admin/v2/clusters/:cluster") { request, context in
            let data = try await decodeBody(ClusterData.self, request)
            try await broker.clusters.create(parameter(context, "cluster"), data)
            return noContent()
        }
        router.post("/admin/v2/clusters/:cluster") { request, context in
            let data = try await decodeBody(ClusterData.self, request)
            try await broker.clusters.update(parameter(context, "cluster"), data)
            return noContent()
        }
        router.delete("/admin/v2/clusters/:cluster") { _, context in
            try await broker.clusters.delete(parameter(context, "cluster"), namespaces: broker.namespaces)
            return noContent()
        }

        let namespaceBase = "/admin/v2/namespaces/:tenant/:namespace"
        // Unset, a namespace is "replicated" in its own cluster only (as a Pulsar v2 namespace is).
        router.get(RouterPath("\(namespaceBase)/replication")) { _, context in
            let clusters = try await broker.namespaces.policies(namespace(context)).replicationClusters
            return try json(clusters.isEmpty ? [broker.configuration.clusterName] : clusters)
        }
        router.post(RouterPath("\(namespaceBase)/replication")) { request, context in
            let namespace = try namespace(context)
            let requested = try await decodeBody([String].self, request)
            let tenant = String(namespace.prefix { $0 != "/" })
            let clusters = try await broker.clusters.validateReplicationClusters(requested, tenant: tenant, namespaces: broker.namespaces)
            try await broker.namespaces.updatePolicies(namespace) { $0.replicationClusters = clusters }
            return noContent()
        }

        let topicBase = "/admin/v2/persistent/:tenant/:namespace/:topic"
        // `applied=true`: what applies (the namespace's when the topic sets none).
        router.get(RouterPath("\(topicBase)/replication")) { request, context in
            let name = try topicName(context, .persistent)
            let own = try await broker.topicReplicationClusters(name)
            if own == nil, request.uri.queryParameters.get("applied") == "true" {
                let clusters = try await broker.namespaces.policies(name.namespaceName).replicationClusters
                return try json(clusters.isEmpty ? [broker.configuration.clusterName] : clusters)
            }
            return try json(own)
        }
        router.post(RouterPath("\(topicBase)/replication")) { request, context in
            let clusters = try await decodeBody([String].self, request)
            try await broker.setTopicReplicationClusters(topicName(context, .persistent), clusters)
            return noContent()
        }
        router.delete(RouterPath("\(topicBase)/replication")) { _, context in
            try await broker.setTopicReplicationClusters(topicName(context, .persistent), nil)
            return noContent()
        }
    }
}
