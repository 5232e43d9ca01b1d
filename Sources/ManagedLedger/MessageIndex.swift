/// The message index of one ledger: which entry holds the ledger's n-th message, and where the
/// first entry published at or after a time lies, answered from blocks of
/// `MessageIndex.entriesPerBlock` entries without reading entries one by one (at most one block is
/// read to finish an answer). A pure value.
///
/// Offsets are gap-free and per topic: a topic's messages are numbered 0, 1, 2, ... in log order,
/// an entry holding a batch of n messages takes n offsets (Kafka's offsets, Pulsar's broker entry
/// index). A ledger's index counts messages from the ledger's start; the managed ledger adds the
/// ledger's first offset (`LedgerInfo.firstOffset`).
///
/// Publish times need not rise (producers set them): each block keeps the highest publish time of
/// any entry up to its end, a running maximum that never falls, so the first block whose maximum
/// reaches a time holds the first entry published at or after it, and every entry before that
/// block was published before it.
public struct MessageIndex: Sendable, Equatable {
    public static let entriesPerBlock: Int64 = 64
    package static let formatVersion: UInt8 = 1

    /// Entries indexed (the ledger's entries 0..<entries).
    public private(set) var entries: Int64 = 0
    /// Messages in those entries.
    public private(set) var messages: Int64 = 0
    /// Per block: the ledger-relative offset of its first entry's first message.
    private var blockFirstMessage: [Int64] = []
    /// Per block: the highest publish time of any entry from the ledger's start to the block's end
    /// (to the last entry, for the last block).
    private var blockMaxPublishTime: [Int64] = []

    public init() {}

    /// The highest publish time in the ledger, or nil if it is empty.
    public var maxPublishTimeMs: Int64? { blockMaxPublishTime.last }

    /// Indexes the next entry (entry id `entries`).
    public mutating func append(numMessages: Int32, publishTimeMs: Int64) {
        if entries % Self.entriesPerBlock == 0 {
            blockFirstMessage.append(messages)
            blockMaxPublishTime.append(max(publishTimeMs, blockMaxPublishTime.last ?? .min))
        } else {
            blockMaxPublishTime[blockMaxPublishTime.count - 1] = max(blockMaxPublishTime[blockMaxPublishTime.count - 1], publishTimeMs)
        }
        messages += Int64(max(numMessages, 0))
        entries += 1
    }

    /// A block: its entry ids, and the ledger-relative offset of its first message.
    public struct Block: Sendable, Equatable {
        public var entries: ClosedRange<Int64>
        public var firstMessage: Int64
    }

    private func block(_ index: Int) -> Block {
        let first = Int64(index) * Self.entriesPerBlock
        return Block(entries: first...min(first + Self.entriesPerBlock - 1, entries - 1), firstMessage: blockFirstMessage[index])
    }

    /// The block holding entry `entryID`, or nil if the ledger has no such entry.
    public func block(containingEntry entryID: Int64) -> Block? {
        guard entryID >= 0, entryID < entries else { return nil }
        return block(Int(entryID / Self.entriesPerBlock))
    }

    /// The block holding the ledger-relative message `message`, or nil if the ledger has no such message.
    public func block(containingMessage message: Int64) -> Block? {
        guard message >= 0, message < messages else { return nil }
        // The last block whose first message is at or before `message`.
        var low = 0
        var high = blockFirstMessage.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if blockFirstMessage[middle] <= message { low = middle } else { high = middle - 1 }
        }
        return block(low)
    }

    /// The block holding the first entry published at or after `timestampMs`, or nil if every
    /// entry was published before it. Every entry before the block was published before it.
    public func block(firstPublishedAtOrAfter timestampMs: Int64) -> Block? {
        guard let last = blockMaxPublishTime.last, last >= timestampMs else { return nil }
        var low = 0
        var high = blockMaxPublishTime.count - 1
        while low < high {
            let middle = (low + high) / 2
            if blockMaxPublishTime[middle] >= timestampMs { high = middle } else { low = middle + 1 }
        }
        return block(low)
    }

    /// Within a block read back (`numMessages` of its entries, in order), the entry holding the
    /// ledger-relative message `message`, as an index into the block; nil if it is not there.
    public static func entry(holding message: Int64, in block: Block, numMessages: [Int32]) -> Int? {
        var first = block.firstMessage
        for (index, count) in numMessages.enumerated() {
            let count = Int64(max(count, 0))
            if message >= first && message < first + count { return index }
            first += count
        }
        return nil
    }

    // MARK: encoding (the value of `MetadataKeys.messageIndex`)

    /// `[u8 version][i64 entries][i64 messages][u32 blocks]` then per block
    /// `[i64 firstMessage][i64 maxPublishTimeMs]`, big-endian.
    public func encode() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(21 + 16 * blockFirstMessage.count)
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
        }
        put(Self.formatVersion)
        put(entries)
        put(messages)
        put(UInt32(blockFirstMessage.count))
        for index in blockFirstMessage.indices {
            put(blockFirstMessage[index])
            put(blockMaxPublishTime[index])
        }
        return bytes
    }

    public struct DecodingError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Decodes what `encode` wrote, checking that the blocks fit the bytes and the entry count.
    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> MessageIndex {
        var offset = 0
        func get<T: FixedWidthInteger>(_: T.Type) throws(DecodingError) -> T {
            let size = MemoryLayout<T>.size
            guard offset + size <= bytes.count else { throw DecodingError(description: "ledger index is truncated") }
            var value: T = 0
            for byte in bytes[offset..<offset + size] { value = value << 8 | T(byte) }
            offset += size
            return value
        }
        guard try get(UInt8.self) == formatVersion else {
            throw DecodingError(description: "ledger index has an unknown format version")
        }
        var index = MessageIndex()
        index.entries = try get(Int64.self)
        index.messages = try get(Int64.self)
        let blocks = Int(try get(UInt32.self))
        guard index.entries >= 0, index.messages >= 0, blocks <= (bytes.count - offset) / 16,
              Int64(blocks) == (index.entries + entriesPerBlock - 1) / entriesPerBlock
        else { throw DecodingError(description: "ledger index is damaged: \(blocks) blocks for \(index.entries) entries") }
        index.blockFirstMessage.reserveCapacity(blocks)
        index.blockMaxPublishTime.reserveCapacity(blocks)
        for _ in 0..<blocks {
            index.blockFirstMessage.append(try get(Int64.self))
            index.blockMaxPublishTime.append(try get(Int64.self))
        }
        guard offset == bytes.count else { throw DecodingError(description: "ledger index has trailing bytes") }
        return index
    }
}
