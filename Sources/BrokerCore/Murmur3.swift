/// MurmurHash3, x86 32-bit variant — the hash Pulsar uses for Key_Shared (the key's hash picks its
/// consumer) and that clients use for key routing. A pure function.
public enum Murmur3 {
    public static func hash32<Bytes: Collection>(_ bytes: Bytes, seed: UInt32 = 0) -> UInt32 where Bytes.Element == UInt8 {
        let c1: UInt32 = 0xCC9E_2D51
        let c2: UInt32 = 0x1B87_3593
        var h = seed
        var iterator = bytes.makeIterator()
        var tail: UInt32 = 0
        var tailCount = 0
        var length = 0
        while let byte = iterator.next() {
            tail |= UInt32(byte) << (8 * UInt32(tailCount))
            tailCount += 1
            length += 1
            if tailCount == 4 {
                var k = tail
                k = k &* c1
                k = (k << 15) | (k >> 17)
                k = k &* c2
                h ^= k
                h = (h << 13) | (h >> 19)
                h = h &* 5 &+ 0xE654_6B64
                tail = 0
                tailCount = 0
            }
        }
        if tailCount > 0 {
            var k = tail
            k = k &* c1
            k = (k << 15) | (k >> 17)
            k = k &* c2
            h ^= k
        }
        h ^= UInt32(truncatingIfNeeded: length)
        h ^= h >> 16
        h = h &* 0x85EB_CA6B
        h ^= h >> 13
        h = h &* 0xC2B2_AE35
        h ^= h >> 16
        return h
    }

    /// Pulsar's sticky-key hash: Murmur3 & Int32.max.
    public static func stickyKeyHash<Bytes: Collection>(_ key: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        hash32(key) & 0x7FFF_FFFF
    }
}
