import LedgerStorage
import Metadata
import NIOCore

/// Per-topic message offsets and publish times (`MessageIndex`): the offset of an entry, the entry
/// of an offset, the retained offsets, the first entry published at or after a time — each from
/// the ledgers' indexes and at most one block of entries read back.
extension ManagedLedger {
    /// The index of a ledger: the open one's, one loaded before, the one written at its roll, or
    /// rebuilt by reading the ledger back (then written, so the next load need not). nil if the
    /// ledger is gone or one of its entries cannot be read now. Called off the loop.
    package func index(ofLedger ledgerID: Int64) async -> MessageIndex? {
        let known = try? await eventLoop.submit { () -> (MessageIndex?, LedgerInfo?) in
            (self.indexes[ledgerID], self.ledgers.first { $0.ledgerID == ledgerID })
        }.get()
        guard let (cached, info) = known, let info else { return nil }
        if let cached { return cached }
        let key = MetadataKeys.messageIndex(ofManagedLedger: metadataKey, ledgerID: ledgerID)
        let index: MessageIndex
        if let stored = try? await metadata.get(key), let decoded = try? MessageIndex.decode(stored.value),
           decoded.entries == info.entries
        {
            index = decoded
        } else {
            guard let rebuilt = await rebuildIndex(ledgerID: ledgerID, entries: info.entries) else { return nil }
            index = rebuilt
            _ = try? await metadata.put(key, value: index.encode(), expectedVersion: nil)
        }
        _ = try? await eventLoop.submit { self.installIndex(index, ofLedger: ledgerID) }.get()
        return index
    }

    /// Counts a closed ledger's messages by reading it back, a batch of entries at a time.
    private func rebuildIndex(ledgerID: Int64, entries: Int64) async -> MessageIndex? {
        var index = MessageIndex()
        var first: Int64 = 0
        while first < entries {
            let last = min(first + Int64(ManagedLedgerLimits.readAheadBatch) - 1, entries - 1)
            let results = (try? await readStoredEntries(ledgerID: ledgerID, firstEntryID: first, lastEntryID: last).get()) ?? []
            for (offset, result) in results.enumerated() {
                guard case .success(let buffer) = result else {
                    logger.warning("managed-ledger.index-rebuild-failed", metadata: [
                        "topic": "\(name)", "ledger.id": "\(ledgerID)", "entry.id": "\(first + Int64(offset))",
                        "hint": "an entry cannot be read, so the ledger's messages cannot be counted; offsets wait until it can",
                    ])
                    return nil
                }
                let fields = Entry.indexFields(of: buffer)
                index.append(numMessages: fields.numMessages, publishTimeMs: fields.publishTimeMs)
            }
            guard results.count == Int(last - first + 1) else { return nil }
            first = last + 1
        }
        return index
    }

    /// On the loop: loads or rebuilds the index of the closed ledger at `position` of `ledgers`
    /// in a task, unless it is at hand or on its way.
    package func countMessages(ofLedgerAt position: Int) {
        eventLoop.preconditionInEventLoop()
        let ledgerID = ledgers[position].ledgerID
        guard indexes[ledgerID] == nil, !indexLoads.contains(ledgerID) else { return }
        indexLoads.insert(ledgerID)
        Task {
            _ = await self.index(ofLedger: ledgerID)
            _ = try? await self.eventLoop.submit { self.indexLoads.remove(ledgerID) }.get()
        }
    }

    /// Every ledger with its index and first offset, the indexes loaded or rebuilt first; nil if
    /// one cannot be counted now.
    private func indexedLedgers() async -> [(info: LedgerInfo, index: MessageIndex)]? {
        let ledgerIDs = (try? await eventLoop.submit { self.ledgers.map(\.ledgerID) }.get()) ?? []
        for ledgerID in ledgerIDs { _ = await index(ofLedger: ledgerID) }
        let snapshot = try? await eventLoop.submit { () -> [(info: LedgerInfo, index: MessageIndex)]? in
            var indexed: [(info: LedgerInfo, index: MessageIndex)] = []
            for info in self.ledgers {
                guard let index = self.indexes[info.ledgerID], info.firstOffset != nil else { return nil }
                indexed.append((info, index))
            }
            return indexed
        }.get()
        return snapshot ?? nil
    }

    /// The offset of the first retained message and the offset the next message will take (Kafka's
    /// log start offset and high watermark); nil if a ledger's messages cannot be counted now.
    package func offsetBounds() async -> (first: Int64, next: Int64)? {
        guard let ledgers = await indexedLedgers(), let first = ledgers.first, let last = ledgers.last else { return nil }
        return (first.info.firstOffset!, last.info.firstOffset! + last.index.messages)
    }

    /// The entry holding message `offset`, and the offset of that entry's first message; nil if
    /// the offset is not retained (trimmed, or not written yet) or cannot be looked up now.
    package func position(ofOffset offset: Int64) async -> (position: Position, firstOffset: Int64)? {
        guard let ledgers = await indexedLedgers() else { return nil }
        for (info, index) in ledgers {
            let ledgerFirst = info.firstOffset!
            guard offset >= ledgerFirst, offset < ledgerFirst + index.messages,
                  let block = index.block(containingMessage: offset - ledgerFirst)
            else { continue }
            guard let counts = await numMessages(ofLedger: info.ledgerID, entries: block.entries),
                  let at = MessageIndex.entry(holding: offset - ledgerFirst, in: block, numMessages: counts)
            else { return nil }
            let before = counts[..<at].reduce(Int64(0)) { $0 + Int64(max($1, 0)) }
            return (Position(ledgerID: info.ledgerID, entryID: block.entries.lowerBound + Int64(at)),
                    ledgerFirst + block.firstMessage + before)
        }
        return nil
    }

    /// The offset of the first message of the entry at `position`, nil if there is no such entry
    /// or it cannot be looked up now.
    package func offset(of position: Position) async -> Int64? {
        guard let ledgers = await indexedLedgers(),
              let (info, index) = ledgers.first(where: { $0.info.ledgerID == position.ledgerID }),
              let block = index.block(containingEntry: position.entryID)
        else { return nil }
        guard position.entryID > block.entries.lowerBound else { return info.firstOffset! + block.firstMessage }
        guard let counts = await numMessages(ofLedger: info.ledgerID, entries: block.entries.lowerBound...(position.entryID - 1))
        else { return nil }
        return info.firstOffset! + block.firstMessage + counts.reduce(Int64(0)) { $0 + Int64(max($1, 0)) }
    }

    /// The message counts of a run of entries, read back; nil if one cannot be read.
    private func numMessages(ofLedger ledgerID: Int64, entries: ClosedRange<Int64>) async -> [Int32]? {
        let entries = await entriesWithoutBlocking(entries.map { Position(ledgerID: ledgerID, entryID: $0) })
        var counts: [Int32] = []
        counts.reserveCapacity(entries.count)
        for entry in entries {
            guard let entry else { return nil }
            counts.append(entry.attributes.numMessages)
        }
        return counts
    }

    /// The first entry published at or after `timestampMs`, nil if none: the ledgers' indexes name
    /// the one block that holds it, and only that block is read. If an entry of that block cannot
    /// be read and no readable one qualifies, the first unreadable one is the answer (it is the one
    /// whose time the index saw). If a ledger's index cannot be had now, the log is scanned in
    /// batches instead, passing over unreadable entries. Called off the loop.
    package func firstPosition(publishedAtOrAfter timestampMs: Int64) async -> Position? {
        guard let ledgers = await indexedLedgers() else { return await scanFirstPosition(publishedAtOrAfter: timestampMs) }
        for (info, index) in ledgers {
            guard let block = index.block(firstPublishedAtOrAfter: timestampMs) else { continue }
            let positions = block.entries.map { Position(ledgerID: info.ledgerID, entryID: $0) }
            let entries = await entriesWithoutBlocking(positions)
            if let found = entries.firstIndex(where: { ($0?.attributes.publishTimeMs ?? .min) >= timestampMs }) {
                return positions[found]
            }
            if let unreadable = entries.firstIndex(where: { $0 == nil }) { return positions[unreadable] }
        }
        return nil
    }

    /// The linear scan `firstPosition(publishedAtOrAfter:)` falls back on.
    private func scanFirstPosition(publishedAtOrAfter timestampMs: Int64) async -> Position? {
        var after: Position?
        while true {
            let batch = await positions(after: after, limit: ManagedLedgerLimits.readAheadBatch)
            guard let last = batch.last else { return nil }
            let times = await publishTimes(of: batch)
            for (index, time) in times.enumerated() where (time ?? .min) >= timestampMs {
                return batch[index]
            }
            after = last
        }
    }

    /// On the loop, from the indexes at hand and without reading: the last entry after `start`
    /// such that it and every entry between are known to be published before `cutoffMs`, or nil.
    /// A closed ledger whose index is not at hand ends the walk and has its index loaded, for the
    /// next call (message expiry runs every pass).
    package func lastEntryKnownPublished(before cutoffMs: Int64, after start: Position) -> Position? {
        eventLoop.preconditionInEventLoop()
        var result: Position?
        for (position, info) in ledgers.enumerated() where info.ledgerID >= start.ledgerID && info.entries > 0 {
            guard let index = indexes[info.ledgerID] else {
                countMessages(ofLedgerAt: position)
                break
            }
            if let block = index.block(firstPublishedAtOrAfter: cutoffMs) {
                if block.entries.lowerBound > 0 {
                    result = Position(ledgerID: info.ledgerID, entryID: block.entries.lowerBound - 1)
                }
                break
            }
            result = Position(ledgerID: info.ledgerID, entryID: info.entries - 1)
        }
        guard let result, result > start else { return nil }
        return result
    }
}

/// Reads by offset for protocols that address messages by offset (Kafka's Fetch and Produce).
extension ManagedLedger {
    /// On the loop, from a publisher's reply (which runs right after the entry was indexed): the
    /// offset of the appended entry's first message, or nil when the open ledger's first offset is
    /// not known yet (after a ledger closed by recovery; `offset(of:)` finds it then).
    package func offsetOfAppended(_ position: Position, numMessages: Int32) -> Int64? {
        eventLoop.preconditionInEventLoop()
        guard let info = ledgers.last, info.ledgerID == position.ledgerID, let first = info.firstOffset,
              let index = indexes[position.ledgerID], index.entries == position.entryID + 1
        else { return nil }
        return first + index.messages - Int64(max(numMessages, 0))
    }

    /// The offset the next message will take, from the open ledger's index, without waiting; nil
    /// when it is not known yet.
    package func nextOffsetOnLoop() -> Int64? {
        eventLoop.preconditionInEventLoop()
        guard let info = ledgers.last, let first = info.firstOffset, let index = indexes[info.ledgerID] else { return nil }
        return first + index.messages
    }

    /// Up to `maxEntries` entries from `position` on (inclusive), stopping once `maxBytes` of
    /// bodies are collected (the first entry always comes); the recent ones from the tail cache,
    /// the rest read from storage. An unreadable entry ends the run.
    package func entries(from position: Position, maxEntries: Int, maxBytes: Int) async -> [(position: Position, entry: Entry)] {
        let planned = try? await eventLoop.submit { () -> [(Position, Entry?)] in
            guard self.contains(position) else { return [] }
            var result: [(Position, Entry?)] = []
            var current: Position? = position
            var bytes = 0
            while let at = current, result.count < maxEntries, bytes < maxBytes || result.isEmpty {
                let cached = self.tailCache.entry(at: at).flatMap { try? Entry.decode($0) }
                bytes += cached?.body.readableBytes ?? 0
                result.append((at, cached))
                current = self.next(after: at)
            }
            return result
        }.get()
        guard let planned else { return [] }
        let missing = planned.filter { $0.1 == nil }.map(\.0)
        var read = missing.isEmpty ? [] : await entriesWithoutBlocking(missing)[...]
        var result: [(position: Position, entry: Entry)] = []
        var bytes = 0
        for (at, cached) in planned {
            let entry: Entry?
            if let cached { entry = cached } else { entry = read.popFirst() ?? nil }
            guard let entry else { break }
            if !result.isEmpty, bytes + entry.body.readableBytes > maxBytes { break }
            bytes += entry.body.readableBytes
            result.append((at, entry))
        }
        return result
    }
}
