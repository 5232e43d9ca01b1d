import Foundation

/// A key given as Pulsar gives `tokenSecretKey`, `tokenPublicKey` and `pulsar tokens ... --secret-key`:
/// `data:;base64,<base64>` (the key inline), `file:///path` (the file's raw bytes: DER, PEM or a
/// secret), a plain path to an existing file, or else the base64 of the key itself.
public enum KeySource {
    /// Largest key file accepted, checked before it is read (keys are a few KiB at most).
    public static let maxKeyBytes = 64 * 1024

    public static func read(_ value: String) throws(AuthenticationConfigError) -> [UInt8] {
        let text = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if text.hasPrefix("data:") {
            // `data:[<mediatype>][;base64],<data>`: only base64 data carries a binary key.
            guard let comma = text.firstIndex(of: ","), text[..<comma].hasSuffix(";base64"),
                  let bytes = Data(base64Encoded: String(text[text.index(after: comma)...]))
            else { throw AuthenticationConfigError("key '\(redacted(text))' is not data:;base64,<base64 of the key>") }
            return Array(bytes)
        }
        if text.hasPrefix("file:") {
            guard let url = URL(string: text), url.isFileURL, !url.path.isEmpty else {
                throw AuthenticationConfigError("key '\(text)' is not a file URL: use file:///absolute/path")
            }
            return try readFile(url.path)
        }
        if FileManager.default.fileExists(atPath: text) {
            return try readFile(text)
        }
        guard !text.isEmpty, let bytes = Data(base64Encoded: text) else {
            throw AuthenticationConfigError(
                "key '\(redacted(text))' is neither data:;base64,..., file:///path, an existing file nor base64 text")
        }
        return Array(bytes)
    }

    static func readFile(_ path: String) throws(AuthenticationConfigError) -> [UInt8] {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        guard let size = attributes?[.size] as? Int else {
            throw AuthenticationConfigError("key file \(path) cannot be read: it does not exist or is not accessible")
        }
        guard size <= maxKeyBytes else {
            throw AuthenticationConfigError("key file \(path) has \(size) bytes: a key has at most \(maxKeyBytes)")
        }
        guard let data = FileManager.default.contents(atPath: path), !data.isEmpty else {
            throw AuthenticationConfigError("key file \(path) cannot be read or is empty")
        }
        return Array(data)
    }

    /// Key material never goes into a message: only its first characters.
    static func redacted(_ text: String) -> String {
        text.count <= 12 ? "…" : "\(text.prefix(8))…"
    }
}

/// A security setting that cannot be used as given; the message names it and says what is expected.
public struct AuthenticationConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
