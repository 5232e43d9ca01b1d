import PayloadCompression

/// How a producer compresses each entry's payload: Pulsar's `CompressionType` (NONE 0, LZ4 1, ZLIB 2,
/// ZSTD 3, SNAPPY 4), defined with the codecs in `PayloadCompression`.
public typealias CompressionType = PayloadCompression.CompressionType
