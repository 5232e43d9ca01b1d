import Foundation
import Testing

@testable import Schemas

/// Avro's schema-resolution rules, one case per rule, each checked in both directions: `reader`
/// reading what `writer` wrote, and the reverse.
@Suite struct AvroCompatibilityTests {
    struct Case: CustomStringConvertible, Sendable {
        var rule: String
        var reader: String
        var writer: String
        /// Whether `reader` can read `writer`'s data.
        var readable: Bool
        /// Whether `writer` can read `reader`'s data.
        var reverse: Bool
        var description: String { rule }
    }

    static func record(_ fields: String, name: String = "Order") -> String {
        #"{"type":"record","name":"\#(name)","fields":[\#(fields)]}"#
    }

    static let cases: [Case] = [
        Case(rule: "same primitive", reader: #""string""#, writer: #""string""#, readable: true, reverse: true),
        Case(rule: "int promotes to long", reader: #""long""#, writer: #""int""#, readable: true, reverse: false),
        Case(rule: "int promotes to float", reader: #""float""#, writer: #""int""#, readable: true, reverse: false),
        Case(rule: "int promotes to double", reader: #""double""#, writer: #""int""#, readable: true, reverse: false),
        Case(rule: "long promotes to float", reader: #""float""#, writer: #""long""#, readable: true, reverse: false),
        Case(rule: "long promotes to double", reader: #""double""#, writer: #""long""#, readable: true, reverse: false),
        Case(rule: "float promotes to double", reader: #""double""#, writer: #""float""#, readable: true, reverse: false),
        Case(rule: "string and bytes read each other", reader: #""bytes""#, writer: #""string""#, readable: true, reverse: true),
        Case(rule: "boolean and int do not mix", reader: #""int""#, writer: #""boolean""#, readable: false, reverse: false),
        Case(rule: "a string field is not a float", reader: record(#"{"name":"amount","type":"float"}"#),
             writer: record(#"{"name":"amount","type":"string"}"#), readable: false, reverse: false),
        Case(rule: "arrays by their items", reader: #"{"type":"array","items":"long"}"#,
             writer: #"{"type":"array","items":"int"}"#, readable: true, reverse: false),
        Case(rule: "maps by their values", reader: #"{"type":"map","values":"double"}"#,
             writer: #"{"type":"map","values":"float"}"#, readable: true, reverse: false),
        Case(rule: "an array is not a map", reader: #"{"type":"array","items":"int"}"#,
             writer: #"{"type":"map","values":"int"}"#, readable: false, reverse: false),
        Case(rule: "a new field with a default is read from old data; old readers skip it",
             reader: record(#"{"name":"id","type":"string"},{"name":"note","type":["null","string"],"default":null}"#),
             writer: record(#"{"name":"id","type":"string"}"#), readable: true, reverse: true),
        Case(rule: "a new field without a default cannot be read from old data",
             reader: record(#"{"name":"id","type":"string"},{"name":"note","type":["null","string"]}"#),
             writer: record(#"{"name":"id","type":"string"}"#), readable: false, reverse: true),
        Case(rule: "a field found through the reader's aliases",
             reader: record(#"{"name":"customer","type":"string","aliases":["user_id"]}"#),
             writer: record(#"{"name":"user_id","type":"string"}"#), readable: true, reverse: false),
        Case(rule: "record names are not compared (OrderV1 evolves into OrderV2)",
             reader: record(#"{"name":"id","type":"string"}"#, name: "OrderV2"),
             writer: record(#"{"name":"id","type":"string"}"#, name: "OrderV1"), readable: true, reverse: true),
        Case(rule: "nested records field by field",
             reader: record(#"{"name":"line","type":{"type":"record","name":"Line","fields":[{"name":"qty","type":"long"}]}}"#),
             writer: record(#"{"name":"line","type":{"type":"record","name":"Line","fields":[{"name":"qty","type":"int"}]}}"#),
             readable: true, reverse: false),
        Case(rule: "enum: a writer symbol the reader lacks", reader: #"{"type":"enum","name":"Color","symbols":["RED","GREEN"]}"#,
             writer: #"{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}"#, readable: false, reverse: true),
        Case(rule: "enum: a reader default covers unknown symbols",
             reader: #"{"type":"enum","name":"Color","symbols":["RED","GREEN"],"default":"RED"}"#,
             writer: #"{"type":"enum","name":"Color","symbols":["RED","GREEN","BLUE"]}"#, readable: true, reverse: true),
        Case(rule: "enum: names must match", reader: #"{"type":"enum","name":"Colour","symbols":["RED"]}"#,
             writer: #"{"type":"enum","name":"Color","symbols":["RED"]}"#, readable: false, reverse: false),
        Case(rule: "enum: a reader alias matches the writer's name",
             reader: #"{"type":"enum","name":"Colour","aliases":["Color"],"symbols":["RED"]}"#,
             writer: #"{"type":"enum","name":"Color","symbols":["RED"]}"#, readable: true, reverse: false),
        Case(rule: "fixed: sizes must match", reader: #"{"type":"fixed","name":"Hash","size":16}"#,
             writer: #"{"type":"fixed","name":"Hash","size":32}"#, readable: false, reverse: false),
        Case(rule: "fixed: same name and size", reader: #"{"type":"fixed","name":"Hash","size":16}"#,
             writer: #"{"type":"fixed","name":"Hash","size":16}"#, readable: true, reverse: true),
        Case(rule: "a reader union reads a writer branch type", reader: #"["null","string"]"#, writer: #""string""#,
             readable: true, reverse: false),
        Case(rule: "a reader union reads through a promotion", reader: #"["null","double"]"#, writer: #""int""#,
             readable: true, reverse: false),
        Case(rule: "a writer union: every branch must be readable", reader: #"["null","long"]"#, writer: #"["null","int"]"#,
             readable: true, reverse: false),
        Case(rule: "a writer union with a branch the reader lacks", reader: #"["null","string"]"#,
             writer: #"["null","string","int"]"#, readable: false, reverse: true),
        Case(rule: "a recursive record", reader: #"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
             writer: #"{"type":"record","name":"Node","fields":[{"name":"next","type":["null","Node"]}]}"#,
             readable: true, reverse: true),
        Case(rule: "named types in a namespace", reader: #"{"type":"record","name":"a.Order","fields":[{"name":"k","type":{"type":"enum","name":"Kind","symbols":["X"]}},{"name":"k2","type":"a.Kind"}]}"#,
             writer: #"{"type":"record","name":"Order","namespace":"a","fields":[{"name":"k","type":{"type":"enum","name":"Kind","symbols":["X"]}},{"name":"k2","type":"Kind"}]}"#,
             readable: true, reverse: true),
    ]

    @Test(arguments: cases)
    func resolution(_ c: Case) throws {
        let reader = try AvroSchema.parse(Array(c.reader.utf8))
        let writer = try AvroSchema.parse(Array(c.writer.utf8))
        #expect(AvroCompatibility.canRead(reader: reader, writer: writer) == c.readable, "\(c.rule): reader reads writer")
        #expect(AvroCompatibility.canRead(reader: writer, writer: reader) == c.reverse, "\(c.rule): writer reads reader")
    }

    @Test func problemsNameTheField() throws {
        let reader = try AvroSchema.parse(Array(Self.record(#"{"name":"amount","type":"float"}"#).utf8))
        let writer = try AvroSchema.parse(Array(Self.record(#"{"name":"amount","type":"string"}"#).utf8))
        let problem = try #require(AvroCompatibility.problem(reader: reader, writer: writer))
        #expect(problem.contains("'amount'"))
        #expect(problem.contains("float") && problem.contains("string"))
    }
}

@Suite struct AvroSchemaParsingTests {
    static let invalid: [(String, String)] = [
        ("not JSON", "{"),
        ("an unknown type name", #""decimal""#),
        ("a record without fields", #"{"type":"record","name":"R"}"#),
        ("a bad name", #"{"type":"record","name":"1R","fields":[]}"#),
        ("a duplicate field", #"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}"#),
        ("a string default for an int", #"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":"x"}]}"#),
        ("an int default out of range", #"{"type":"record","name":"R","fields":[{"name":"a","type":"int","default":4294967296}]}"#),
        ("a union default not of the first branch", #"{"type":"record","name":"R","fields":[{"name":"a","type":["null","string"],"default":"x"}]}"#),
        ("a union inside a union", #"["null",["int","string"]]"#),
        ("a union with two strings", #"["string","string"]"#),
        ("an enum default that is not a symbol", #"{"type":"enum","name":"E","symbols":["A"],"default":"B"}"#),
        ("a name defined twice", #"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"fixed","name":"F","size":1}},{"name":"b","type":{"type":"fixed","name":"F","size":2}}]}"#),
        ("a fixed without a size", #"{"type":"fixed","name":"F"}"#),
    ]

    @Test func refusesInvalidDefinitions() {
        for (what, text) in Self.invalid {
            #expect(throws: AvroSchemaError.self, "\(what)") { try AvroSchema.parse(Array(text.utf8)) }
        }
    }

    @Test func readsWhatThePythonClientSends() throws {
        // json.dumps(Order.schema(), indent=True) for `class Order(Record): user_id = String(); amount = Float()`.
        let text = """
            {
             "type": "record",
             "name": "Order",
             "fields": [
              {
               "name": "user_id",
               "type": [
                "null",
                "string"
               ]
              },
              {
               "name": "amount",
               "type": [
                "null",
                "float"
               ]
              }
             ]
            }
            """
        let schema = try AvroSchema.parse(Array(text.utf8))
        guard case .record(let record)? = schema.names["Order"] else {
            Issue.record("no record Order")
            return
        }
        #expect(record.fields.map(\.name) == ["user_id", "amount"])
        #expect(record.fields[1].type == .union([.null, .float]))
        // The same schema compact is the same schema.
        let compact = #"{"type":"record","name":"Order","fields":[{"name":"user_id","type":["null","string"]},{"name":"amount","type":["null","float"]}]}"#
        #expect(try AvroSchema.parse(Array(compact.utf8)) == schema)
    }
}
