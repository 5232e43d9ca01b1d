import Foundation
import SwiftProtobuf
import Testing

@testable import Schemas

/// PROTOBUF_NATIVE definitions: Pulsar's JSON around a FileDescriptorSet, compared by field
/// numbers and types.
@Suite struct ProtobufNativeTests {
    typealias FieldType = Google_Protobuf_FieldDescriptorProto.TypeEnum

    static func definition(
        _ fields: [(String, Int32, FieldType)], message: String = "Order", required: Set<String> = []
    ) -> SchemaDefinition {
        var descriptor = Google_Protobuf_DescriptorProto()
        descriptor.name = message
        descriptor.field = fields.map { name, number, type in
            var field = Google_Protobuf_FieldDescriptorProto()
            field.name = name
            field.number = number
            field.type = type
            field.label = required.contains(name) ? .required : .optional
            return field
        }
        var file = Google_Protobuf_FileDescriptorProto()
        file.name = "order.proto"
        file.package = "shop"
        file.messageType = [descriptor]
        var set = Google_Protobuf_FileDescriptorSet()
        set.file = [file]
        let bytes = try! set.serializedBytes() as [UInt8]
        let json = #"{"fileDescriptorSet":"\#(Data(bytes).base64EncodedString())","rootMessageTypeName":"shop.\#(message)","rootFileDescriptorName":"order.proto"}"#
        return SchemaDefinition(type: .protobufNative, data: Array(json.utf8))
    }

    static func stored(_ definitions: [SchemaDefinition]) -> [SchemaVersionRecord] {
        definitions.enumerated().map { SchemaVersionRecord(version: Int64($0.offset), definition: $0.element, timestamp: 0) }
    }

    static let v1 = definition([("user_id", 1, .string), ("amount", 2, .float)])

    @Test func addedAndRenamedFieldsAreCompatible() throws {
        let added = Self.definition([("user", 1, .string), ("amount", 2, .float), ("coupon", 3, .string)])
        #expect(try SchemaRules.place(added, in: Self.stored([Self.v1]), strategy: .full) == .add(1))
    }

    @Test func aFieldNumberChangingTypeIsIncompatible() throws {
        let changed = Self.definition([("user_id", 1, .string), ("amount", 2, .string)])
        let error = #expect(throws: SchemaError.self) { try SchemaRules.place(changed, in: Self.stored([Self.v1]), strategy: .full) }
        #expect(error?.description.contains("field 2 (amount)") == true)
        #expect(try SchemaRules.place(changed, in: Self.stored([Self.v1]), strategy: .alwaysCompatible) == .add(1))
    }

    @Test func theRootMessageMayNotChange() {
        let other = Self.definition([("user_id", 1, .string)], message: "Invoice")
        #expect(throws: SchemaError.self) { try SchemaRules.place(other, in: Self.stored([Self.v1]), strategy: .full) }
    }

    @Test func aNewRequiredFieldCannotBeReadFromOldData() throws {
        let required = Self.definition([("user_id", 1, .string), ("amount", 2, .float), ("id", 3, .int64)], required: ["id"])
        #expect(throws: SchemaError.self) { try SchemaRules.place(required, in: Self.stored([Self.v1]), strategy: .backward) }
        #expect(try SchemaRules.place(required, in: Self.stored([Self.v1]), strategy: .forward) == .add(1))
    }

    @Test func invalidDefinitionsAreRefused() {
        for text in ["{", #"{"fileDescriptorSet":"!!","rootMessageTypeName":"a.B"}"#, #"{"fileDescriptorSet":"","rootMessageTypeName":"a.B"}"#] {
            #expect(throws: SchemaError.self, "\(text)") {
                try SchemaRules.validate(SchemaDefinition(type: .protobufNative, data: Array(text.utf8)))
            }
        }
    }
}
