import PulsarProtocol

/// Where a message is stored: the entry `(ledgerID, entryID)` of its topic, the partition (-1 for a
/// non-partitioned topic) and, for a message that travelled in a batch, its index in that batch (else -1).
///
/// A pure value. Ordered in log order (ledger, entry, batch index) so cumulative acks can compare ids.
public struct MessageID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var ledgerID: Int64
    public var entryID: Int64
    public var partition: Int32
    public var batchIndex: Int32
    /// How many messages the entry holds (1 unless it is a batch). Not part of the identity.
    public var batchSize: Int32

    public init(ledgerID: Int64, entryID: Int64, partition: Int32 = -1, batchIndex: Int32 = -1, batchSize: Int32 = 1) {
        self.ledgerID = ledgerID
        self.entryID = entryID
        self.partition = partition
        self.batchIndex = batchIndex
        self.batchSize = batchSize
    }

    /// The id from the wire (`ledgerId`/`entryId` are uint64 carrying signed sentinels; notes §2.1).
    init(_ data: Pulsar_Proto_MessageIdData, batchIndex: Int32 = -1, batchSize: Int32 = 1) {
        self.init(
            ledgerID: Int64(bitPattern: data.ledgerID), entryID: Int64(bitPattern: data.entryID),
            partition: data.hasPartition ? data.partition : -1, batchIndex: batchIndex, batchSize: batchSize)
    }

    /// The id from a hand-decoded receipt or delivery.
    init(_ fields: MessageIDFields, batchIndex: Int32 = -1, batchSize: Int32 = 1) {
        self.init(
            ledgerID: Int64(bitPattern: fields.ledgerID), entryID: Int64(bitPattern: fields.entryID),
            partition: fields.partition ?? -1, batchIndex: batchIndex, batchSize: batchSize)
    }

    /// The entry-level id for ACK and REDELIVER (no partition, no batch index).
    var entryData: Pulsar_Proto_MessageIdData {
        var data = Pulsar_Proto_MessageIdData()
        data.ledgerID = UInt64(bitPattern: ledgerID)
        data.entryID = UInt64(bitPattern: entryID)
        return data
    }

    public static func == (lhs: MessageID, rhs: MessageID) -> Bool {
        lhs.ledgerID == rhs.ledgerID && lhs.entryID == rhs.entryID && lhs.partition == rhs.partition
            && lhs.batchIndex == rhs.batchIndex
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ledgerID)
        hasher.combine(entryID)
        hasher.combine(partition)
        hasher.combine(batchIndex)
    }

    public static func < (lhs: MessageID, rhs: MessageID) -> Bool {
        (lhs.ledgerID, lhs.entryID, lhs.batchIndex) < (rhs.ledgerID, rhs.entryID, rhs.batchIndex)
    }

    public var description: String { "(\(ledgerID),\(entryID),\(partition),\(batchIndex))" }
}
