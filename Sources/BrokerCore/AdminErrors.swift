import ManagedLedger

/// The catalog of admin errors: every reason the admin operations give, in one place, worded like
/// Apache Pulsar's (scripts match on them) with the name concerned appended. The HTTP status comes
/// from the code (AdminAPI's `AdminErrorMapping`).
extension BrokerError {
    // 404
    static func tenantNotFound(_ tenant: String) -> BrokerError {
        BrokerError(.notFound, "Tenant does not exist: \(tenant)")
    }
    static func namespaceNotFound(_ namespace: String) -> BrokerError {
        BrokerError(.notFound, "Namespace does not exist: \(namespace)")
    }
    static func topicNotFound(_ topic: TopicName) -> BrokerError {
        BrokerError(.notFound, "Topic not found: \(topic)")
    }
    static func partitionedTopicNotFound(_ topic: TopicName) -> BrokerError {
        BrokerError(.notFound, "Partitioned topic does not exist: \(topic)")
    }
    static func subscriptionNotFound(_ subscription: String) -> BrokerError {
        BrokerError(.notFound, "Subscription not found: \(subscription)")
    }
    static func messageNotFound(_ what: String) -> BrokerError {
        BrokerError(.notFound, "Message not found: \(what)")
    }

    // 409
    static func tenantExists(_ tenant: String) -> BrokerError {
        BrokerError(.conflict, "Tenant already exists: \(tenant)")
    }
    static func namespaceExists(_ namespace: String) -> BrokerError {
        BrokerError(.conflict, "Namespace already exists: \(namespace)")
    }
    static func topicExists(_ topic: TopicName) -> BrokerError {
        BrokerError(.conflict, "This topic already exists: \(topic)")
    }
    static func partitionedTopicExists(_ topic: TopicName) -> BrokerError {
        BrokerError(.conflict, "Partitioned topic already exists: \(topic)")
    }
    static func subscriptionExists(_ subscription: String) -> BrokerError {
        BrokerError(.conflict, "Subscription already exists for topic: \(subscription)")
    }
    static func partitionsNotIncreased(current: Int, requested: Int) -> BrokerError {
        BrokerError(
            .conflict,
            "Number of partitions can only be increased: the topic has \(current), \(requested) were asked for")
    }
    static func concurrentModification(_ what: String) -> BrokerError {
        BrokerError(.conflict, "Concurrent modification of \(what): try again")
    }

    // 412
    static func tenantNotEmpty(_ tenant: String) -> BrokerError {
        BrokerError(.preconditionFailed, "The tenant still has active namespaces: \(tenant)")
    }
    static func namespaceNotEmpty(_ namespace: String) -> BrokerError {
        BrokerError(.preconditionFailed, "Cannot delete non empty namespace: \(namespace)")
    }
    static func topicHasActiveClients(_ topic: TopicName) -> BrokerError {
        BrokerError(.preconditionFailed, "Topic has active producers/subscriptions: \(topic) (use force to close consumers)")
    }
    static func topicHasProducers(_ topic: TopicName) -> BrokerError {
        BrokerError(.preconditionFailed, "Topic has active producers: \(topic) (close them first: the broker cannot close producers yet)")
    }
    static func subscriptionHasConsumers(_ subscription: String) -> BrokerError {
        BrokerError(.preconditionFailed, "Subscription has active connected consumers: \(subscription)")
    }

    // 400
    static func invalidName(_ what: String, _ value: String) -> BrokerError {
        BrokerError(.badRequest, "Invalid \(what) name: '\(value)' (use letters, digits, '-', '_', '.', ':', '=')")
    }
    static func invalidPolicy(_ message: String) -> BrokerError {
        BrokerError(.badRequest, "Invalid policy: \(message)")
    }
    static func invalidPartitions(_ partitions: Int) -> BrokerError {
        BrokerError(.badRequest, "Number of partitions must be between 1 and \(AdminLimits.maxPartitions), got \(partitions)")
    }
    static func invalidArgument(_ message: String) -> BrokerError {
        BrokerError(.badRequest, message)
    }
}
