import LedgerStorage

extension ReplicatedLedgerStore {
    /// Other brokers write these ledgers too: a ledger taken over is fenced before reuse.
    public var isShared: Bool { true }
}
