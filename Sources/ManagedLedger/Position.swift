/// A position in a managed ledger: (ledgerID, entryID). Ordered by ledger, then entry.
///
/// Ledger ids grow over a topic's life, so tuple order is log order. `(L, -1)` means "before the
/// first entry of ledger L"; `(-1, -1)` is before everything. A pure value.
public struct Position: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var ledgerID: Int64
    public var entryID: Int64

    public init(ledgerID: Int64, entryID: Int64) {
        self.ledgerID = ledgerID
        self.entryID = entryID
    }

    /// Before every entry of every ledger.
    public static let beforeEverything = Position(ledgerID: -1, entryID: -1)

    /// The position just before this one in the same ledger (may be `(L, -1)`).
    public var previousInLedger: Position { Position(ledgerID: ledgerID, entryID: entryID - 1) }

    public static func < (lhs: Position, rhs: Position) -> Bool {
        (lhs.ledgerID, lhs.entryID) < (rhs.ledgerID, rhs.entryID)
    }

    public var description: String { "\(ledgerID):\(entryID)" }
}
