/// The configuration keys each role reads from its `--config` file: Apache Pulsar's names
/// (`broker.conf`, `standalone.conf`) and, for storage nodes, BookKeeper's (`bookkeeper.conf`).
/// `conf/standalone.conf`, `conf/broker.conf` and `conf/bookkeeper.conf` document each with its
/// default; `ConfigKeysTests` keeps those files and these lists the same.
public enum ConfigKeys {
    /// Where a broker listens and how clients reach it (`standalone` and `broker`).
    public static let listener: Set<String> = [
        "bindAddress", "brokerServicePort", "webServicePort", "advertisedAddress", "advertisedListeners", "internalListenerName",
        "keepAliveIntervalSeconds", "brokerMaxConnections", "brokerMaxConnectionsPerIp",
        // Protocols served beside Pulsar's (Pulsar's protocol handlers): `kafka`, `amqp`.
        "messagingProtocols",
    ]

    /// How topics' managed ledgers roll (`standalone` and `broker`).
    public static let managedLedger: Set<String> = [
        "managedLedgerMaxEntriesPerLedger", "managedLedgerMaxSizePerLedgerMbytes",
        "managedLedgerMinLedgerRolloverTimeMinutes", "managedLedgerMaxLedgerRolloverTimeMinutes",
    ]

    /// Authentication, authorization and TLS (`standalone` and `broker`).
    public static let security: Set<String> = [
        "authenticationEnabled", "authenticationProviders", "authenticationRefreshCheckSeconds", "anonymousUserRole",
        "tokenSecretKey", "tokenPublicKey", "tokenPublicAlg", "tokenAuthClaim", "tokenAudienceClaim", "tokenAudience",
        "authorizationEnabled", "superUserRoles", "authenticateMetricsEndpoint",
        // TLS listeners.
        "brokerServicePortTls", "webServicePortTls", "tlsCertificateFilePath", "tlsKeyFilePath", "tlsTrustCertsFilePath",
        "tlsRequireTrustedClientCertOnConnect", "tlsProtocols", "tlsCiphers", "tlsCertRefreshCheckDurationSec",
    ]

    /// Tenant quotas and the schema registry's defaults (`standalone` and `broker`).
    public static let quotas: Set<String> = [
        "maxTopicsPerNamespace", "maxNamespacesPerTenant",
        "schemaCompatibilityStrategy", "isAllowAutoUpdateSchemaEnabled", "isSchemaValidationEnforced",
        "brokerServiceCompactionMonitorIntervalInSeconds", "brokerServiceCompactionThresholdInBytes",
        // Transactions: the coordinator (on by default in standalone).
        "transactionCoordinatorEnabled",
    ]

    /// Tiered storage: the offload driver and its keys, the size trigger and the deletion lag.
    public static let offload: Set<String> = [
        "managedLedgerOffloadDriver", "managedLedgerOffloadAutoTriggerSizeThresholdBytes", "managedLedgerOffloadDeletionLagMs",
        "managedLedgerOffloadMaxBlockSizeInBytes", "fileSystemURI",
        "s3ManagedLedgerOffloadBucket", "s3ManagedLedgerOffloadRegion", "s3ManagedLedgerOffloadServiceEndpoint",
        "s3ManagedLedgerOffloadMaxBlockSizeInBytes",
    ]

    /// Geo-replication: what replicators present to remote clusters, and how many messages each
    /// has in flight (`standalone` and `broker`).
    public static let geoReplication: Set<String> = [
        "brokerClientAuthenticationPlugin", "brokerClientAuthenticationParameters", "brokerClientTrustCertsFilePath",
        "tlsAllowInsecureConnection", "replicationProducerQueueSize",
    ]

    /// `magnetar standalone --config standalone.conf`.
    public static let standalone: Set<String> = listener.union(managedLedger).union(security).union(quotas).union(offload)
        .union(geoReplication).union(["clusterName"])

    /// `magnetar broker --config broker.conf`.
    public static let broker: Set<String> = listener.union(managedLedger).union(security).union(quotas).union(offload)
        .union(geoReplication).union([
        "clusterName", "metadataStoreUrl", "metadataStoreSessionTimeoutMillis",
        "managedLedgerDefaultEnsembleSize", "managedLedgerDefaultWriteQuorum", "managedLedgerDefaultAckQuorum",
        // BookKeeper's auditor keys: the elected broker runs the re-replication auditor.
        "lostBookieRecoveryDelay", "auditorPeriodicBookieCheckInterval",
        // What the broker presents to storage nodes with authentication on, and TLS to them.
        "brokerClientAuthenticationPlugin", "brokerClientAuthenticationParameters",
        "brokerClientTlsEnabled", "brokerClientTrustCertsFilePath", "tlsHostnameVerificationEnabled",
        "bookkeeperTLSTrustCertsFilePath", "bookkeeperTLSClientAuthentication", "bookkeeperTLSCertificateFilePath",
        "bookkeeperTLSKeyFilePath", "bookkeeperTLSKeyFileType", "bookkeeperTLSTrustCertTypes",
    ])

    /// `magnetar storage --config bookkeeper.conf`.
    public static let storage: Set<String> = [
        "bookiePort", "advertisedAddress", "ledgerDirectories", "journalDirectories", "journalDirectory",
        "metadataServiceUri", "prometheusStatsHttpPort",
        // Authentication of the brokers that connect (the broker's key names).
        "authenticationEnabled", "authenticationProviders", "tokenSecretKey", "tokenPublicKey", "tokenPublicAlg",
        "tokenAuthClaim", "tokenAudienceClaim", "tokenAudience", "superUserRoles",
        // TLS on the node's port (BookKeeper's keys).
        "tlsCertificatePath", "tlsKeyStore", "tlsKeyStoreType", "tlsTrustStore", "tlsTrustStoreType",
        "tlsClientAuthentication", "tlsEnabledProtocols", "tlsEnabledCipherSuites", "tlsCertFilesRefreshDurationSeconds",
    ]
}
