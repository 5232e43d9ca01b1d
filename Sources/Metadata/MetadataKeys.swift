import Foundation

/// Every key the system keeps in its metadata store, in one place: the layout of
/// `docs/ARCHITECTURE.md` ("Metadata layout") as code. Nothing else builds a key string.
///
/// A topic's `path` is `TopicName.metadataPath`: `<tenant>/<ns>/<domain>/<topic>`; a namespace is
/// `<tenant>/<ns>`.
public enum MetadataKeys {
    // MARK: tenants and namespaces

    public static let tenantsPrefix = "/tenants/"
    /// `TenantInfo`.
    public static func tenant(_ tenant: String) -> String { tenantsPrefix + tenant }

    public static let namespacesPrefix = "/namespaces/"
    /// `NamespacePolicies`.
    public static func namespace(_ namespace: String) -> String { namespacesPrefix + namespace }
    /// Every namespace of a tenant.
    public static func namespaces(ofTenant tenant: String) -> String { namespacesPrefix + tenant + "/" }

    /// `ClusterData` of each cluster this one knows (geo-replication), by name.
    public static let clustersPrefix = "/clusters/"

    // MARK: topics

    /// `{"partitions": N}` of a partitioned topic.
    public static func partitionedTopic(_ path: String) -> String { "/partitioned-topics/" + path }
    /// Every partitioned topic of a namespace, or of one domain of it.
    public static func partitionedTopics(inNamespace namespace: String, domain: String? = nil) -> String {
        "/partitioned-topics/" + namespace + "/" + (domain.map { $0 + "/" } ?? "")
    }

    /// `ManagedLedgerRecord`: its presence is the persistent topic's existence.
    public static func managedLedger(_ path: String) -> String { "/managed-ledgers/" + path }
    /// `/managed-ledger-indexes/<path>/<ledgerID>`: the message index of one closed ledger of the
    /// managed ledger whose record is at `key` (`managedLedger(path)`).
    public static func messageIndex(ofManagedLedger key: String, ledgerID: Int64) -> String {
        "/managed-ledger-indexes/" + key.dropFirst("/managed-ledgers/".count) + "/" + String(ledgerID)
    }
    /// Every managed ledger of a namespace, or of one domain of it.
    public static func managedLedgers(inNamespace namespace: String, domain: String? = nil) -> String {
        "/managed-ledgers/" + namespace + "/" + (domain.map { $0 + "/" } ?? "")
    }

    /// Every durable subscription's `CursorRecord` of a topic.
    public static func cursors(ofTopic path: String) -> String { "/cursors/" + path + "/" }
    public static func cursor(ofTopic path: String, subscription: String) -> String { cursors(ofTopic: path) + subscription }

    /// A non-persistent topic served by a cluster broker (ephemeral; the broker's `BrokerIdentity`
    /// id as its value), so every broker can list them (GET_TOPICS_OF_NAMESPACE, regex subscriptions).
    public static func nonPersistentTopic(_ path: String) -> String { "/non-persistent-topics/" + path }
    public static func nonPersistentTopics(inNamespace namespace: String) -> String {
        "/non-persistent-topics/" + namespace + "/non-persistent/"
    }

    /// A topic's own policies (`TopicPolicyRecord`: its replication clusters).
    public static func topicPolicies(_ path: String) -> String { "/topic-policies/" + path }

    /// A topic's producer epoch (decimal text), raised by each exclusive producer that gets the topic.
    public static func topicEpoch(_ path: String) -> String { "/topic-epochs/" + path }

    /// A topic's `CompactionRecord`: its compacted ledger and horizon.
    public static func compactedTopic(_ path: String) -> String { "/compaction/" + path }

    /// The counter every ledger id (topic and cursor ledgers) is taken from.
    public static let ledgerIDCounter = "/counters/ledger-id"
    /// The last Kafka producer id handed out (InitProducerId), shared by the brokers of a cluster.
    public static let kafkaProducerIDCounter = "/counters/kafka-producer-id"
    /// `/kafka/group-offsets/<group>`: a Kafka consumer group's committed offsets (JSON), the group
    /// id percent-encoded so that any id is one key.
    public static let kafkaGroupOffsetsPrefix = "/kafka/group-offsets/"
    public static func kafkaGroupOffsets(_ groupID: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        allowed.insert(charactersIn: "-._")
        return kafkaGroupOffsetsPrefix + (groupID.addingPercentEncoding(withAllowedCharacters: allowed) ?? groupID)
    }

    /// `/kafka/transactional-ids/<id>`: a Kafka `transactional.id`'s producer id, epoch and current
    /// transaction (JSON), the id percent-encoded.
    public static let kafkaTransactionalIDsPrefix = "/kafka/transactional-ids/"
    public static func kafkaTransactionalID(_ transactionalID: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        allowed.insert(charactersIn: "-._")
        return kafkaTransactionalIDsPrefix + (transactionalID.addingPercentEncoding(withAllowedCharacters: allowed) ?? transactionalID)
    }

    // MARK: transactions

    /// A topic's transaction buffer (`TransactionBufferState`, JSON): its ongoing and aborted transactions.
    public static func transactionBuffer(_ path: String) -> String { "/transaction-buffers/" + path }
    /// `/transaction-acks/<topic>/<subscription>`: a subscription's acknowledgements in transactions not yet ended.
    public static func transactionAcks(ofTopic path: String) -> String { "/transaction-acks/" + path + "/" }
    public static func transactionAcks(ofTopic path: String, subscription: String) -> String {
        transactionAcks(ofTopic: path) + subscription
    }
    /// `/transactions/<coordinator>/<sequence>`: one transaction's coordinator record (JSON) until it ends.
    public static func transactions(ofCoordinator coordinator: UInt64) -> String { "/transactions/\(coordinator)/" }
    public static func transaction(coordinator: UInt64, sequence: UInt64) -> String {
        transactions(ofCoordinator: coordinator) + String(sequence)
    }
    /// `/transaction-offsets/<coordinator>/<sequence>/<group>`: a group's offsets committed in a
    /// transaction on a broker other than the coordinator's (Kafka's TxnOffsetCommit reaches the
    /// group's broker), applied by the coordinator when the transaction commits.
    public static func transactionOffsetCommits(coordinator: UInt64, sequence: UInt64) -> String {
        "/transaction-offsets/\(coordinator)/\(sequence)/"
    }
    public static func transactionOffsetCommits(coordinator: UInt64, sequence: UInt64, group: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)...Unicode.Scalar(127)))
        allowed.insert(charactersIn: "-._")
        return transactionOffsetCommits(coordinator: coordinator, sequence: sequence) + (group.addingPercentEncoding(withAllowedCharacters: allowed) ?? group)
    }
    /// The last transaction sequence a coordinator handed out.
    public static func transactionCounter(coordinator: UInt64) -> String { "/counters/transaction-id/\(coordinator)" }

    // MARK: schemas

    /// `SchemaRecord`: every version of one schema id (`tenant/ns/topic`, `TopicName.schemaName`).
    public static func schema(_ schemaName: String) -> String { "/schemas/" + schemaName }

    // MARK: the cluster

    /// `/brokers/<host:httpPort>`: each live broker's `BrokerIdentity` (ephemeral).
    public static let brokersPrefix = "/brokers/"
    public static func broker(_ brokerID: String) -> String { brokersPrefix + brokerID }

    /// `/ownership/<ns>/<range>`: the owner of a namespace bundle (ephemeral).
    public static let ownershipPrefix = "/ownership/"
    public static func ownership(namespace: String, range: String) -> String { ownershipPrefix + namespace + "/" + range }

    /// `/ledgers/<ledgerID>`: one `LedgerMetadata` record per replicated ledger.
    public static let ledgersPrefix = "/ledgers/"
    public static func ledger(_ ledgerID: Int64) -> String { ledgersPrefix + String(ledgerID) }
    /// The ledger id of a `/ledgers/<id>` key, nil for any other key.
    public static func ledgerID(fromKey key: String) -> Int64? {
        guard key.hasPrefix(ledgersPrefix) else { return nil }
        return Int64(key.dropFirst(ledgersPrefix.count))
    }

    /// `/storage-nodes/<host:port>`: one ephemeral key per live storage node.
    public static let storageNodesPrefix = "/storage-nodes/"
    public static func storageNode(_ address: String) -> String { storageNodesPrefix + address }

    /// Held (ephemeral) by the broker that runs the re-replication auditor; value: its name.
    public static let auditorLeader = "/replication/auditor"
}
