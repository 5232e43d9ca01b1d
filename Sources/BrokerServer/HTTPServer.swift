import AdminAPI
import BrokerCore
import Hummingbird
import Logging
import Prometheus

/// The HTTP endpoint on `--http-port`: `/health`, the admin REST API (`/admin/v2/...`) and `/metrics`
/// (routes in AdminAPI). `metricsRegistry` is the registry swift-metrics was bootstrapped with.
public enum HTTPServer {
    public static func makeApplication(
        host: String, port: Int, broker: BrokerService, metricsRegistry: PrometheusCollectorRegistry, logger: Logger
    ) -> some ApplicationProtocol {
        let router = AdminRouter.makeRouter(
            broker: broker, metrics: MetricsCollector(broker: broker, registry: metricsRegistry))
        // Idle keep-alive connections are closed, so clients that open and abandon them cannot
        // hold the process's file descriptors.
        return Application(
            router: router,
            server: .http1(configuration: .init(idleTimeout: AdminHTTPLimits.idleConnectionTimeout)),
            configuration: .init(address: .hostname(host, port: port), serverName: "Magnetar"),
            logger: logger)
    }
}
