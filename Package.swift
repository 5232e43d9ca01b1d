// swift-tools-version: 6.0
import PackageDescription

// The per-message path (frame decode, append, dispatch; the client's send and receive) lives in
// these modules. Release builds drop the runtime exclusivity checks there (`swift_beginAccess` on every class property access:
// ~11 % of the broker's CPU when publishing, profile in BENCHMARKS.md); debug builds, which run the
// test suites, keep them, so an overlapping access still traps in tests. (Unsafe flags keep this
// package from being used as another package's dependency; it has no library product yet.)
let hotPathSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked", "-cross-module-optimization"], .when(configuration: .release))]

let package = Package(
    name: "magnetar",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "magnetar", targets: ["magnetar"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "4.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // Lowest layer: checksums shared by the wire format and the on-disk format.
        // The CPU's CRC-32C instruction (SSE4.2), behind a runtime check; CRC32C falls back to tables.
        .target(name: "CCRC32CHardware"),
        .target(name: "CRC32C", dependencies: ["CCRC32CHardware"]),
        // Wire format only: frames, our .proto + generated code, limits.
        .target(name: "PulsarProtocol", dependencies: [
            "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ], exclude: ["Proto"], swiftSettings: hotPathSettings),
        // Journal, entry log, index behind the LedgerStore protocol; the broker-side LedgerClient
        // protocol and its local implementation (reads on NIO's thread pool, hence NIOPosix).
        .target(name: "LedgerStorage", dependencies: [
            "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPathSettings),
        // Storage-node protocol, client and server; BookKeeper's quorum write as a pure state machine;
        // `ReplicatedLedgerStore` with its ledger metadata and node registry in a `MetadataStore`;
        // the re-replication auditor. Knows nothing of brokers.
        .target(name: "Replication", dependencies: [
            "LedgerStorage", "Metadata",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // MetadataStore protocol, its embedded (on-disk) implementation, and the etcd client
        // (HTTP/1.1 to etcd's JSON gateway, hence NIOPosix + NIOHTTP1).
        .target(name: "Metadata", dependencies: [
            "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The managed ledger: a topic's ledgers, cursors, the tail cache, positions, range sets,
        // entries, per-topic message offsets and the time index. Protocol-neutral, below BrokerCore.
        .target(name: "ManagedLedger", dependencies: [
            "LedgerStorage", "Metadata", "TieredStorage",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPathSettings),
        // Topics, subscriptions, dispatchers, policies, the cluster's ownership. Protocol-neutral.
        .target(name: "BrokerCore", dependencies: [
            "ManagedLedger", "LedgerStorage", "Metadata", "CRC32C", "Schemas", "TieredStorage",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPathSettings),
        // Hummingbird routes for /admin/v2/..., /metrics and /health.
        .target(name: "AdminAPI", dependencies: [
            "BrokerCore", "ManagedLedger", "PulsarProtocol", "Authentication", "Schemas",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // Kafka's wire format: framing, primitive types, request headers and the message codecs
        // (from Kafka's own message definitions). Pure values over NIOCore.
        .target(name: "KafkaProtocol", dependencies: [
            "CRC32C", "PayloadCompression",
            .product(name: "NIOCore", package: "swift-nio"),
        ], swiftSettings: hotPathSettings),
        // The Kafka endpoint (`messagingProtocols=kafka`, KoP's keys): a protocol plug-in over the
        // broker's core, beside Pulsar's.
        .target(name: "KafkaServer", dependencies: [
            "KafkaProtocol", "BrokerCore", "BrokerServer", "ManagedLedger", "Metadata", "PulsarProtocol", "PayloadCompression", "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: hotPathSettings),
        // NIO bootstrap and the Pulsar connection handler: the only I/O.
        .target(name: "BrokerServer", dependencies: [
            "PulsarProtocol", "BrokerCore", "Schemas", "ManagedLedger", "LedgerStorage", "Metadata", "AdminAPI", "Authentication",
            "PayloadCompression", "CRC32C", "GeoReplication",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
        ], swiftSettings: hotPathSettings),
        // Debian's compression libraries as system-library modules (module.modulemap + shim.h each), for
        // the client's message compression (Pulsar's CompressionType: LZ4, ZLIB, ZSTD, SNAPPY).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CSnappy", pkgConfig: "snappy", providers: [.apt(["libsnappy-dev"])]),
        // Our own Swift client for the Pulsar protocol (perf tool, `magnetar client`, tests). Beside
        // BrokerServer, not above it; the compression modules are its only C dependencies.
        // Payload compression the way Pulsar's clients do it (LZ4 block, zlib, zstd, raw Snappy) over
        // Debian's libraries: the Swift client, and the broker where it must read a batch (compaction).
        .target(name: "PayloadCompression", dependencies: [
            "CZstd", "CLZ4", "CZlib", "CSnappy", .product(name: "NIOCore", package: "swift-nio"),
        ], swiftSettings: hotPathSettings),
        .target(name: "MagnetarClient", dependencies: [
            "PulsarProtocol", "CRC32C", "PayloadCompression",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPathSettings),
        // Who a client is: Pulsar's token authentication (JWTs verified with jwt-kit; the keys as
        // Pulsar's `tokenSecretKey` / `tokenPublicKey` give them), token and key creation for
        // `magnetar tokens`. Protocol-neutral: the Pulsar endpoint, the admin API and later
        // endpoints ask it the same question.
        .target(name: "Authentication", dependencies: [
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "_CryptoExtras", package: "swift-crypto"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        // Pulsar-style `--config` files (Java properties with Pulsar's and BookKeeper's key names).
        .target(name: "ServerConfig"),
        // Tiered storage: the offloaded-ledger object format, object stores (filesystem, S3) and
        // the offloader that writes closed ledgers into them and reads them back.
        .target(name: "TieredStorage", dependencies: [
            "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ], exclude: ["README.md"]),
        // Geo-replication: each topic's replicators toward remote clusters (a cursor read by the
        // broker, a Pulsar producer on the remote cluster).
        .target(name: "GeoReplication", dependencies: [
            "BrokerCore", "ManagedLedger", "MagnetarClient", "PulsarProtocol", "Schemas", "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
        // Schema definitions (Avro's parser and resolution rules) and Pulsar's compatibility
        // strategies: pure values, no I/O.
        .target(name: "Schemas", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .executableTarget(name: "magnetar", dependencies: [
            "BrokerServer", "BrokerCore", "ManagedLedger", "Metadata", "Replication", "LedgerStorage", "MagnetarClient", "ServerConfig",
            "Authentication", "Schemas", "KafkaServer", "TieredStorage", "GeoReplication",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: hotPathSettings),
        // Fuzz targets over every reader of untrusted input (scripts/fuzz builds them with libFuzzer).
        .target(name: "FuzzTargets", dependencies: [
            "PulsarProtocol", "LedgerStorage", "Metadata", "BrokerCore", "ManagedLedger", "BrokerServer", "AdminAPI", "Schemas",
            "KafkaProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .executableTarget(name: "magnetar-fuzz", dependencies: ["FuzzTargets"]),
        // What several test targets share: a seeded generator, a forwarding ledger store to subclass.
        .target(name: "TestSupport", dependencies: [
            "LedgerStorage",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ], path: "Tests/TestSupport"),
        .testTarget(name: "FuzzTargetsTests", dependencies: ["FuzzTargets", "TestSupport"], exclude: ["Corpus"]),
        .testTarget(name: "CRC32CTests", dependencies: ["CRC32C"]),
        .testTarget(name: "GeoReplicationTests", dependencies: [
            "GeoReplication", "PulsarProtocol", .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "PulsarProtocolTests", dependencies: [
            "PulsarProtocol",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOTestUtils", package: "swift-nio"),
        ]),
        .testTarget(name: "LedgerStorageTests", dependencies: [
            "LedgerStorage", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "ReplicationTests", dependencies: [
            "Replication", "LedgerStorage", "Metadata", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOTestUtils", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "MetadataTests", dependencies: ["Metadata", "TestSupport"]),
        .testTarget(name: "ServerConfigTests", dependencies: ["ServerConfig"]),
        .testTarget(name: "SchemasTests", dependencies: ["Schemas", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "AuthenticationTests", dependencies: ["Authentication"]),
        .testTarget(name: "KafkaProtocolTests", dependencies: [
            "KafkaProtocol", .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "KafkaServerTests", dependencies: [
            "KafkaServer", "KafkaProtocol", "ManagedLedger", "PulsarProtocol", "PayloadCompression", "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "TieredStorageTests", dependencies: [
            "TieredStorage", .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "PayloadCompressionTests", dependencies: [
            "PayloadCompression", .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "MagnetarClientTests", dependencies: [
            "MagnetarClient", "PulsarProtocol", "PayloadCompression",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
        ]),
        .testTarget(name: "BrokerCoreTests", dependencies: [
            "BrokerCore", "ManagedLedger", "LedgerStorage", "Metadata", "TestSupport", "TieredStorage",
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "BrokerServerTests", dependencies: [
            "BrokerServer", "BrokerCore", "ManagedLedger", "PulsarProtocol", "LedgerStorage", "Metadata", "Authentication", "Schemas", "PayloadCompression", "CRC32C",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "AdminAPITests", dependencies: [
            "AdminAPI", "BrokerCore", "ManagedLedger", "LedgerStorage", "Metadata",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
