#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A configuration file in the format of Apache Pulsar's `broker.conf` / `standalone.conf` and
/// BookKeeper's `bookkeeper.conf`: Java properties, one `key=value` per line.
///
/// What the parser accepts (the subset of `java.util.Properties` those files use): `#` and `!`
/// start a comment line; the key ends at the first unescaped `=`, `:` or blank; blanks around the
/// key and the value are dropped; a line ending in an odd number of `\` continues on the next
/// line; `\t`, `\n`, `\r`, `\f`, `\uXXXX` and `\<char>` escapes are decoded. As in Pulsar, a key
/// with an empty value means "the default" and is treated as absent. A key given twice keeps its
/// last value (as `Properties.load` does).
///
/// Values are read with typed getters that throw a `ConfigFileError` naming the key, the value, the
/// file and its line, and what is expected.
public struct ConfigFile: Sendable {
    /// Largest file accepted, checked before it is read.
    public static let maxFileBytes = 1 << 20

    /// The path the file was read from (for messages).
    public let path: String
    /// Every key with a non-empty value.
    public private(set) var values: [String: String] = [:]
    /// The line each key was (last) given on.
    public private(set) var lineNumbers: [String: Int] = [:]
    /// Keys given with an empty value (defaults).
    public private(set) var emptyKeys: Set<String> = []

    /// Reads and parses the file at `path`.
    public init(path: String) throws(ConfigFileError) {
        self.path = path
        let text = try Self.readText(path)
        try parse(text)
    }

    /// Parses `text` as if read from `path`.
    public init(text: String, path: String = "<text>") throws(ConfigFileError) {
        self.path = path
        try parse(text)
    }

    /// Every key the file sets (empty values included) that is not in `known`, sorted.
    public func unknownKeys(known: Set<String>) -> [String] {
        (Set(values.keys).union(emptyKeys)).subtracting(known).sorted()
    }

    public func string(_ key: String) -> String? { values[key] }

    /// An integer in `range`, or nil if the key is absent.
    public func int(_ key: String, in range: ClosedRange<Int> = Int.min...Int.max) throws(ConfigFileError) -> Int? {
        guard let text = values[key] else { return nil }
        guard let value = Int(text) else { throw error(key, text, expected: "an integer") }
        guard range.contains(value) else { throw error(key, text, expected: Self.describe(range)) }
        return value
    }

    /// An `Int64` in `range`, or nil if the key is absent.
    public func int64(_ key: String, in range: ClosedRange<Int64> = Int64.min...Int64.max) throws(ConfigFileError) -> Int64? {
        guard let text = values[key] else { return nil }
        guard let value = Int64(text) else { throw error(key, text, expected: "an integer") }
        guard range.contains(value) else {
            throw error(key, text, expected: "an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// `true` or `false` (any case, as Java's `Boolean.parseBoolean` reads them, but strict:
    /// anything else is an error rather than `false`), or nil if the key is absent.
    public func bool(_ key: String) throws(ConfigFileError) -> Bool? {
        guard let text = values[key] else { return nil }
        switch text.lowercased() {
        case "true": return true
        case "false": return false
        default: throw error(key, text, expected: "true or false")
        }
    }

    /// A comma-separated list (blanks around items dropped, empty items skipped), or nil if absent.
    public func list(_ key: String) -> [String]? {
        guard let text = values[key] else { return nil }
        return text.split(separator: ",").map { String($0).trimmingBlanks() }.filter { !$0.isEmpty }
    }

    /// The error for a bad value of `key`.
    public func error(_ key: String, _ value: String, expected: String) -> ConfigFileError {
        ConfigFileError.badValue(key: key, value: value, path: path, line: lineNumbers[key], expected: expected)
    }

    private static func describe(_ range: ClosedRange<Int>) -> String {
        switch (range.lowerBound, range.upperBound) {
        case (Int.min, Int.max): return "an integer"
        case (let low, Int.max): return "an integer of at least \(low)"
        case (let low, let high): return "an integer from \(low) to \(high)"
        }
    }

    // MARK: parsing

    private static func readText(_ path: String) throws(ConfigFileError) -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: path, reason: "not a regular file") }
        guard info.st_size <= maxFileBytes else {
            throw .unreadable(path: path, reason: "larger than \(maxFileBytes) bytes (\(info.st_size))")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + done, $0.count - done) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                throw .unreadable(path: path, reason: count == 0 ? "file shrank while read" : String(cString: strerror(errno)))
            }
            done += count
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .unreadable(path: path, reason: "not UTF-8 text")
        }
        return text
    }

    private mutating func parse(_ text: String) throws(ConfigFileError) {
        var logical = ""
        var startLine = 0
        var continuing = false
        var lineNumber = 0
        // "\r\n" is one Character in Swift; all three of Java's line terminators end a line.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            lineNumber += 1
            let trimmed = String(line).trimmingLeadingBlanks()
            if !continuing {
                if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix("!") { continue }
                logical = ""
                startLine = lineNumber
            }
            // An odd number of trailing backslashes continues the line.
            let trailing = trimmed.reversed().prefix { $0 == "\\" }.count
            if trailing % 2 == 1 {
                logical += trimmed.dropLast()
                continuing = true
                continue
            }
            logical += trimmed
            continuing = false
            try addLine(logical, line: startLine)
        }
        if continuing { try addLine(logical, line: startLine) }
    }

    private mutating func addLine(_ line: String, line number: Int) throws(ConfigFileError) {
        var key = ""
        var index = line.startIndex
        var escaped = false
        while index < line.endIndex {
            let character = line[index]
            if escaped {
                key.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else if character == "=" || character == ":" || character == " " || character == "\t" || character == "\u{0C}" {
                break
            } else {
                key.append(character)
            }
            index = line.index(after: index)
        }
        // Skip blanks, then one separator, then blanks.
        var rest = line[index...].drop { $0 == " " || $0 == "\t" || $0 == "\u{0C}" }
        if let first = rest.first, first == "=" || first == ":" {
            rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" || $0 == "\u{0C}" }
        }
        guard !key.isEmpty else {
            throw .syntax(path: path, line: number, reason: "a line without a key: '\(line.prefix(80))'")
        }
        let value = try unescape(rest, line: number).trimmingBlanks()
        values[key] = nil
        emptyKeys.remove(key)
        if value.isEmpty {
            emptyKeys.insert(key)
        } else {
            values[key] = value
        }
        lineNumbers[key] = number
    }

    private func unescape(_ text: Substring, line: Int) throws(ConfigFileError) -> String {
        var result = ""
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            guard character == "\\" else {
                result.append(character)
                continue
            }
            guard let next = iterator.next() else { break }
            switch next {
            case "t": result.append("\t")
            case "n": result.append("\n")
            case "r": result.append("\r")
            case "f": result.append("\u{0C}")
            case "u":
                var hex = ""
                for _ in 0..<4 {
                    guard let digit = iterator.next() else { break }
                    hex.append(digit)
                }
                guard hex.count == 4, let code = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(code) else {
                    throw .syntax(path: path, line: line, reason: "bad \\u escape '\\u\(hex)'")
                }
                result.unicodeScalars.append(scalar)
            default: result.append(next)
            }
        }
        return result
    }
}

/// Why a configuration file cannot be used. The description names the file (and line), the key
/// and the value, and what is expected.
public enum ConfigFileError: Error, Equatable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case syntax(path: String, line: Int, reason: String)
    case badValue(key: String, value: String, path: String, line: Int?, expected: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            return "cannot read configuration file \(path): \(reason)"
        case .syntax(let path, let line, let reason):
            return "\(path):\(line): \(reason)"
        case .badValue(let key, let value, let path, let line, let expected):
            let place = line.map { "\(path):\($0)" } ?? path
            return "\(place): \(key)=\(value) is not valid: expected \(expected)"
        }
    }
}

extension String {
    fileprivate func trimmingLeadingBlanks() -> String {
        String(drop { $0 == " " || $0 == "\t" || $0 == "\u{0C}" })
    }

    fileprivate func trimmingBlanks() -> String {
        var view = Substring(self).drop { $0 == " " || $0 == "\t" || $0 == "\u{0C}" }
        while let last = view.last, last == " " || last == "\t" || last == "\u{0C}" { view = view.dropLast() }
        return String(view)
    }
}
