import BrokerCore
import Foundation
import ManagedLedger
import Logging
import NIOCore
import ServiceLifecycle

/// What an endpoint gets to build its listener: the broker it serves (topics, managed ledgers and
/// cursors, protocol-neutral), where to listen, and the `--config` file's settings, of which it
/// reads its own keys.
public struct EndpointContext: Sendable {
    public var broker: BrokerService
    public var bindAddress: String
    public var advertisedAddress: String
    /// Every key=value of the `--config` file (empty without one).
    public var settings: [String: String]
    public var eventLoopGroup: any EventLoopGroup
    public var logger: Logger

    public init(
        broker: BrokerService, bindAddress: String, advertisedAddress: String, settings: [String: String],
        eventLoopGroup: any EventLoopGroup, logger: Logger
    ) {
        self.broker = broker
        self.bindAddress = bindAddress
        self.advertisedAddress = advertisedAddress
        self.settings = settings
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }
}

/// A messaging protocol served beside Pulsar's, as Pulsar's protocol handlers are: a listener with
/// its frame codec, a sans-IO connection machine and a thin NIO handler, over the same core. The
/// broker always serves Pulsar's endpoint (`PulsarServer`), and the ones `messagingProtocols` names.
public struct ProtocolEndpoint: Sendable {
    /// Its name in `messagingProtocols` (`kafka`, `amqp`).
    public var name: String
    /// The `--config` keys it reads: known to the broker, so not logged as ignored.
    public var configKeys: Set<String>
    /// Its listener, run in the broker's service group until graceful shutdown.
    public var makeService: @Sendable (EndpointContext) throws -> any Service
    /// What a cluster broker publishes about this endpoint in its registration
    /// (`BrokerIdentity.protocols`), from the `--config` settings, bind and advertised address:
    /// how other brokers send clients to it.
    public var advertisedData: @Sendable (_ settings: [String: String], _ bindAddress: String, _ advertisedAddress: String) throws -> String?

    public init(
        name: String, configKeys: Set<String>,
        advertisedData: @escaping @Sendable (_ settings: [String: String], _ bindAddress: String, _ advertisedAddress: String) throws -> String? = { _, _, _ in nil },
        makeService: @escaping @Sendable (EndpointContext) throws -> any Service
    ) {
        self.name = name
        self.configKeys = configKeys
        self.advertisedData = advertisedData
        self.makeService = makeService
    }
}

/// `messagingProtocols` names an endpoint this build does not have.
public struct EndpointSelectionError: Error, CustomStringConvertible, Sendable {
    /// The name as given.
    public var name: String
    /// What this build serves.
    public var served: [String]
    public var description: String {
        "'\(name)' is not a protocol this build serves (it serves: \(served.joined(separator: ", ")))"
    }
}

public enum ProtocolEndpoints {
    /// The endpoint every broker serves; naming it in `messagingProtocols` changes nothing.
    public static let pulsar = "pulsar"

    /// The endpoints this build can serve besides Pulsar's. A new protocol adds its own here and
    /// touches nothing of Pulsar's.
    public static let available: [ProtocolEndpoint] = []

    /// The endpoints `messagingProtocols` names (Pulsar's syntax: comma-separated names), in
    /// order, each once.
    public static func select(
        _ names: [String], from available: [ProtocolEndpoint] = available
    ) throws(EndpointSelectionError) -> [ProtocolEndpoint] {
        var selected: [ProtocolEndpoint] = []
        for raw in names {
            let name = raw.trimmingCharacters(in: .whitespaces).lowercased()
            if name.isEmpty || name == pulsar || selected.contains(where: { $0.name == name }) { continue }
            guard let endpoint = available.first(where: { $0.name == name }) else {
                throw EndpointSelectionError(name: raw, served: [pulsar] + available.map(\.name))
            }
            selected.append(endpoint)
        }
        return selected
    }
}
