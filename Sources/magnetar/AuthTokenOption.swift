import ArgumentParser
import Foundation

/// `--auth-token` / `--auth-token-file`, as pulsar-admin's and pulsar-client's `--auth-params`
/// give a token: for brokers with authentication on.
struct AuthTokenOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A token for a broker with authentication on (as `magnetar tokens create` makes).", valueName: "jwt"))
    var authToken: String?

    @Option(help: ArgumentHelp("A file holding the token (its first line), instead of --auth-token.", valueName: "file"))
    var authTokenFile: String?

    /// The token, or nil without one; the file is read each call.
    func token() throws -> String? {
        if let authToken { return authToken.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard var path = authTokenFile else { return nil }
        if path.hasPrefix("file://") { path.removeFirst("file://".count) }
        guard let data = FileManager.default.contents(atPath: path), data.count <= 64 * 1024 else {
            throw ValidationError("--auth-token-file \(path): cannot read it (or it is larger than 64 KiB)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let line = text.split(whereSeparator: \.isNewline).first, !line.isEmpty else {
            throw ValidationError("--auth-token-file \(path) is empty")
        }
        return String(line)
    }
}
