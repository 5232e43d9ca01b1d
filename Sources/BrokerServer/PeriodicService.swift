import BrokerCore
import ManagedLedger
import Logging
import ServiceLifecycle

/// A job run every `interval` as a service of the process's `ServiceGroup` (the policy
/// pass; in a cluster, the ownership check): it stops at graceful shutdown, before the broker
/// flushes its cursors, since the group stops services in reverse order and these come last.
public struct PeriodicService: Service {
    let name: String
    let interval: Duration
    let logger: Logger
    let work: @Sendable () async -> Void

    public init(name: String, interval: Duration, logger: Logger, work: @escaping @Sendable () async -> Void) {
        self.name = name
        self.interval = interval
        self.logger = logger
        self.work = work
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
                await work()
            }
        }
        logger.debug("broker.periodic-service-stopped", metadata: ["service": "\(name)"])
    }
}

/// A broker job that runs until graceful shutdown (the ownership watch).
struct ContinuousService: Service {
    let work: @Sendable () async -> Void

    func run() async throws {
        await cancelWhenGracefulShutdown { await work() }
    }
}

extension BrokerProcess {
    /// The broker's own periodic work: the policy pass every second; in a cluster, the ownership
    /// check every second and the ownership watch.
    static func brokerServices(_ broker: BrokerService, logger: Logger) -> [any Service] {
        var services: [any Service] = [
            PeriodicService(name: "policies", interval: .seconds(1), logger: logger) { await broker.enforcePolicies() },
        ]
        if broker.cluster != nil {
            services.append(PeriodicService(name: "ownership", interval: .seconds(1), logger: logger) { await broker.verifyOwnership() })
            services.append(ContinuousService { await broker.watchOwnership() })
        }
        return services
    }
}
