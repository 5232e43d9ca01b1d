import Foundation
import PulsarProtocol

/// A producer's or consumer's schema, sent with PRODUCER / SUBSCRIBE as the official clients send
/// it (`Schema{name, schema_data, type, properties}`); the broker's registry checks it and the
/// producer stamps the version it answers on every message. The definition is passed through:
/// encoding values is the application's (a string's UTF-8, a JSON or Avro encoder of its choice).
public struct SchemaInfo: Sendable, Equatable {
    /// `Schema.Type` of PulsarApi.proto (the types a client sends).
    public enum Kind: Int, Sendable {
        case string = 1, json = 2, protobuf = 3, avro = 4, keyValue = 15, protobufNative = 20
    }

    public var kind: Kind
    /// The name the Python and C++ clients send (`"STRING"`, `"JSON"`, `"AVRO"`, ...).
    public var name: String
    /// The definition: an Avro record schema (JSON text) for JSON and AVRO; empty for STRING.
    public var definition: [UInt8]
    public var properties: [String: String]

    public init(kind: Kind, name: String? = nil, definition: [UInt8], properties: [String: String] = [:]) {
        self.kind = kind
        self.name = name ?? Self.defaultName(kind)
        self.definition = definition
        self.properties = properties
    }

    /// UTF-8 strings (the Python client's `StringSchema` sends the definition `null`; so does this).
    public static let string = SchemaInfo(kind: .string, definition: Array("null".utf8))

    /// JSON values described by an Avro record schema (`definition`: its JSON text).
    public static func json(definition: String) -> SchemaInfo {
        SchemaInfo(kind: .json, definition: Array(definition.utf8))
    }

    /// Avro-encoded values of the record schema `definition` (its JSON text).
    public static func avro(definition: String) -> SchemaInfo {
        SchemaInfo(kind: .avro, definition: Array(definition.utf8))
    }

    static func defaultName(_ kind: Kind) -> String {
        switch kind {
        case .string: "STRING"
        case .json: "JSON"
        case .protobuf: "PROTOBUF"
        case .avro: "AVRO"
        case .keyValue: "KeyValue"
        case .protobufNative: "PROTOBUF_NATIVE"
        }
    }

    var wire: Pulsar_Proto_Schema {
        var schema = Pulsar_Proto_Schema()
        schema.name = name
        schema.schemaData = Data(definition)
        schema.type = Pulsar_Proto_Schema.TypeEnum(rawValue: kind.rawValue) ?? .none
        schema.properties = properties.sorted { $0.key < $1.key }.map { key, value in
            var property = Pulsar_Proto_KeyValue()
            property.key = key
            property.value = value
            return property
        }
        return schema
    }

    /// The version in a `schema_version` field: 8 bytes, big-endian; nil if absent or shorter.
    static func version(_ bytes: some Collection<UInt8>) -> Int64? {
        guard bytes.count >= 8 else { return nil }
        return bytes.prefix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }
}
