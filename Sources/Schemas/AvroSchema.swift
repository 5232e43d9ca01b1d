/// An Avro schema parsed by the rules of the Avro specification (1.11, "Schema Declaration"):
/// primitives, records, enums, arrays, maps, unions and fixed, with named types resolved by full
/// name (namespaces inherited from the enclosing name) and field defaults checked against their
/// types. Logical types are read as their underlying type, as schema resolution does.
public struct AvroSchema: Sendable, Equatable {
    /// The schema's type; named types appear as `.named(fullName)`, defined in `names`.
    public let root: AvroType
    /// Every named type the schema defines, by full name.
    public let names: [String: AvroNamedType]

    /// Parses a schema from its JSON text (a Pulsar `schema_data` for AVRO and JSON schemas).
    public static func parse(_ bytes: some Collection<UInt8>) throws(AvroSchemaError) -> AvroSchema {
        guard let json = JSONValue.parse(bytes) else {
            throw AvroSchemaError("the definition is not JSON")
        }
        return try parse(json)
    }

    public static func parse(_ json: JSONValue) throws(AvroSchemaError) -> AvroSchema {
        var parser = AvroParser()
        let root = try parser.type(json, namespace: nil, path: "")
        let schema = AvroSchema(root: root, names: parser.names)
        try schema.checkDefaults()
        return schema
    }

    /// The named type `fullName` defines (nil for an undefined name, which `parse` refuses).
    public func named(_ fullName: String) -> AvroNamedType? {
        names[fullName]
    }

    private func checkDefaults() throws(AvroSchemaError) {
        for (_, named) in names.sorted(by: { $0.key < $1.key }) {
            switch named {
            case .record(let record):
                for field in record.fields {
                    guard let value = field.defaultValue else { continue }
                    guard accepts(value, as: field.type, depth: 0) else {
                        throw AvroSchemaError(
                            "field '\(field.name)' of record '\(record.name.fullName)' has a default (\(value.brief)) that is not a \(field.type.describe(in: self))\(field.type.isUnion ? " (a union's default must match its first branch)" : "")")
                    }
                }
            case .enumeration(let enumeration):
                if let symbol = enumeration.defaultSymbol, !enumeration.symbols.contains(symbol) {
                    throw AvroSchemaError("enum '\(enumeration.name.fullName)' has a default '\(symbol)' that is not one of its symbols")
                }
            case .fixed:
                break
            }
        }
    }

    /// Whether `value` is a valid default for `type` (a union's default is for its first branch).
    func accepts(_ value: JSONValue, as type: AvroType, depth: Int) -> Bool {
        guard depth < AvroLimits.maxDepth else { return false }
        switch (type, value) {
        case (.null, .null): return true
        case (.boolean, .bool): return true
        case (.int, .int(let number)): return Int64(Int32.min)...Int64(Int32.max) ~= number
        case (.long, .int): return true
        case (.float, .int), (.float, .double), (.double, .int), (.double, .double): return true
        case (.bytes, .string), (.string, .string): return true
        case (.array(let items), .array(let elements)):
            return elements.allSatisfy { accepts($0, as: items, depth: depth + 1) }
        case (.map(let values), .object(let entries)):
            return entries.values.allSatisfy { accepts($0, as: values, depth: depth + 1) }
        case (.union(let branches), _):
            return branches.first.map { accepts(value, as: $0, depth: depth + 1) } ?? false
        case (.named(let name), _):
            switch names[name] {
            case .record(let record)?:
                guard case .object(let object) = value else { return false }
                return record.fields.allSatisfy { field in
                    if let given = object[field.name] { return accepts(given, as: field.type, depth: depth + 1) }
                    return field.defaultValue != nil
                }
            case .enumeration(let enumeration)?:
                guard case .string(let symbol) = value else { return false }
                return enumeration.symbols.contains(symbol)
            case .fixed(let fixed)?:
                guard case .string(let text) = value else { return false }
                // Avro's JSON encoding of bytes: one code point 0-255 per byte.
                return text.unicodeScalars.count == fixed.size && text.unicodeScalars.allSatisfy { $0.value <= 255 }
            case nil:
                return false
            }
        default:
            return false
        }
    }
}

/// One Avro type. Named types (records, enums, fixed) are referenced by full name, so recursive
/// records are finite values.
public indirect enum AvroType: Sendable, Equatable {
    case null, boolean, int, long, float, double, bytes, string
    case array(AvroType)
    case map(AvroType)
    case union([AvroType])
    case named(String)

    var isUnion: Bool {
        if case .union = self { return true }
        return false
    }

    /// How the type reads in a message: `string`, `array<int>`, `record example.Order`.
    public func describe(in schema: AvroSchema) -> String {
        switch self {
        case .null: "null"
        case .boolean: "boolean"
        case .int: "int"
        case .long: "long"
        case .float: "float"
        case .double: "double"
        case .bytes: "bytes"
        case .string: "string"
        case .array(let items): "array<\(items.describe(in: schema))>"
        case .map(let values): "map<\(values.describe(in: schema))>"
        case .union(let branches): "union[\(branches.map { $0.describe(in: schema) }.joined(separator: ", "))]"
        case .named(let name):
            switch schema.names[name] {
            case .record?: "record \(name)"
            case .enumeration?: "enum \(name)"
            case .fixed(let fixed)?: "fixed \(name) (\(fixed.size) bytes)"
            case nil: name
            }
        }
    }
}

public enum AvroNamedType: Sendable, Equatable {
    case record(AvroRecord)
    case enumeration(AvroEnum)
    case fixed(AvroFixed)

    public var name: AvroName {
        switch self {
        case .record(let record): record.name
        case .enumeration(let enumeration): enumeration.name
        case .fixed(let fixed): fixed.name
        }
    }

    public var aliases: [String] {
        switch self {
        case .record(let record): record.aliases
        case .enumeration(let enumeration): enumeration.aliases
        case .fixed(let fixed): fixed.aliases
        }
    }
}

/// A name and its namespace (`fullName` = `namespace.name`, or `name` without one).
public struct AvroName: Sendable, Equatable, Hashable {
    public let name: String
    public let namespace: String?

    public var fullName: String { namespace.map { "\($0).\(name)" } ?? name }

    /// Resolves `text` (a simple or dotted name) in `namespace`, as the specification does.
    init(_ text: String, namespace: String?) {
        if let dot = text.lastIndex(of: ".") {
            name = String(text[text.index(after: dot)...])
            let space = String(text[..<dot])
            self.namespace = space.isEmpty ? nil : space
        } else {
            name = text
            self.namespace = namespace.flatMap { $0.isEmpty ? nil : $0 }
        }
    }
}

public struct AvroRecord: Sendable, Equatable {
    public let name: AvroName
    /// Full names.
    public let aliases: [String]
    public let fields: [AvroField]
}

public struct AvroField: Sendable, Equatable {
    public let name: String
    public let type: AvroType
    public let defaultValue: JSONValue?
    public let aliases: [String]
}

public struct AvroEnum: Sendable, Equatable {
    public let name: AvroName
    public let aliases: [String]
    public let symbols: [String]
    public let defaultSymbol: String?
}

public struct AvroFixed: Sendable, Equatable {
    public let name: AvroName
    public let aliases: [String]
    public let size: Int
}

/// An Avro definition that cannot be used; says what is wrong and where.
public struct AvroSchemaError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

enum AvroLimits {
    /// Nesting depth of types and defaults (a definition deeper than this is refused).
    static let maxDepth = 64
}

private struct AvroParser {
    var names: [String: AvroNamedType] = [:]
    private var depth = 0

    static let primitives: [String: AvroType] = [
        "null": .null, "boolean": .boolean, "int": .int, "long": .long,
        "float": .float, "double": .double, "bytes": .bytes, "string": .string,
    ]

    mutating func type(_ json: JSONValue, namespace: String?, path: String) throws(AvroSchemaError) -> AvroType {
        depth += 1
        defer { depth -= 1 }
        guard depth <= AvroLimits.maxDepth else {
            throw AvroSchemaError("types nest deeper than \(AvroLimits.maxDepth) levels at \(location(path))")
        }
        switch json {
        case .string(let text):
            return try reference(text, namespace: namespace, path: path)
        case .array(let branches):
            return try union(branches, namespace: namespace, path: path)
        case .object(let object):
            guard let kind = object["type"] else {
                throw AvroSchemaError("a schema object without \"type\" at \(location(path))")
            }
            guard case .string(let typeName) = kind else {
                // {"type": {...}} or {"type": [...]}: the inner schema is the type.
                return try type(kind, namespace: namespace, path: path)
            }
            switch typeName {
            case "record", "error":
                return try record(object, namespace: namespace, path: path)
            case "enum":
                return try enumeration(object, namespace: namespace, path: path)
            case "fixed":
                return try fixed(object, namespace: namespace, path: path)
            case "array":
                guard let items = object["items"] else { throw AvroSchemaError("an array without \"items\" at \(location(path))") }
                return .array(try type(items, namespace: namespace, path: path + "/items"))
            case "map":
                guard let values = object["values"] else { throw AvroSchemaError("a map without \"values\" at \(location(path))") }
                return .map(try type(values, namespace: namespace, path: path + "/values"))
            default:
                // A primitive (possibly with a logicalType), or a reference to a named type.
                return try reference(typeName, namespace: namespace, path: path)
            }
        default:
            throw AvroSchemaError("\(json.brief) is not a schema at \(location(path)): expected a type name, an object or a union array")
        }
    }

    private func reference(_ text: String, namespace: String?, path: String) throws(AvroSchemaError) -> AvroType {
        if let primitive = Self.primitives[text] { return primitive }
        let name = AvroName(text, namespace: namespace)
        if names[name.fullName] != nil { return .named(name.fullName) }
        // A simple name may also mean a type of the null namespace.
        if !text.contains("."), names[text] != nil { return .named(text) }
        throw AvroSchemaError("'\(text)' at \(location(path)) is neither a primitive type nor a named type defined before it")
    }

    private mutating func union(_ branches: [JSONValue], namespace: String?, path: String) throws(AvroSchemaError) -> AvroType {
        guard !branches.isEmpty else { throw AvroSchemaError("an empty union at \(location(path))") }
        var types: [AvroType] = []
        var kinds: Set<String> = []
        for (index, branch) in branches.enumerated() {
            let type = try type(branch, namespace: namespace, path: "\(path)/\(index)")
            let kind: String
            switch type {
            case .union: throw AvroSchemaError("a union directly inside a union at \(location(path))")
            case .named(let name): kind = "named:" + name
            case .array: kind = "array"
            case .map: kind = "map"
            default: kind = "\(type)"
            }
            guard kinds.insert(kind).inserted else {
                throw AvroSchemaError("a union with two branches of the same type (\(kind.replacingOccurrences(of: "named:", with: ""))) at \(location(path))")
            }
            types.append(type)
        }
        return .union(types)
    }

    private mutating func define(_ object: [String: JSONValue], namespace: String?, kind: String, path: String) throws(AvroSchemaError) -> (AvroName, [String]) {
        guard case .string(let text)? = object["name"], !text.isEmpty else {
            throw AvroSchemaError("a \(kind) without a \"name\" at \(location(path))")
        }
        var space = namespace
        if let given = object["namespace"] {
            guard case .string(let declared) = given else { throw AvroSchemaError("\"namespace\" of '\(text)' is not a string") }
            space = declared
        }
        let name = AvroName(text, namespace: space)
        try Self.checkName(name.name, what: "\(kind) name", path: path)
        if let space = name.namespace {
            for part in space.split(separator: ".", omittingEmptySubsequences: false) {
                try Self.checkName(String(part), what: "namespace part of '\(name.fullName)'", path: path)
            }
        }
        guard Self.primitives[name.fullName] == nil else {
            throw AvroSchemaError("'\(name.fullName)' at \(location(path)) redefines a primitive type")
        }
        guard names[name.fullName] == nil else {
            throw AvroSchemaError("'\(name.fullName)' is defined twice (again at \(location(path)))")
        }
        var aliases: [String] = []
        if let list = object["aliases"] {
            guard case .array(let items) = list else { throw AvroSchemaError("\"aliases\" of '\(name.fullName)' is not an array") }
            for item in items {
                guard case .string(let alias) = item else { throw AvroSchemaError("an alias of '\(name.fullName)' is not a string") }
                aliases.append(AvroName(alias, namespace: name.namespace).fullName)
            }
        }
        return (name, aliases)
    }

    private mutating func record(_ object: [String: JSONValue], namespace: String?, path: String) throws(AvroSchemaError) -> AvroType {
        let (name, aliases) = try define(object, namespace: namespace, kind: "record", path: path)
        guard case .array(let list)? = object["fields"] else {
            throw AvroSchemaError("record '\(name.fullName)' has no \"fields\" array")
        }
        // Defined before its fields are read, so a field may refer to the record itself.
        names[name.fullName] = .record(AvroRecord(name: name, aliases: aliases, fields: []))
        var fields: [AvroField] = []
        var seen: Set<String> = []
        for (index, item) in list.enumerated() {
            guard case .object(let field) = item else {
                throw AvroSchemaError("field \(index) of record '\(name.fullName)' is not an object")
            }
            guard case .string(let fieldName)? = field["name"] else {
                throw AvroSchemaError("field \(index) of record '\(name.fullName)' has no \"name\"")
            }
            try Self.checkName(fieldName, what: "field name in '\(name.fullName)'", path: path)
            guard seen.insert(fieldName).inserted else {
                throw AvroSchemaError("record '\(name.fullName)' has two fields named '\(fieldName)'")
            }
            guard let fieldType = field["type"] else {
                throw AvroSchemaError("field '\(fieldName)' of record '\(name.fullName)' has no \"type\"")
            }
            let type = try type(fieldType, namespace: name.namespace, path: "\(path)/\(fieldName)")
            var fieldAliases: [String] = []
            if case .array(let items)? = field["aliases"] {
                fieldAliases = items.compactMap(\.stringValue)
            }
            fields.append(AvroField(name: fieldName, type: type, defaultValue: field["default"], aliases: fieldAliases))
        }
        names[name.fullName] = .record(AvroRecord(name: name, aliases: aliases, fields: fields))
        return .named(name.fullName)
    }

    private mutating func enumeration(_ object: [String: JSONValue], namespace: String?, path: String) throws(AvroSchemaError) -> AvroType {
        let (name, aliases) = try define(object, namespace: namespace, kind: "enum", path: path)
        guard case .array(let list)? = object["symbols"] else {
            throw AvroSchemaError("enum '\(name.fullName)' has no \"symbols\" array")
        }
        var symbols: [String] = []
        for item in list {
            guard case .string(let symbol) = item else { throw AvroSchemaError("a symbol of enum '\(name.fullName)' is not a string") }
            try Self.checkName(symbol, what: "symbol of enum '\(name.fullName)'", path: path)
            guard !symbols.contains(symbol) else { throw AvroSchemaError("enum '\(name.fullName)' lists '\(symbol)' twice") }
            symbols.append(symbol)
        }
        var defaultSymbol: String?
        if let given = object["default"] {
            guard case .string(let symbol) = given else { throw AvroSchemaError("the default of enum '\(name.fullName)' is not a string") }
            defaultSymbol = symbol
        }
        names[name.fullName] = .enumeration(AvroEnum(name: name, aliases: aliases, symbols: symbols, defaultSymbol: defaultSymbol))
        return .named(name.fullName)
    }

    private mutating func fixed(_ object: [String: JSONValue], namespace: String?, path: String) throws(AvroSchemaError) -> AvroType {
        let (name, aliases) = try define(object, namespace: namespace, kind: "fixed", path: path)
        guard case .int(let size)? = object["size"], size >= 0, size <= Int64(Int32.max) else {
            throw AvroSchemaError("fixed '\(name.fullName)' needs a \"size\": a non-negative integer")
        }
        names[name.fullName] = .fixed(AvroFixed(name: name, aliases: aliases, size: Int(size)))
        return .named(name.fullName)
    }

    private static func checkName(_ name: String, what: String, path: String) throws(AvroSchemaError) {
        let scalars = Array(name.unicodeScalars)
        // Pulsar's name validator also takes `$` (Java class names).
        func letter(_ s: Unicode.Scalar) -> Bool { ("A"..."Z").contains(s) || ("a"..."z").contains(s) || s == "_" || s == "$" }
        func digit(_ s: Unicode.Scalar) -> Bool { ("0"..."9").contains(s) }
        guard let first = scalars.first, letter(first), scalars.dropFirst().allSatisfy({ letter($0) || digit($0) }) else {
            throw AvroSchemaError("'\(name)' is not a valid \(what) (letters, digits, _ and $, not starting with a digit)")
        }
    }

    private func location(_ path: String) -> String {
        path.isEmpty ? "the top level" : path
    }
}

extension JSONValue {
    /// A short rendering for error messages.
    var brief: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .int(let value): "\(value)"
        case .double(let value): "\(value)"
        case .string(let value): "\"\(value.prefix(40))\""
        case .array: "an array"
        case .object: "an object"
        }
    }
}
