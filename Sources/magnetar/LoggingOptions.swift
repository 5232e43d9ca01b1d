import ArgumentParser
import Logging

/// `--log-level`, shared by the commands that run servers; `bootstrap()` sets up swift-log once.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown --log-level '\(logLevel)': use trace, debug, info, notice, warning, error or critical")
        }
    }

    /// Logs to standard error at the chosen level.
    func bootstrap() {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
