import Foundation
import Testing

@testable import Schemas

/// Pulsar's registry rules over stored versions: reuse, strategies (latest or transitive),
/// type changes, deletions, auto-update off, and definition validation.
@Suite struct SchemaRulesTests {
    static func avro(_ fields: String) -> SchemaDefinition {
        SchemaDefinition(type: .avro, data: Array(#"{"type":"record","name":"Order","fields":[\#(fields)]}"#.utf8))
    }

    static let v1 = avro(#"{"name":"id","type":"string"}"#)
    /// v1 plus a field with a default: FULL-compatible with v1.
    static let v2 = avro(#"{"name":"id","type":"string"},{"name":"note","type":["null","string"],"default":null}"#)
    /// v1 plus a field without a default: only FORWARD-compatible (old readers skip it).
    static let v2NoDefault = avro(#"{"name":"id","type":"string"},{"name":"qty","type":"int"}"#)
    /// v2 without `id`, and a required field: BACKWARD from v2 only if id had a default (it does not).
    static let idAsInt = avro(#"{"name":"id","type":"int"}"#)

    static func stored(_ definitions: [SchemaDefinition]) -> [SchemaVersionRecord] {
        definitions.enumerated().map { SchemaVersionRecord(version: Int64($0.offset), definition: $0.element, timestamp: 0) }
    }

    @Test func firstVersionIsZeroAndIdenticalOnesAreReused() throws {
        #expect(try SchemaRules.place(Self.v1, in: [], strategy: .full) == .add(0))
        let versions = Self.stored([Self.v1, Self.v2])
        #expect(try SchemaRules.place(Self.v1, in: versions, strategy: .full) == .existing(0))
        // The same definition formatted differently is the same schema.
        let spaced = SchemaDefinition(type: .avro, data: Array(#"{ "type" : "record", "name" : "Order", "fields" : [ { "name" : "id", "type" : "string" } ] }"#.utf8))
        #expect(try SchemaRules.place(spaced, in: versions, strategy: .full) == .existing(0))
    }

    @Test func strategiesDecideWhichDirectionMustRead() throws {
        let versions = Self.stored([Self.v1])
        #expect(try SchemaRules.place(Self.v2, in: versions, strategy: .full) == .add(1))
        #expect(throws: SchemaError.self) { try SchemaRules.place(Self.v2NoDefault, in: versions, strategy: .full) }
        #expect(throws: SchemaError.self) { try SchemaRules.place(Self.v2NoDefault, in: versions, strategy: .backward) }
        #expect(try SchemaRules.place(Self.v2NoDefault, in: versions, strategy: .forward) == .add(1))
        #expect(throws: SchemaError.self) { try SchemaRules.place(Self.idAsInt, in: versions, strategy: .forward) }
        #expect(try SchemaRules.place(Self.idAsInt, in: versions, strategy: .alwaysCompatible) == .add(1))
        #expect(throws: SchemaError.self) { try SchemaRules.place(Self.v2, in: versions, strategy: .alwaysIncompatible) }
    }

    @Test func transitiveStrategiesCheckEveryLiveVersion() throws {
        // v0 has `qty` as an int; v1 dropped it; v2 brings it back as a string without a default.
        let withQty = Self.avro(#"{"name":"id","type":"string"},{"name":"qty","type":"int","default":0}"#)
        let qtyString = Self.avro(#"{"name":"id","type":"string"},{"name":"qty","type":"string","default":""}"#)
        let versions = Self.stored([withQty, Self.v1])
        // Against the latest (v1, no qty) it is fine; against v0 the qty types clash.
        #expect(try SchemaRules.place(qtyString, in: versions, strategy: .backward) == .add(2))
        let error = #expect(throws: SchemaError.self) { try SchemaRules.place(qtyString, in: versions, strategy: .backwardTransitive) }
        #expect(error?.description.contains("qty") == true)
    }

    @Test func aTypeChangeIsIncompatibleWithPulsarsMessage() {
        let versions = Self.stored([Self.v1])
        let json = SchemaDefinition(type: .json, data: Self.v1.data)
        #expect(throws: SchemaError.incompatible("Incompatible schema: exists schema type AVRO, new schema type JSON")) {
            try SchemaRules.place(json, in: versions, strategy: .full)
        }
    }

    @Test func aDeletionEndsTheHistory() throws {
        var versions = Self.stored([Self.v1])
        versions.append(SchemaVersionRecord(version: 1, definition: SchemaDefinition(type: .none, data: []), timestamp: 0, deleted: true))
        #expect(SchemaRules.live(versions).isEmpty)
        // Anything may follow a deletion, with the next number.
        #expect(try SchemaRules.place(Self.idAsInt, in: versions, strategy: .full) == .add(2))
        #expect(SchemaRules.identical(Self.v1, in: versions) == nil)
    }

    @Test func autoUpdateOffOnlyReuses() throws {
        let versions = Self.stored([Self.v1])
        #expect(try SchemaRules.place(Self.v1, in: versions, strategy: .full, autoUpdate: false) == .existing(0))
        #expect(throws: SchemaError.incompatible("Schema not found and schema auto updating is disabled.")) {
            try SchemaRules.place(Self.v2, in: versions, strategy: .full, autoUpdate: false)
        }
    }

    @Test func consumersMustReadTheLatest() throws {
        let versions = Self.stored([Self.v1])
        // A consumer's schema with a field the data lacks and no default cannot read it.
        #expect(throws: SchemaError.self) { try SchemaRules.checkConsumer(Self.v2NoDefault, against: versions, strategy: .full) }
        try SchemaRules.checkConsumer(Self.v2, against: versions, strategy: .full)
        try SchemaRules.checkConsumer(Self.v1, against: versions, strategy: .forward)
    }

    @Test func definitionsAreValidated() {
        let invalid: [SchemaDefinition] = [
            SchemaDefinition(type: .avro, data: Array("{".utf8)),
            SchemaDefinition(type: .avro, data: Array(#"["null","string"]"#.utf8)),
            SchemaDefinition(type: .string, data: Array("x".utf8)),
            SchemaDefinition(type: .int32, data: [1]),
            SchemaDefinition(type: .autoConsume, data: []),
            Self.avro(#"{"name":"a","type":"int","default":"x"}"#),
        ]
        for definition in invalid {
            #expect(throws: SchemaError.self, "\(definition.type) \(String(decoding: definition.data, as: UTF8.self))") {
                try SchemaRules.validate(definition)
            }
        }
        #expect(throws: Never.self) { try SchemaRules.validate(SchemaDefinition(type: .string, data: Array("null".utf8))) }
    }

    @Test func keyValueSchemasCheckTheirParts() throws {
        func kv(_ key: SchemaDefinition, _ value: SchemaDefinition) -> SchemaDefinition {
            var data: [UInt8] = []
            for part in [key.data, value.data] {
                data += withUnsafeBytes(of: UInt32(part.count).bigEndian, Array.init) + part
            }
            return SchemaDefinition(type: .keyValue, data: data, properties: [
                "key.schema.type": key.type.rawValue, "value.schema.type": value.type.rawValue,
            ])
        }
        let string = SchemaDefinition(type: .string, data: [])
        let versions = Self.stored([kv(string, Self.v1)])
        #expect(try SchemaRules.place(kv(string, Self.v2), in: versions, strategy: .full) == .add(1))
        #expect(throws: SchemaError.self) { try SchemaRules.place(kv(string, Self.v2NoDefault), in: versions, strategy: .full) }
        #expect(throws: SchemaError.self) { try SchemaRules.place(kv(Self.v1, Self.v1), in: versions, strategy: .full) }
    }
}
