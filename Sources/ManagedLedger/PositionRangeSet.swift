/// A set of positions stored as disjoint, non-adjacent closed ranges of entry ids per ledger.
///
/// Holds the individually acknowledged entries beyond a cursor's mark-delete position: acking
/// every other message of a million costs half a million ranges at worst, acking in order costs one.
/// A pure value.
public struct PositionRangeSet: Sendable, Equatable {
    /// ledgerID → sorted, disjoint, non-adjacent ranges of entry ids.
    package private(set) var ranges: [Int64: [ClosedRange<Int64>]] = [:]

    public init() {}

    public var isEmpty: Bool { ranges.isEmpty }

    /// Number of ranges (what a snapshot must store).
    public var rangeCount: Int { ranges.values.reduce(0) { $0 + $1.count } }

    /// Number of positions in the set.
    public var count: Int64 { ranges.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.upperBound - $1.lowerBound + 1 } } }

    /// Index of the first range whose upperBound >= entryID.
    private static func firstIndex(in list: [ClosedRange<Int64>], notBelow entryID: Int64) -> Int {
        var low = 0
        var high = list.count
        while low < high {
            let mid = (low + high) / 2
            if list[mid].upperBound < entryID { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public func contains(_ position: Position) -> Bool {
        guard let list = ranges[position.ledgerID] else { return false }
        let index = Self.firstIndex(in: list, notBelow: position.entryID)
        return index < list.count && list[index].contains(position.entryID)
    }

    /// The range of the ledger that contains `position`, if any.
    public func range(containing position: Position) -> ClosedRange<Int64>? {
        guard let list = ranges[position.ledgerID] else { return nil }
        let index = Self.firstIndex(in: list, notBelow: position.entryID)
        return index < list.count && list[index].contains(position.entryID) ? list[index] : nil
    }

    /// Inserts `entries` of a ledger, merging with neighbours.
    public mutating func insert(ledgerID: Int64, entries: ClosedRange<Int64>) {
        var list = ranges[ledgerID] ?? []
        var lower = entries.lowerBound
        var upper = entries.upperBound
        // First range that could touch [lower, upper]: upperBound >= lower - 1.
        let start = Self.firstIndex(in: list, notBelow: lower == Int64.min ? lower : lower - 1)
        var end = start
        while end < list.count, list[end].lowerBound <= (upper == Int64.max ? upper : upper + 1) {
            lower = min(lower, list[end].lowerBound)
            upper = max(upper, list[end].upperBound)
            end += 1
        }
        list.replaceSubrange(start..<end, with: [lower...upper])
        ranges[ledgerID] = list
    }

    public mutating func insert(_ position: Position) {
        insert(ledgerID: position.ledgerID, entries: position.entryID...position.entryID)
    }

    /// Removes every position <= `position`.
    public mutating func removeAll(upTo position: Position) {
        for ledgerID in Array(ranges.keys) where ledgerID <= position.ledgerID {
            if ledgerID < position.ledgerID {
                ranges[ledgerID] = nil
                continue
            }
            var list = ranges[ledgerID]!
            list = list.compactMap { range in
                if range.upperBound <= position.entryID { return nil }
                if range.lowerBound <= position.entryID { return (position.entryID + 1)...range.upperBound }
                return range
            }
            ranges[ledgerID] = list.isEmpty ? nil : list
        }
    }

    /// Removes every position >= `position`.
    public mutating func removeAll(from position: Position) {
        for ledgerID in Array(ranges.keys) where ledgerID >= position.ledgerID {
            if ledgerID > position.ledgerID {
                ranges[ledgerID] = nil
                continue
            }
            var list = ranges[ledgerID]!
            list = list.compactMap { range in
                if range.lowerBound >= position.entryID { return nil }
                if range.upperBound >= position.entryID { return range.lowerBound...(position.entryID - 1) }
                return range
            }
            ranges[ledgerID] = list.isEmpty ? nil : list
        }
    }

    /// All ranges in log order, as (ledgerID, range).
    public var allRanges: [(ledgerID: Int64, entries: ClosedRange<Int64>)] {
        ranges.keys.sorted().flatMap { ledgerID in ranges[ledgerID]!.map { (ledgerID, $0) } }
    }
}
