/// Entry point of the fuzz target (`scripts/fuzz`): the embedded metadata store's log reader, fed
/// arbitrary bytes as a log file. It must return for every input. A pure function.
public enum MetadataFuzzing {
    public static func scanLog(_ bytes: UnsafeRawBufferPointer) {
        _ = try? MetadataLogFormat.scan(Array(bytes))
    }
}
