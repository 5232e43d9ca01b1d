import Foundation
import Logging
import NIOConcurrencyHelpers

/// Per-connection limits of the Pulsar endpoint (the frame size limit is in `PulsarLimits`).
enum ConnectionLimits {
    /// SENDs in flight (received, receipt not yet written) before the connection stops reading;
    /// reading resumes at half. Pulsar's `maxPendingPublishRequestsPerConnection` default.
    static let maxPendingPublishesPerConnection = 1_000
    /// Producers one connection may have open at once (each holds a table entry and a topic
    /// reference); a PRODUCER past it gets `NotAllowed`.
    static let maxProducersPerConnection = 10_000
    /// Consumers one connection may have open at once; a SUBSCRIBE past it gets `NotAllowed`.
    static let maxConsumersPerConnection = 10_000
    /// Bytes written to a connection and not yet taken by its socket past which the broker closes
    /// it: the client stopped reading while dispatch and replies were already bounded by permits,
    /// pending publishes and the write buffer's high-water mark, so this is only reached by a peer
    /// that reads nothing at all. Two maximal messages and then some.
    static let maxOutboundBytesPerConnection = 3 * 5 * 1024 * 1024
    /// File descriptors kept free below the process's limit, so the admin API, storage files and
    /// new good clients still get one when the Pulsar port is full.
    static let fileDescriptorReserve = 256
}

/// Settings of the Pulsar listener, with Pulsar's `broker.conf` names and defaults.
public struct PulsarListenerSettings: Sendable, Equatable {
    /// `keepAliveIntervalSeconds`: a connection that sent nothing for this long gets a PING, and is
    /// closed when the next interval passes without an answer; one that sent no CONNECT within it
    /// is closed.
    public var keepAliveInterval: Duration = .seconds(30)
    /// `brokerMaxConnections`: 0 = as many as the file-descriptor limit allows, less a reserve.
    public var maxConnections = 0
    /// `brokerMaxConnectionsPerIp`: 0 = no limit per client address.
    public var maxConnectionsPerIP = 0

    public init() {}
}

/// Counts the open Pulsar connections, in total and per client address, and refuses one past the
/// limits. Thread-safe (a lock); called once per accepted and per closed connection.
final class ConnectionRegistry: Sendable {
    private struct Counts {
        var total = 0
        var perIP: [String: Int] = [:]
    }

    let maxConnections: Int
    let maxConnectionsPerIP: Int
    private let counts = NIOLockedValueBox(Counts())

    init(settings: PulsarListenerSettings, fileDescriptorLimit: Int?) {
        var limit = settings.maxConnections
        if let fileDescriptorLimit {
            let fitting = max(fileDescriptorLimit - ConnectionLimits.fileDescriptorReserve, 1)
            limit = limit > 0 ? min(limit, fitting) : fitting
        }
        maxConnections = limit
        maxConnectionsPerIP = settings.maxConnectionsPerIP
    }

    enum Admission: Equatable {
        case admitted
        case tooManyConnections(limit: Int)
        case tooManyConnectionsFromAddress(limit: Int)
    }

    /// Counts a new connection from `address`, unless a limit refuses it (then nothing is counted).
    func admit(address: String) -> Admission {
        counts.withLockedValue { counts in
            if maxConnections > 0, counts.total >= maxConnections { return .tooManyConnections(limit: maxConnections) }
            let fromAddress = counts.perIP[address, default: 0]
            if maxConnectionsPerIP > 0, fromAddress >= maxConnectionsPerIP {
                return .tooManyConnectionsFromAddress(limit: maxConnectionsPerIP)
            }
            counts.total += 1
            counts.perIP[address] = fromAddress + 1
            return .admitted
        }
    }

    /// Forgets an admitted connection.
    func release(address: String) {
        counts.withLockedValue { counts in
            counts.total -= 1
            let left = counts.perIP[address, default: 1] - 1
            counts.perIP[address] = left > 0 ? left : nil
        }
    }

    var openConnections: Int { counts.withLockedValue { $0.total } }
}

/// The process's file-descriptor limit.
enum FileDescriptorLimit {
    /// Raises the soft limit to the hard one (a broker holds a socket per client) and returns it;
    /// nil when it is unlimited or cannot be read.
    static func raiseToHardLimit(logger: Logger) -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        guard limit.rlim_cur < rlim_t(Int32.max) else { return nil }  // RLIM_INFINITY is all ones
        logger.debug("pulsar-server.file-descriptor-limit", metadata: ["limit": "\(limit.rlim_cur)"])
        return Int(limit.rlim_cur)
    }
}
