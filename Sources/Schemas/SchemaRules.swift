import Foundation

/// Pulsar's schema types, with the numbers `Schema.Type` has on the wire and the names the admin
/// API uses (`SchemaType` in Pulsar's Java client). BYTES never travels on the wire (a client with
/// the bytes schema sends no schema).
public enum SchemaType: String, Sendable, Codable, CaseIterable {
    case none = "NONE", string = "STRING", json = "JSON", protobuf = "PROTOBUF", avro = "AVRO"
    case boolean = "BOOLEAN", int8 = "INT8", int16 = "INT16", int32 = "INT32", int64 = "INT64"
    case float = "FLOAT", double = "DOUBLE", date = "DATE", time = "TIME", timestamp = "TIMESTAMP"
    case keyValue = "KEY_VALUE", instant = "INSTANT", localDate = "LOCAL_DATE", localTime = "LOCAL_TIME"
    case localDateTime = "LOCAL_DATE_TIME", protobufNative = "PROTOBUF_NATIVE"
    case bytes = "BYTES", autoConsume = "AUTO_CONSUME", autoPublish = "AUTO_PUBLISH", auto = "AUTO"

    /// `Schema.Type` of PulsarApi.proto; nil for the client-side types.
    public var wireNumber: Int? {
        switch self {
        case .none: 0
        case .string: 1
        case .json: 2
        case .protobuf: 3
        case .avro: 4
        case .boolean: 5
        case .int8: 6
        case .int16: 7
        case .int32: 8
        case .int64: 9
        case .float: 10
        case .double: 11
        case .date: 12
        case .time: 13
        case .timestamp: 14
        case .keyValue: 15
        case .instant: 16
        case .localDate: 17
        case .localTime: 18
        case .localDateTime: 19
        case .protobufNative: 20
        case .autoConsume: 21
        case .bytes, .autoPublish, .auto: nil
        }
    }

    public init?(wireNumber: Int) {
        guard let type = SchemaType.allCases.first(where: { $0.wireNumber == wireNumber }) else { return nil }
        self = type
    }

    /// Types whose definition is an Avro schema (JSON's too, as Pulsar's clients write them).
    var isAvroBased: Bool { self == .avro || self == .json || self == .protobuf }

    /// Types without a definition: the data must be empty.
    var isPrimitive: Bool {
        switch self {
        case .boolean, .int8, .int16, .int32, .int64, .float, .double, .date, .time, .timestamp,
             .instant, .localDate, .localTime, .localDateTime:
            true
        default:
            false
        }
    }
}

/// Pulsar's schema compatibility strategies, with its names.
public enum SchemaCompatibilityStrategy: String, Sendable, Codable, CaseIterable {
    case undefined = "UNDEFINED"
    case alwaysIncompatible = "ALWAYS_INCOMPATIBLE"
    case alwaysCompatible = "ALWAYS_COMPATIBLE"
    case backward = "BACKWARD"
    case forward = "FORWARD"
    case full = "FULL"
    case backwardTransitive = "BACKWARD_TRANSITIVE"
    case forwardTransitive = "FORWARD_TRANSITIVE"
    case fullTransitive = "FULL_TRANSITIVE"

    /// Checked against every version since the last deletion, not only the latest.
    public var isTransitive: Bool { self == .backwardTransitive || self == .forwardTransitive || self == .fullTransitive }
}

/// A schema as a client or the admin API gives it.
public struct SchemaDefinition: Sendable, Equatable {
    public var type: SchemaType
    public var data: [UInt8]
    public var properties: [String: String]

    public init(type: SchemaType, data: [UInt8], properties: [String: String] = [:]) {
        self.type = type
        self.data = data
        self.properties = properties
    }
}

/// One stored version of a topic's schema; a deletion is a version too (a tombstone), as in Pulsar.
public struct SchemaVersionRecord: Sendable, Equatable, Codable {
    public var version: Int64
    public var type: SchemaType
    /// The definition, base64 in the stored JSON.
    public var data: Data
    public var properties: [String: String]
    /// Milliseconds since 1970.
    public var timestamp: Int64
    public var deleted: Bool
    /// The role that stored it ("" without authentication).
    public var user: String

    public init(version: Int64, definition: SchemaDefinition, timestamp: Int64, deleted: Bool = false, user: String = "") {
        self.version = version
        self.type = definition.type
        self.data = Data(definition.data)
        self.properties = definition.properties
        self.timestamp = timestamp
        self.deleted = deleted
        self.user = user
    }

    public var definition: SchemaDefinition { SchemaDefinition(type: type, data: Array(data), properties: properties) }
}

/// Why a schema was refused. `invalid`: the definition itself (HTTP 422); `incompatible`: against
/// the stored versions under the strategy (HTTP 409; on the binary protocol both are
/// `IncompatibleSchema`, as in Pulsar).
public enum SchemaError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid(String)
    case incompatible(String)

    public var description: String {
        switch self {
        case .invalid(let text), .incompatible(let text): text
        }
    }
}

/// Pulsar's registry rules as pure functions over a topic's stored versions (oldest first).
public enum SchemaRules {
    /// Refuses a definition that cannot be used (Pulsar's `SchemaDataValidator`): AVRO, JSON and
    /// PROTOBUF must be Avro schemas (AVRO not a top-level union; defaults must fit their types);
    /// STRING's data is empty or `null`; primitives have none; KEY_VALUE's key and value are each
    /// valid; client-side types are refused.
    public static func validate(_ definition: SchemaDefinition) throws(SchemaError) {
        switch definition.type {
        case .avro, .json, .protobuf:
            let schema: AvroSchema
            do {
                schema = try AvroSchema.parse(definition.data)
            } catch {
                throw .invalid("Invalid schema definition data for \(definition.type.rawValue) schema: \(error.description)")
            }
            if definition.type == .avro, case .union = schema.root {
                throw .invalid("Avro schema typed [UNION] is not supported")
            }
        case .string:
            guard definition.data.isEmpty || definition.data == Array("null".utf8) else {
                throw .invalid("Invalid schema definition data for string schema : '\(String(decoding: definition.data.prefix(100), as: UTF8.self))'")
            }
        case .keyValue:
            let (key, value) = try KeyValueSchema.split(definition)
            try validate(key)
            try validate(value)
        case .protobufNative:
            _ = try ProtobufNativeSchema.parse(definition.data)
        case .none, .bytes:
            break
        case .autoConsume, .autoPublish, .auto:
            throw .invalid("Schema \(definition.type.rawValue) is a client-side schema type")
        default:
            guard definition.data.isEmpty else {
                throw .invalid("Invalid schema definition data for primitive schemas :length of schema data should be zero, but \(definition.data.count) bytes is found")
            }
        }
    }

    /// The versions after the last deletion (none if the latest is one).
    public static func live(_ versions: [SchemaVersionRecord]) -> [SchemaVersionRecord] {
        guard let last = versions.lastIndex(where: \.deleted) else { return versions }
        return Array(versions[(last + 1)...])
    }

    /// The live version `definition` is identical to: for Avro-based types the same parsed schema
    /// (formatting aside), else the same type and bytes. Properties do not count.
    public static func identical(_ definition: SchemaDefinition, in versions: [SchemaVersionRecord]) -> Int64? {
        let parsed = definition.type.isAvroBased ? try? AvroSchema.parse(definition.data) : nil
        let bytes = Data(definition.data)
        for stored in live(versions) where stored.type == definition.type {
            // (Pulsar compares SHA-256 digests of the bytes: the same as comparing the bytes.)
            if stored.data == bytes { return stored.version }
            if let parsed, let existing = try? AvroSchema.parse(stored.data), existing == parsed { return stored.version }
        }
        return nil
    }

    /// What storing `definition` means: the identical version to reuse, or the version to add
    /// after checking it against the live versions under `strategy`. Validates first.
    public enum Placement: Sendable, Equatable {
        case existing(Int64)
        case add(Int64)
    }

    public static func place(
        _ definition: SchemaDefinition, in versions: [SchemaVersionRecord], strategy: SchemaCompatibilityStrategy,
        autoUpdate: Bool = true
    ) throws(SchemaError) -> Placement {
        try validate(definition)
        if let version = identical(definition, in: versions) { return .existing(version) }
        guard autoUpdate else { throw .incompatible("Schema not found and schema auto updating is disabled.") }
        try checkCompatibility(definition, against: versions, strategy: strategy)
        return .add((versions.last?.version ?? -1) + 1)
    }

    /// Pulsar's producer-side (and REST) check: against the latest live version, or all of them
    /// for the transitive strategies. Nothing live: compatible.
    public static func checkCompatibility(
        _ definition: SchemaDefinition, against versions: [SchemaVersionRecord], strategy: SchemaCompatibilityStrategy
    ) throws(SchemaError) {
        if strategy == .alwaysCompatible { return }
        let live = live(versions)
        guard let latest = live.last else { return }
        let existing = strategy.isTransitive ? live : [latest]
        if let other = existing.first(where: { $0.type != definition.type }) {
            throw .incompatible("Incompatible schema: exists schema type \(other.type.rawValue), new schema type \(definition.type.rawValue)")
        }
        if !strategy.isTransitive, latest.data == Data(definition.data) { return }
        try check(definition, existing.reversed().map(\.definition), strategy: strategy)
    }

    /// Pulsar's consumer-side check (`checkConsumerCompatibility`): the consumer's schema must read
    /// the latest version (BACKWARD) for BACKWARD, FORWARD, FORWARD_TRANSITIVE and FULL; other
    /// strategies as for producers against every live version. No live schema: passes (whether a
    /// consumer may then register its schema is the topic's decision).
    public static func checkConsumer(
        _ definition: SchemaDefinition, against versions: [SchemaVersionRecord], strategy: SchemaCompatibilityStrategy
    ) throws(SchemaError) {
        if strategy == .alwaysCompatible { return }
        let live = live(versions)
        guard let latest = live.last else { return }
        switch strategy {
        case .backward, .forward, .forwardTransitive, .full:
            if latest.type != definition.type {
                throw .incompatible("Incompatible schema: exists schema type \(latest.type.rawValue), new schema type \(definition.type.rawValue)")
            }
            if latest.data == Data(definition.data) { return }
            try check(definition, [latest.definition], strategy: .backward)
        default:
            if let other = live.first(where: { $0.type != definition.type }) {
                throw .incompatible("Incompatible schema: exists schema type \(other.type.rawValue), new schema type \(definition.type.rawValue)")
            }
            try check(definition, live.reversed().map(\.definition), strategy: strategy)
        }
    }

    /// `definition` against `existing` (newest first, all of one type) under `strategy`.
    static func check(_ definition: SchemaDefinition, _ existing: [SchemaDefinition], strategy: SchemaCompatibilityStrategy) throws(SchemaError) {
        switch definition.type {
        case .avro, .json, .protobuf:
            try checkAvro(definition, existing, strategy: strategy)
        case .protobufNative:
            try checkProtobufNative(definition, existing, strategy: strategy)
        case .keyValue:
            let (key, value) = try KeyValueSchema.split(definition)
            var keys: [SchemaDefinition] = []
            var values: [SchemaDefinition] = []
            for stored in existing {
                let (storedKey, storedValue) = try KeyValueSchema.split(stored)
                guard storedKey.type == key.type, storedValue.type == value.type else {
                    throw .incompatible(
                        "Key schemas or Value schemas are different schema type, from key schema type is \(storedKey.type.rawValue) and to key schema is \(key.type.rawValue), from value schema is \(storedValue.type.rawValue) and to value schema is \(value.type.rawValue)")
                }
                keys.append(storedKey)
                values.append(storedValue)
            }
            try check(key, keys, strategy: strategy)
            try check(value, values, strategy: strategy)
        default:
            // Types without a definition to compare (strings, primitives).
            if strategy == .alwaysIncompatible || strategy == .undefined {
                throw .incompatible("Schema compatibility strategy is \(strategy.rawValue)")
            }
        }
    }

    /// The same directions as Avro's, with `ProtobufNativeSchema.problem` as "can read".
    private static func checkProtobufNative(
        _ definition: SchemaDefinition, _ existing: [SchemaDefinition], strategy: SchemaCompatibilityStrategy
    ) throws(SchemaError) {
        let new = try ProtobufNativeSchema.parse(definition.data)
        let scope = strategy.isTransitive ? existing : Array(existing.prefix(1))
        for stored in scope {
            guard let old = try? ProtobufNativeSchema.parse(stored.data) else { continue }
            try directions(strategy, newReadsOld: { ProtobufNativeSchema.problem(reader: new, writer: old) },
                           oldReadsNew: { ProtobufNativeSchema.problem(reader: old, writer: new) })
        }
    }

    /// Applies `strategy` to the two "can read" checks of one stored version.
    private static func directions(
        _ strategy: SchemaCompatibilityStrategy, newReadsOld: () -> String?, oldReadsNew: () -> String?
    ) throws(SchemaError) {
        var problems: [String] = []
        switch strategy {
        case .alwaysCompatible:
            return
        case .alwaysIncompatible, .undefined:
            throw .incompatible("Schema compatibility strategy is \(strategy.rawValue): no new version may be added")
        case .backward, .backwardTransitive:
            if let problem = newReadsOld() { problems.append("the new schema cannot read data written with the existing one: \(problem)") }
        case .forward, .forwardTransitive:
            if let problem = oldReadsNew() { problems.append("the existing schema cannot read data written with the new one: \(problem)") }
        case .full, .fullTransitive:
            if let problem = newReadsOld() { problems.append("the new schema cannot read data written with the existing one: \(problem)") }
            if let problem = oldReadsNew() { problems.append("the existing schema cannot read data written with the new one: \(problem)") }
        }
        if !problems.isEmpty {
            throw .incompatible("Incompatible schema under \(strategy.rawValue): \(problems.joined(separator: "; "))")
        }
    }

    private static func checkAvro(_ definition: SchemaDefinition, _ existing: [SchemaDefinition], strategy: SchemaCompatibilityStrategy) throws(SchemaError) {
        let new: AvroSchema
        do {
            new = try AvroSchema.parse(definition.data)
        } catch {
            throw .invalid("Invalid schema definition data for \(definition.type.rawValue) schema: \(error.description)")
        }
        let scope = strategy.isTransitive ? existing : Array(existing.prefix(1))
        for stored in scope {
            guard let old = try? AvroSchema.parse(stored.data) else {
                // A stored definition this build cannot parse (a legacy JSON schema): Pulsar lets the new one replace it.
                continue
            }
            try directions(strategy, newReadsOld: { AvroCompatibility.problem(reader: new, writer: old) },
                           oldReadsNew: { AvroCompatibility.problem(reader: old, writer: new) })
        }
    }
}

/// Pulsar's KEY_VALUE schema data: `[i32 BE key length][key][i32 BE value length][value]`, the
/// sub-schemas' types in the properties `key.schema.type` / `value.schema.type` (BYTES if absent).
public enum KeyValueSchema {
    public static func split(_ definition: SchemaDefinition) throws(SchemaError) -> (key: SchemaDefinition, value: SchemaDefinition) {
        let data = definition.data
        func length(at offset: Int) throws(SchemaError) -> Int {
            guard offset + 4 <= data.count else { throw .invalid("Invalid KEY_VALUE schema data: \(data.count) bytes end inside a length") }
            let value = data[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
            guard value >= 0, offset + 4 + value <= data.count else { throw .invalid("Invalid KEY_VALUE schema data: a length of \(value) runs past the end") }
            return value
        }
        let keyLength = try length(at: 0)
        let keyBytes = Array(data[4..<4 + keyLength])
        let valueLength = try length(at: 4 + keyLength)
        let valueBytes = Array(data[(8 + keyLength)..<(8 + keyLength + valueLength)])
        func type(_ key: String) throws(SchemaError) -> SchemaType {
            guard let name = definition.properties[key] else { return .bytes }
            guard let type = SchemaType(rawValue: name) else { throw .invalid("Invalid KEY_VALUE schema: \(key) '\(name)' is not a schema type") }
            return type
        }
        return (SchemaDefinition(type: try type("key.schema.type"), data: keyBytes),
                SchemaDefinition(type: try type("value.schema.type"), data: valueBytes))
    }
}
