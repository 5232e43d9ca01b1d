@testable import AdminAPI
import BrokerCore
import Foundation
import HTTPTypes
import Testing

/// Pulsar's authorization rules as pure functions, and who may call which admin path.
@Suite struct AuthorizationTests {
    let topic = try! TopicName(parsing: "persistent://acme/orders/created")
    let tenant = TenantInfo(adminRoles: ["acme-admin"], allowedClusters: [])
    let supers: Set<String> = ["root"]

    func allows(_ role: String?, _ operation: TopicOperation, _ auth: AuthPolicies, topic: TopicName? = nil) -> Bool {
        Permissions.allows(role, operation, topic: topic ?? self.topic, tenant: tenant, auth: auth, superUsers: supers)
    }

    @Test func superUsersAndTenantAdminsMayDoEverything() {
        let none = AuthPolicies()
        #expect(allows("root", .produce, none))
        #expect(allows("acme-admin", .consume, none))
        #expect(!allows("bob", .lookup, none))
        #expect(!allows(nil, .produce, none))
        #expect(!Permissions.isTenantAdmin("bob", tenant: tenant, superUsers: supers))
    }

    @Test func namespaceAndTopicGrants() throws {
        var auth = AuthPolicies()
        auth.namespaceAuth["bob"] = [.produce]
        #expect(allows("bob", .produce, auth))
        #expect(!allows("bob", .consume, auth))
        #expect(allows("bob", .lookup, auth))
        auth.destinationAuth["persistent://acme/orders/created"] = ["carol": [.consume]]
        #expect(allows("carol", .consume, auth))
        #expect(!allows("carol", .produce, auth))
        #expect(!allows("carol", .consume, auth, topic: try TopicName(parsing: "persistent://acme/orders/other")))
        // A partition inherits its partitioned topic's grants.
        #expect(allows("carol", .consume, auth, topic: try TopicName(parsing: "persistent://acme/orders/created-partition-2")))
        #expect(Permissions.allowsNamespaceRead("bob", tenant: tenant, auth: auth, superUsers: supers))
        #expect(!Permissions.allowsNamespaceRead("carol", tenant: tenant, auth: auth, superUsers: supers))
    }

    @Test func adminPathsNeedTheRightRole() throws {
        func access(_ method: HTTPRequest.Method, _ path: String, metrics: Bool = false) -> AdminAccess {
            AdminAccess.required(method: method, path: path, authenticateMetrics: metrics)
        }
        #expect(access(.get, "/health") == .anonymous)
        #expect(access(.get, "/metrics") == .anonymous)
        #expect(access(.get, "/metrics", metrics: true) == .authenticated)
        #expect(access(.get, "/admin/v2/tenants") == .superUser)
        #expect(access(.put, "/admin/v2/tenants/acme") == .superUser)
        #expect(access(.get, "/admin/v2/tenants/acme") == .tenantAdmin(tenant: "acme"))
        #expect(access(.get, "/admin/v2/clusters") == .authenticated)
        #expect(access(.post, "/admin/v2/namespaces/acme/orders/permissions/bob") == .tenantAdmin(tenant: "acme"))
        #expect(access(.post, "/admin/v2/namespaces/acme/orders/publishRate") == .superUser)
        #expect(access(.delete, "/admin/v2/namespaces/acme/orders/maxTopicsPerNamespace") == .superUser)
        #expect(access(.get, "/admin/v2/namespaces/acme/orders/dispatchRate") == .tenantAdmin(tenant: "acme"))
        #expect(access(.get, "/admin/v2/persistent/acme/orders") == .namespaceRead(namespace: "acme/orders"))
        #expect(access(.get, "/admin/v2/persistent/acme/orders/created/stats") == .topic(topic, .lookup))
        #expect(access(.post, "/admin/v2/persistent/acme/orders/created/subscription/s/skip/3") == .topic(topic, .consume))
        #expect(access(.delete, "/admin/v2/persistent/acme/orders/created") == .tenantAdmin(tenant: "acme"))
        #expect(access(.get, "/lookup/v2/topic/persistent/acme/orders/created") == .topic(topic, .lookup))
        #expect(access(.get, "/admin/v2/brokers/standalone") == .superUser)
        #expect(access(.get, "/anything/else") == .superUser)
    }

    @Test func grantsRoundTripAsPulsarStoresThem() throws {
        var auth = AuthPolicies()
        auth.namespaceAuth["bob"] = [.produce, .consume]
        let data = try JSONEncoder().encode(auth)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"namespace_auth\""))
        #expect(text.contains("[\"consume\",\"produce\"]"))
        #expect(try JSONDecoder().decode(AuthPolicies.self, from: data) == auth)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Set<AuthAction>.self, from: Data("[\"fly\"]".utf8)) }
    }
}
