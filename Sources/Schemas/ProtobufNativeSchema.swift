import Foundation
import SwiftProtobuf

/// A PROTOBUF_NATIVE definition as Pulsar's clients write it (`ProtobufNativeSchemaData`): JSON
/// `{"fileDescriptorSet": "<base64 FileDescriptorSet>", "rootMessageTypeName": "pkg.Message",
/// "rootFileDescriptorName": "file.proto"}`, read down to the root message's fields.
public struct ProtobufNativeSchema: Sendable, Equatable {
    public struct Field: Sendable, Equatable {
        public var name: String
        public var type: Google_Protobuf_FieldDescriptorProto.TypeEnum
        /// For message and enum fields: the type's full name.
        public var typeName: String
        public var isRepeated: Bool
        public var isRequired: Bool
    }

    /// The root message's full name (`pkg.Message`).
    public let rootMessage: String
    /// Its fields by number.
    public let fields: [Int32: Field]

    public static func parse(_ data: [UInt8]) throws(SchemaError) -> ProtobufNativeSchema {
        func invalid(_ why: String) -> SchemaError { .invalid("Invalid schema definition data for PROTOBUF_NATIVE schema: \(why)") }
        guard case .object(let object)? = JSONValue.parse(data) else {
            throw invalid("not a JSON object with fileDescriptorSet, rootMessageTypeName and rootFileDescriptorName")
        }
        guard let encoded = object["fileDescriptorSet"]?.stringValue, let bytes = Data(base64Encoded: encoded) else {
            throw invalid("fileDescriptorSet is not base64")
        }
        guard let root = object["rootMessageTypeName"]?.stringValue, !root.isEmpty else {
            throw invalid("no rootMessageTypeName")
        }
        let set: Google_Protobuf_FileDescriptorSet
        do {
            set = try Google_Protobuf_FileDescriptorSet(serializedBytes: bytes)
        } catch {
            throw invalid("fileDescriptorSet does not decode (\(error))")
        }
        let fileName = object["rootFileDescriptorName"]?.stringValue
        for file in set.file where fileName == nil || file.name == fileName {
            if let message = find(root, in: file.messageType, prefix: file.package.isEmpty ? "" : file.package + ".") {
                var fields: [Int32: Field] = [:]
                for field in message.field {
                    fields[field.number] = Field(
                        name: field.name, type: field.type, typeName: field.typeName.hasPrefix(".") ? String(field.typeName.dropFirst()) : field.typeName,
                        isRepeated: field.label == .repeated, isRequired: field.label == .required)
                }
                return ProtobufNativeSchema(rootMessage: root, fields: fields)
            }
        }
        throw invalid("the message \(root) is not in \(fileName ?? "the descriptor set")")
    }

    private static func find(_ name: String, in messages: [Google_Protobuf_DescriptorProto], prefix: String) -> Google_Protobuf_DescriptorProto? {
        for message in messages {
            let full = prefix + message.name
            if full == name { return message }
            if name.hasPrefix(full + "."), let nested = find(name, in: message.nestedType, prefix: full + ".") { return nested }
        }
        return nil
    }

    /// Why `reader` cannot read what `writer` wrote; nil: it can. The root message may not change;
    /// a field number both have must keep its type (and repeatedness); a required reader field the
    /// writer lacks cannot be read. Renamed fields are fine (the wire has only numbers).
    public static func problem(reader: ProtobufNativeSchema, writer: ProtobufNativeSchema) -> String? {
        guard reader.rootMessage == writer.rootMessage else {
            return "PROTOBUF_NATIVE does not allow schema change the root message type (\(writer.rootMessage) to \(reader.rootMessage))"
        }
        for number in reader.fields.keys.sorted() {
            let field = reader.fields[number]!
            guard let written = writer.fields[number] else {
                if field.isRequired { return "required field \(number) (\(field.name)) is not in the writer's \(writer.rootMessage)" }
                continue
            }
            if field.type != written.type || field.typeName != written.typeName {
                return "field \(number) (\(field.name)) is \(describe(field)) in the reader and \(describe(written)) in the writer"
            }
            if field.isRepeated != written.isRepeated {
                return "field \(number) (\(field.name)) is repeated in one schema and not in the other"
            }
        }
        return nil
    }

    private static func describe(_ field: Field) -> String {
        field.typeName.isEmpty ? "\(field.type)" : "\(field.type) \(field.typeName)"
    }
}
