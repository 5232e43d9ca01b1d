import ArgumentParser
import Logging
import ServerConfig

/// `--config FILE`: a Pulsar-style key=value file (`standalone.conf`, `broker.conf`,
/// `bookkeeper.conf`) with Pulsar's (or BookKeeper's) key names. A flag given on the command line
/// overrides the file's value; a key the file leaves out or empty takes the default.
struct ConfigOption: ParsableArguments {
    @Option(name: .customLong("config"), help: ArgumentHelp(
        "A Pulsar-style configuration file (key=value with Pulsar's key names; see conf/ for every supported key). Flags override it.",
        valueName: "file"))
    var path: String?

    /// The file, or nil without `--config`. Keys outside `known` are logged once, as ignored.
    func load(known: Set<String>, logger: Logger) throws -> ConfigFile? {
        guard let path else { return nil }
        let file: ConfigFile
        do {
            file = try ConfigFile(path: path)
        } catch {
            throw StartupError(error.description)
        }
        let ignored = file.unknownKeys(known: known)
        if !ignored.isEmpty {
            logger.notice("config.keys-ignored", metadata: [
                "file": "\(path)", "keys": "\(ignored.joined(separator: ","))", "count": "\(ignored.count)",
            ])
        }
        logger.info("config.loaded", metadata: ["file": "\(path)", "keys": "\(file.values.count)"])
        return file
    }
}

/// A start-up failure with a message that says what to fix (printed as `Error: …`, exit status 1).
struct StartupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A value from the flag if given, else from the file's key, else the default. A bad value in
/// the file stops start-up with a message naming the key, the value and the file.
enum Layered {
    static func int(_ flag: Int?, _ file: ConfigFile?, _ key: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
        if let flag { return flag }
        return try wrap { try file?.int(key, in: range) } ?? value
    }

    static func int64(_ flag: Int64?, _ file: ConfigFile?, _ key: String, default value: Int64, in range: ClosedRange<Int64>) throws -> Int64 {
        if let flag { return flag }
        return try wrap { try file?.int64(key, in: range) } ?? value
    }

    static func optionalInt64(_ file: ConfigFile?, _ key: String, in range: ClosedRange<Int64>) throws -> Int64? {
        try wrap { try file?.int64(key, in: range) }
    }

    static func optionalInt(_ flag: Int?, _ file: ConfigFile?, _ key: String, in range: ClosedRange<Int>) throws -> Int? {
        if let flag { return flag }
        return try wrap { try file?.int(key, in: range) }
    }

    static func string(_ flag: String?, _ file: ConfigFile?, _ key: String, default value: String) -> String {
        flag ?? file?.string(key) ?? value
    }

    static func optionalString(_ flag: String?, _ file: ConfigFile?, _ key: String) -> String? {
        flag ?? file?.string(key)
    }

    private static func wrap<T>(_ body: () throws -> T?) throws -> T? {
        do {
            return try body()
        } catch let error as ConfigFileError {
            throw StartupError(error.description)
        }
    }
}
