/// How a producer on a partitioned topic picks the partition of a message without a key. (A message
/// with a key always goes to `hash(key) % partitions`.)
public enum PartitionRoutingMode: Sendable, Hashable {
    /// Spread messages over all partitions: one message per partition without batching, one batch's
    /// worth (`batchingMaxMessages`, `batchingMaxBytes` or `batchingMaxPublishDelay`) with it — the
    /// C++ client's `RoundRobinDistribution` (the Python client's default).
    case roundRobin
    /// Send every keyless message to one partition, chosen at random when the producer is created.
    case singlePartition
}

/// The key hash of the official C++ client's default `HashingScheme::BoostHash`, which the Python
/// client (`pulsar-client` 3.x) uses for `partition_key` routing: `boost::hash<std::string>` of the
/// key's UTF-8 bytes as Boost ≥ 1.83 defines it for byte ranges (64-bit `mulx`-based hash_range with
/// seed 0), masked to a non-negative Int32. The partition is `boostHash(key) % partitions`. Pure.
enum KeyHash {
    private static let q: UInt64 = 0x9e37_79b9_7f4a_7c15
    private static let k: UInt64 = 0xdf44_2d22_ce48_59b9  // q * q

    /// High and low halves of the 128-bit product, xor-ed.
    private static func mulx(_ x: UInt64, _ y: UInt64) -> UInt64 {
        let (high, low) = x.multipliedFullWidth(by: y)
        return high ^ low
    }

    private static func readLittleEndian(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<count { value |= UInt64(bytes[offset + index]) << (8 * UInt64(index)) }
        return value
    }

    /// `boost::hash_range(seed = 0, bytes)` for a contiguous range of chars on a 64-bit platform.
    static func boostHashRange(_ bytes: [UInt8]) -> UInt64 {
        var count = bytes.count
        var offset = 0
        var w = mulx(q, k)  // mulx(seed + q, k) with seed 0
        var h = w ^ UInt64(count)
        while count >= 8 {
            let v = readLittleEndian(bytes, offset, 8)
            w &+= q
            h ^= mulx(v &+ w, k)
            offset += 8
            count -= 8
        }
        var v: UInt64 = 0
        if count >= 4 {
            v = readLittleEndian(bytes, offset + count - 4, 4) << (UInt64(count - 4) * 8) | readLittleEndian(bytes, offset, 4)
        } else if count >= 1 {
            let x1 = (count - 1) & 2
            let x2 = count >> 1
            v = UInt64(bytes[offset + x1]) << (UInt64(x1) * 8) | UInt64(bytes[offset + x2]) << (UInt64(x2) * 8)
                | UInt64(bytes[offset])
        }
        w &+= q
        h ^= mulx(v &+ w, k)
        return mulx(h &+ w, k)
    }

    /// The C++ client's `BoostHash::makeHash`: the hash truncated to 32 bits, sign bit cleared.
    static func boostHash(_ key: String) -> Int32 {
        Int32(truncatingIfNeeded: boostHashRange(Array(key.utf8)) & UInt64(Int32.max))
    }

    static func partition(forKey key: String, partitions: Int) -> Int {
        Int(boostHash(key)) % partitions
    }
}

/// Chooses the partition of each message of a partitioned producer (the C++ `RoundRobinMessageRouter`
/// and `SinglePartitionMessageRouter`). Owned by one producer on its event loop; a pure value.
struct PartitionRouter {
    let partitions: Int
    let mode: PartitionRoutingMode
    let isBatching: Bool
    let batchingMaxMessages: Int
    let batchingMaxBytes: Int
    let batchingMaxPublishDelayMs: Int64
    private var cursor: Int
    private var messagesOnCursor = 0
    private var bytesOnCursor = 0
    private var lastSwitchMs: Int64

    init(
        partitions: Int, mode: PartitionRoutingMode, isBatching: Bool, batchingMaxMessages: Int, batchingMaxBytes: Int,
        batchingMaxPublishDelayMs: Int64, startCursor: Int = Int.random(in: 0..<Int(Int32.max)), nowMs: Int64 = 0
    ) {
        precondition(partitions > 0, "a router needs at least one partition")
        self.partitions = partitions
        self.mode = mode
        self.isBatching = isBatching
        self.batchingMaxMessages = batchingMaxMessages
        self.batchingMaxBytes = batchingMaxBytes
        self.batchingMaxPublishDelayMs = batchingMaxPublishDelayMs
        self.cursor = startCursor
        self.lastSwitchMs = nowMs
    }

    /// The partition for one message. Empty keys count as no key (as in the official clients).
    mutating func partition(key: String?, sizeBytes: Int, nowMs: Int64) -> Int {
        if partitions == 1 { return 0 }
        if let key, !key.isEmpty { return KeyHash.partition(forKey: key, partitions: partitions) }
        switch mode {
        case .singlePartition:
            return cursor % partitions
        case .roundRobin where !isBatching:
            let partition = cursor % partitions
            cursor = cursor &+ 1
            return partition
        case .roundRobin:
            // Stay on one partition for a batch's worth of messages so batches fill up.
            if messagesOnCursor >= batchingMaxMessages || sizeBytes >= batchingMaxBytes - bytesOnCursor
                || nowMs - lastSwitchMs >= batchingMaxPublishDelayMs
            {
                cursor = (cursor &+ 1) & Int(Int32.max)
                lastSwitchMs = nowMs
                bytesOnCursor = sizeBytes
                messagesOnCursor = 1
                return cursor % partitions
            }
            messagesOnCursor += 1
            bytesOnCursor += sizeBytes
            return cursor % partitions
        }
    }
}
