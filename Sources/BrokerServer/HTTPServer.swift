import Hummingbird
import Logging

/// The HTTP endpoint: `/health` now; the admin API and `/metrics` come later.
public enum HTTPServer {
    public static func makeApplication(host: String, port: Int, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        router.get("/health") { _, _ -> String in "ok" }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "Magnetar"),
            logger: logger)
    }
}
