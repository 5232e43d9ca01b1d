/// Whether data written with one Avro schema can be read with another: the resolution rules of the
/// Avro specification ("Schema Resolution"), as Pulsar's broker applies them through Avro's
/// resolving grammar:
/// - same primitives match; the promotions int → long, float, double; long → float, double;
///   float → double; string ↔ bytes;
/// - arrays by their items, maps by their values;
/// - records: fields are matched by name (or a reader field's aliases); a writer field the reader
///   lacks is skipped; a reader field the writer lacks needs a default. Record names are not
///   compared (Pulsar's resolver does not, so `OrderV1` evolves into `OrderV2`);
/// - enums: the unqualified names (or a reader alias) must match; every writer symbol must be a
///   reader symbol unless the reader has a default symbol;
/// - fixed: the unqualified names (or a reader alias) and the sizes must match;
/// - a writer union: each of its branches must be readable; a reader union (writer not a union):
///   some branch must read the writer — the same type first, then a promotion.
public enum AvroCompatibility {
    /// Why `reader` cannot read what `writer` wrote; nil: it can.
    public static func problem(reader: AvroSchema, writer: AvroSchema) -> String? {
        var resolver = Resolver(reader: reader, writer: writer)
        return resolver.resolve(reader.root, writer.root, path: "")
    }

    public static func canRead(reader: AvroSchema, writer: AvroSchema) -> Bool {
        problem(reader: reader, writer: writer) == nil
    }

    private struct Resolver {
        let reader: AvroSchema
        let writer: AvroSchema
        /// Record pairs being resolved (assumed compatible while their fields are checked): ends recursion.
        var inProgress: Set<[String]> = []
        var depth = 0

        init(reader: AvroSchema, writer: AvroSchema) {
            self.reader = reader
            self.writer = writer
        }

        mutating func resolve(_ r: AvroType, _ w: AvroType, path: String) -> String? {
            depth += 1
            defer { depth -= 1 }
            guard depth <= AvroLimits.maxDepth * 2 else { return "the schemas nest too deeply to compare at \(place(path))" }
            if case .union(let writerBranches) = w {
                for (index, branch) in writerBranches.enumerated() {
                    if let problem = resolve(r, branch, path: path) {
                        return "writer union branch \(index) (\(branch.describe(in: writer))): \(problem)"
                    }
                }
                return nil
            }
            if case .union(let readerBranches) = r {
                // The same kind first (a named type of the same name; a structurally compatible record),
                // then a promotion.
                for branch in readerBranches where sameKind(branch, w) {
                    var trial = self
                    if trial.resolve(branch, w, path: path) == nil { return nil }
                }
                for branch in readerBranches where !sameKind(branch, w) {
                    var trial = self
                    if trial.resolve(branch, w, path: path) == nil { return nil }
                }
                return "no branch of the reader's \(r.describe(in: reader)) can read the writer's \(w.describe(in: writer)) at \(place(path))"
            }
            switch (r, w) {
            case (.null, .null), (.boolean, .boolean), (.int, .int), (.long, .long), (.float, .float),
                 (.double, .double), (.bytes, .bytes), (.string, .string):
                return nil
            case (.long, .int), (.float, .int), (.float, .long), (.double, .int), (.double, .long), (.double, .float),
                 (.bytes, .string), (.string, .bytes):
                return nil
            case (.array(let readerItems), .array(let writerItems)):
                return resolve(readerItems, writerItems, path: path + "[]")
            case (.map(let readerValues), .map(let writerValues)):
                return resolve(readerValues, writerValues, path: path + "{}")
            case (.named(let readerName), .named(let writerName)):
                return resolveNamed(readerName, writerName, path: path)
            default:
                return "the reader's \(r.describe(in: reader)) cannot read the writer's \(w.describe(in: writer)) at \(place(path))"
            }
        }

        private func sameKind(_ r: AvroType, _ w: AvroType) -> Bool {
            switch (r, w) {
            case (.array, .array), (.map, .map): return true
            case (.named(let readerName), .named(let writerName)):
                switch (reader.names[readerName], writer.names[writerName]) {
                case (.record?, .record?): return true
                case (.enumeration?, .enumeration?), (.fixed?, .fixed?): return readerName == writerName
                default: return false
                }
            default: return r == w
            }
        }

        private mutating func resolveNamed(_ readerName: String, _ writerName: String, path: String) -> String? {
            guard let readerType = reader.names[readerName], let writerType = writer.names[writerName] else {
                return "undefined type at \(place(path))"
            }
            switch (readerType, writerType) {
            case (.record(let readerRecord), .record(let writerRecord)):
                let key = [readerName, writerName]
                guard inProgress.insert(key).inserted else { return nil }
                defer { inProgress.remove(key) }
                for field in readerRecord.fields {
                    let fieldPath = path.isEmpty ? field.name : "\(path).\(field.name)"
                    let written = writerRecord.fields.first { $0.name == field.name }
                        ?? writerRecord.fields.first { field.aliases.contains($0.name) }
                    guard let written else {
                        if field.defaultValue == nil {
                            return "field '\(fieldPath)' is in the reader's record \(readerRecord.name.name) but not in the writer's \(writerRecord.name.name), and has no default"
                        }
                        continue
                    }
                    if let problem = resolve(field.type, written.type, path: fieldPath) { return problem }
                }
                return nil
            case (.enumeration(let readerEnum), .enumeration(let writerEnum)):
                guard namesMatch(readerType, writerType) else {
                    return "the reader's enum \(readerEnum.name.fullName) and the writer's \(writerEnum.name.fullName) have different names at \(place(path))"
                }
                if readerEnum.defaultSymbol == nil, let missing = writerEnum.symbols.first(where: { !readerEnum.symbols.contains($0) }) {
                    return "the writer's enum \(writerEnum.name.fullName) has the symbol '\(missing)', which the reader's lacks (and the reader's enum has no default) at \(place(path))"
                }
                return nil
            case (.fixed(let readerFixed), .fixed(let writerFixed)):
                guard namesMatch(readerType, writerType) else {
                    return "the reader's fixed \(readerFixed.name.fullName) and the writer's \(writerFixed.name.fullName) have different names at \(place(path))"
                }
                guard readerFixed.size == writerFixed.size else {
                    return "fixed \(readerFixed.name.fullName) is \(readerFixed.size) bytes in the reader and \(writerFixed.size) in the writer at \(place(path))"
                }
                return nil
            default:
                return "the reader's \(AvroType.named(readerName).describe(in: reader)) cannot read the writer's \(AvroType.named(writerName).describe(in: writer)) at \(place(path))"
            }
        }

        /// Unqualified names equal, or the writer's full name among the reader's aliases.
        private func namesMatch(_ readerType: AvroNamedType, _ writerType: AvroNamedType) -> Bool {
            readerType.name.name == writerType.name.name || readerType.aliases.contains(writerType.name.fullName)
        }

        private func place(_ path: String) -> String {
            path.isEmpty ? "the top level" : "'\(path)'"
        }
    }
}
