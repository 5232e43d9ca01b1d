import BrokerCore
import Hummingbird
import ManagedLedger

/// Pulsar's permission paths: grants on a namespace and on a topic (`["produce","consume"]` bodies).
extension AdminRouter {
    static func addPermissionRoutes(_ router: Router<AdminRequestContext>, _ broker: BrokerService) {
        let namespaceBase = "/admin/v2/namespaces/:tenant/:namespace/permissions"
        router.get(RouterPath(namespaceBase)) { _, context in
            try json(await broker.namespaces.permissions(namespace(context)).mapValues { $0.sorted() })
        }
        router.post(RouterPath("\(namespaceBase)/:role")) { request, context in
            let actions = try await decodeBody(Set<AuthAction>.self, request)
            try await broker.namespaces.grantPermission(namespace(context), role: parameter(context, "role"), actions: actions)
            return noContent()
        }
        router.delete(RouterPath("\(namespaceBase)/:role")) { _, context in
            try await broker.namespaces.revokePermission(namespace(context), role: parameter(context, "role"))
            return noContent()
        }
        for domain in [TopicName.Domain.persistent, .nonPersistent] {
            let topicBase = "/admin/v2/\(domain.rawValue)/:tenant/:namespace/:topic/permissions"
            router.get(RouterPath(topicBase)) { _, context in
                try json(await broker.namespaces.permissions(topic: topicName(context, domain)).mapValues { $0.sorted() })
            }
            router.post(RouterPath("\(topicBase)/:role")) { request, context in
                let actions = try await decodeBody(Set<AuthAction>.self, request)
                try await broker.namespaces.grantPermission(
                    topic: topicName(context, domain), role: parameter(context, "role"), actions: actions)
                return noContent()
            }
            router.delete(RouterPath("\(topicBase)/:role")) { _, context in
                try await broker.namespaces.revokePermission(topic: topicName(context, domain), role: parameter(context, "role"))
                return noContent()
            }
        }
    }
}
