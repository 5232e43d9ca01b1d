import Foundation
import LedgerStorage
import Logging
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import TieredStorage

/// One ledger of a managed ledger, as recorded in metadata.
package struct LedgerInfo: Codable, Sendable, Equatable {
    package var ledgerID: Int64
    /// Number of entries; for the open ledger, the number confirmed so far (not kept up to date in metadata).
    package var entries: Int64
    package var sizeBytes: Int64
    package var closed: Bool
    /// When the ledger was opened (epoch ms); retention ages a ledger by its last entry's time,
    /// approximated by when the next ledger opened.
    package var createdAtMs: Int64?
    /// Closed by recovery (a restart or a takeover fenced it) rather than by a roll: retention keeps
    /// it until it would have rolled by age, so a restart deletes nothing an uninterrupted broker
    /// keeps. nil in records written before this field, and for rolled ledgers.
    package var closedByRecovery: Bool?
    /// The topic offset of the ledger's first message (offsets are gap-free and per topic: see
    /// `MessageIndex`). nil until known: after a ledger closed by recovery, whose messages are counted
    /// by reading it back when first needed, and in records written before offsets.
    package var firstOffset: Int64?
    /// Messages in the ledger; nil until known (the open ledger's, until it rolls; see `firstOffset`).
    package var messages: Int64?
    /// Where the ledger's entries were offloaded (tiered storage), once an offload completed.
    package var offloaded: OffloadedLedgerLocation?
    /// When that offload completed (epoch ms): the deletion lag counts from it.
    package var offloadedAtMs: Int64?
    /// The local copy (the store's, the storage nodes') was deleted after the offload: every read
    /// of the ledger goes to the tier.
    package var localDeleted: Bool?

    /// Whether the ledger's entries are read from the tier only.
    package var readsFromTier: Bool { offloaded != nil && localDeleted == true }
}

/// The metadata record of a managed ledger: `/managed-ledgers/<tenant>/<ns>/<domain>/<topic>`.
package struct ManagedLedgerRecord: Codable, Sendable {
    package var ledgers: [LedgerInfo]

    /// Fills in each ledger's first offset from its neighbours' (forward: previous first offset +
    /// previous messages; backward: next first offset - messages). In a record where no ledger has
    /// one (written before offsets), the first ledger starts at offset 0. Returns the offset the
    /// message after the last ledger takes, if known.
    @discardableResult
    package static func resolveOffsets(_ ledgers: inout [LedgerInfo]) -> Int64? {
        guard !ledgers.isEmpty else { return nil }
        if ledgers.allSatisfy({ $0.firstOffset == nil }) { ledgers[0].firstOffset = 0 }
        for index in ledgers.indices.dropFirst() where ledgers[index].firstOffset == nil {
            let previous = ledgers[index - 1]
            if let first = previous.firstOffset, let messages = previous.messages {
                ledgers[index].firstOffset = first + messages
            }
        }
        for index in ledgers.indices.dropLast().reversed() where ledgers[index].firstOffset == nil {
            if let next = ledgers[index + 1].firstOffset, let messages = ledgers[index].messages {
                ledgers[index].firstOffset = next - messages
            }
        }
        let last = ledgers[ledgers.count - 1]
        return last.firstOffset.flatMap { first in last.messages.map { first + $0 } }
    }
}

/// Limits of a managed ledger.
/// Limits of a managed ledger, in one place (docs/LIMITS.md).
public enum ManagedLedgerLimits {
    /// Entries fetched ahead from the store (they are not in the tail cache), per managed ledger,
    /// and their bytes: past either, the oldest fetched entries are dropped (read again if needed).
    public static let maxReadAheadEntries = 1_000
    public static let maxReadAheadBytes = 64 * 1024 * 1024
    /// Entries one dispatch pass asks the store for at once when they are not at hand.
    public static let readAheadBatch = 100
    /// Entries a forward fetch (a consumer catching up, `readAhead(forward:)`) asks for at once:
    /// fewer, larger range reads (each a hop to the thread pool and back). Two such batches at
    /// most are held at a time, well inside `maxReadAheadEntries`.
    public static let forwardReadBatch = 300
}

public struct ManagedLedgerConfiguration: Sendable {
    /// Roll to a new ledger after this many entries.
    public var maxEntriesPerLedger: Int64 = 50_000
    /// Roll to a new ledger after this many bytes.
    public var maxSizePerLedgerBytes: Int64 = 512 * 1024 * 1024
    /// Roll a ledger that holds entries once it is this old (Pulsar: managedLedgerMaxLedgerRolloverTimeMinutes).
    public var maxLedgerAge: TimeAmount = .hours(4)
    /// A ledger is not rolled for its entry or size limit before it is this old (Pulsar:
    /// managedLedgerMinLedgerRolloverTimeMinutes; Pulsar's default is 10 minutes, ours 0, so the
    /// entry limit alone rolls — the limits of `--max-entries-per-ledger` stay exact).
    public var minLedgerAge: TimeAmount = .zero
    /// How new ledgers are replicated (nil: the client's default; the local client ignores it).
    public var replication: LedgerReplicationOptions?
    /// The wall clock of everything time-based (tests inject a `ManualWallClock`'s).
    public var clock = WallClock.system
    /// Where closed ledgers can be offloaded to, and read back from (nil: no tiered storage; a
    /// ledger offloaded earlier cannot be read once its local copy is gone).
    public var offloaders: OffloaderRegistry?
    public init() {}
}

/// The ordered list of ledgers of one persistent topic; appends go to the open (last) ledger.
///
/// Owned by the topic's event loop: every method must be called on `eventLoop`. Lifecycle:
/// `open` recovers the last ledger (fence, read LastAddConfirmed, close it in metadata) and opens
/// a new one; `append` assigns entry ids in order and completes in append order once the entry is
/// durable; when the open ledger reaches its limit it is closed and a new one is recorded in metadata
/// before any entry is written to it (appends wait meanwhile), so metadata always lists every ledger
/// that holds an acknowledged entry.
///
/// A failed append fails the managed ledger for good (`failure`: fenced by another broker, an I/O
/// error), except when the store's disk is full (`LedgerStoreError.diskFull`): then appends fail, in
/// order, until nothing is in flight, and the next append is tried again (`writesSuspended`).
package final class ManagedLedger: @unchecked Sendable {
    package let name: String
    package let eventLoop: any EventLoop
    package let store: any LedgerClient
    package let metadata: any MetadataStore
    let configuration: ManagedLedgerConfiguration
    package let logger: Logger
    package let metadataKey: String

    /// Closed ledgers, then the open one (last). Entries of the open one = confirmed count.
    package internal(set) var ledgers: [LedgerInfo]
    var metadataVersion: Int64
    /// Entry ids handed out in the open ledger (confirmed + in flight).
    private var assignedEntries: Int64 = 0
    private var assignedBytes: Int64 = 0

    private struct PendingAppend {
        var position: Position
        /// A duplicate that was not written: completes in order with `position` (-1, -1).
        var isDuplicate = false
        var size: Int64 = 0
        /// The entry's bytes, kept until it is durable and moved into `tailCache`.
        var entry: ByteBuffer?
        var result: Result<Void, BrokerError>?
        /// Who hears the outcome, and the tag to hand back (no closure per entry).
        var receiver: any AppendReceiver
        var tag: Int
    }
    /// The newest durable entries of the open ledger: tailing readers (dispatch right after
    /// publish) get them without a store read.
    var tailCache = TailCache()
    /// In-flight appends in append order; completed from the head so callers see append order.
    private var inFlight: [PendingAppend] = []
    private var inFlightHead = 0
    /// Appends waiting for a ledger roll to finish.
    private var waiting: [(entry: ByteBuffer, receiver: any AppendReceiver, tag: Int)] = []
    var rolling = false
    package private(set) var failure: BrokerError?
    /// Set while the store refuses appends for lack of disk space: not permanent, unlike `failure`.
    /// Appends made meanwhile fail with it at once (in append order, behind those in flight), and
    /// so do entries not yet handed to the store. Once nothing is in flight, the open ledger's next
    /// entry id goes back to its confirmed count (the store forgot the refused entries) and this
    /// is cleared: the next append is tried again.
    package private(set) var writesSuspended: BrokerError?

    /// Why appends are refused now for lack of space (here, or in the store), or nil.
    package var diskFullError: BrokerError? {
        if let writesSuspended { return writesSuspended }
        guard case .diskFull(let detail)? = store.writeSuspension else { return nil }
        return BrokerError(.persistence, "disk full: the broker's storage has no room left for \(name) (\(detail))")
    }
    /// Entries that dispatch gave up reading (every attempt failed: a checksum mismatch, a missing
    /// file), with the error, until their ledger is trimmed: the admin internal stats list them and
    /// the operator skips them. At most `maxUnreadableEntriesRecorded`.
    package private(set) var unreadableEntries: [Position: String] = [:]
    package static let maxUnreadableEntriesRecorded = 1_000

    /// Message indexes of ledgers (`MessageIndex`): the open ledger's, kept as its entries become
    /// durable; a closed ledger's once loaded from metadata (`MetadataKeys.messageIndex`, written at
    /// its roll) or rebuilt by reading it back (`index(ofLedger:)`).
    package var indexes: [Int64: MessageIndex] = [:]
    /// Closed ledgers whose index is being loaded or rebuilt (`countMessages(ofLedgerAt:)`).
    package var indexLoads: Set<Int64> = []

    /// Offloaded ledgers' locations, readable from any thread (reads from tasks route by it).
    let offloadedLedgers = OffloadedLedgerMap()
    /// Changes of ledgers' records (offloads) waiting for the record to be free to write.
    var pendingRecordChanges: [PendingRecordChange] = []
    /// The offload started by hand or by the threshold, and how the last one ended.
    package internal(set) var offloadStatus = OffloadStatus()
    /// Set by the topic's policy pass from the namespace's policies and the broker's configuration:
    /// where to offload (nil: nowhere), the local bytes past which closed ledgers are offloaded
    /// (-1: never by size; 0: each ledger as it closes), and how long a local copy outlives its offload.
    package var offloadTarget: OffloadTarget?
    package var offloadThresholdBytes: Int64 = -1
    package var offloadDeletionLagMs: Int64 = ManagedLedger.defaultOffloadDeletionLagMs
    /// Ledgers whose local copy is being deleted after their offload.
    var localDeletions: Set<Int64> = []
    /// When the last offload failed (the threshold waits a minute before trying again).
    var offloadFailedAtMs: Int64?
    /// What offloads did since the topic loaded (metrics).
    package internal(set) var offloadCounters = OffloadCounters()

    private init(
        name: String, eventLoop: any EventLoop, store: any LedgerClient, metadata: any MetadataStore,
        configuration: ManagedLedgerConfiguration, logger: Logger, metadataKey: String,
        ledgers: [LedgerInfo], metadataVersion: Int64
    ) {
        self.name = name
        self.eventLoop = eventLoop
        self.store = store
        self.metadata = metadata
        self.configuration = configuration
        self.logger = logger
        self.metadataKey = metadataKey
        self.ledgers = ledgers
        self.metadataVersion = metadataVersion
        self.indexes[ledgers[ledgers.count - 1].ledgerID] = MessageIndex()
        offloadedLedgers.update(ledgers)
    }

    package static let ledgerIDCounterKey = MetadataKeys.ledgerIDCounter

    /// Opens (or creates) the managed ledger, recovering its last ledger.
    package static func open(
        name: String, metadataKey: String, eventLoop: any EventLoop, store: any LedgerClient,
        metadata: any MetadataStore, configuration: ManagedLedgerConfiguration, logger: Logger
    ) async throws -> ManagedLedger {
        var record = ManagedLedgerRecord(ledgers: [])
        var expectedVersion: Int64 = -1
        if let existing = try await metadata.get(metadataKey) {
            record = try JSONDecoder().decode(ManagedLedgerRecord.self, from: Data(existing.value))
            expectedVersion = existing.version
        }
        // Recover: fence the ledger that was open and close it at its LastAddConfirmed.
        for index in record.ledgers.indices where !record.ledgers[index].closed {
            let ledgerID = record.ledgers[index].ledgerID
            let lastAddConfirmed = try await store.recoverLedger(ledgerID: ledgerID)
            record.ledgers[index].entries = lastAddConfirmed + 1
            record.ledgers[index].closed = true
            record.ledgers[index].closedByRecovery = true
            // Its messages are counted when first needed (`index(ofLedger:)`), unless it holds none.
            record.ledgers[index].messages = lastAddConfirmed < 0 ? 0 : nil
            logger.info("managed-ledger.recovered-ledger", metadata: [
                "topic": "\(name)", "ledger.id": "\(ledgerID)", "ledger.last-add-confirmed": "\(lastAddConfirmed)",
            ])
        }
        // The first offset of the new ledger, found before empty ledgers (which may carry it) go.
        let nextOffset = record.ledgers.isEmpty ? 0 : ManagedLedgerRecord.resolveOffsets(&record.ledgers)
        // Empty closed ledgers carry nothing; drop them from the list.
        record.ledgers.removeAll { $0.closed && $0.entries == 0 }
        for ledger in record.ledgers where !ledger.readsFromTier {
            try await store.openLedger(ledgerID: ledger.ledgerID)
        }
        let newLedgerID = try await metadata.increment(ledgerIDCounterKey)
        try await store.createLedger(ledgerID: newLedgerID, replication: configuration.replication)
        record.ledgers.append(LedgerInfo(
            ledgerID: newLedgerID, entries: 0, sizeBytes: 0, closed: false, createdAtMs: configuration.clock.nowMs(),
            firstOffset: nextOffset))
        let version = try await metadata.put(
            metadataKey, value: Array(try JSONEncoder().encode(record)), expectedVersion: expectedVersion)
        return ManagedLedger(
            name: name, eventLoop: eventLoop, store: store, metadata: metadata, configuration: configuration,
            logger: logger, metadataKey: metadataKey, ledgers: record.ledgers, metadataVersion: version)
    }

    private var openLedger: LedgerInfo { ledgers[ledgers.count - 1] }

    /// Takes the ledger list a roll wrote, keeping first offsets and message counts learnt meanwhile.
    private func adoptLedgers(_ newLedgers: [LedgerInfo]) {
        var merged = newLedgers
        for index in merged.indices {
            guard let known = ledgers.first(where: { $0.ledgerID == merged[index].ledgerID }) else { continue }
            merged[index].firstOffset = merged[index].firstOffset ?? known.firstOffset
            merged[index].messages = merged[index].messages ?? known.messages
        }
        ManagedLedgerRecord.resolveOffsets(&merged)
        ledgers = merged
    }

    /// A closed ledger's index was loaded or rebuilt: its message count is known, and so are the
    /// first offsets that follow from it. Ignored if the ledger is gone or the index does not
    /// cover exactly its entries.
    package func installIndex(_ index: MessageIndex, ofLedger ledgerID: Int64) {
        eventLoop.preconditionInEventLoop()
        guard let position = ledgers.firstIndex(where: { $0.ledgerID == ledgerID }), ledgers[position].closed,
              index.entries == ledgers[position].entries
        else { return }
        indexes[ledgerID] = index
        ledgers[position].messages = index.messages
        ManagedLedgerRecord.resolveOffsets(&ledgers)
    }

    /// How this managed ledger's ledgers (and its cursors' ledgers) are replicated.
    package var replication: LedgerReplicationOptions? { configuration.replication }

    /// The last durable entry, or nil if the managed ledger holds none.
    package var lastConfirmed: Position? {
        for ledger in ledgers.reversed() where ledger.entries > 0 {
            return Position(ledgerID: ledger.ledgerID, entryID: ledger.entries - 1)
        }
        return nil
    }

    /// The first entry, or nil if empty.
    package var firstPosition: Position? {
        for ledger in ledgers where ledger.entries > 0 {
            return Position(ledgerID: ledger.ledgerID, entryID: 0)
        }
        return nil
    }

    /// Number of durable entries.
    package var numberOfEntries: Int64 { ledgers.reduce(0) { $0 + $1.entries } }

    /// Total size of durable entries.
    package var totalSizeBytes: Int64 { ledgers.reduce(0) { $0 + $1.sizeBytes } }

    /// The position that `lastConfirmed` will denote once the next entry is durable, if nothing
    /// is durable yet in the open ledger: a "before" marker usable as a mark-delete position.
    package var positionBeforeNextEntry: Position {
        lastConfirmed ?? Position(ledgerID: openLedger.ledgerID, entryID: -1)
    }

    /// The first existing entry after `position`, or nil if there is none (yet).
    package func next(after position: Position) -> Position? {
        // Ledgers are sorted by id: start at the first one not before `position`'s (dispatch asks
        // this per entry, and a topic may hold many ledgers).
        var low = 0
        var high = ledgers.count
        while low < high {
            let middle = (low + high) / 2
            if ledgers[middle].ledgerID < position.ledgerID { low = middle + 1 } else { high = middle }
        }
        for ledger in ledgers[low...] {
            if ledger.ledgerID == position.ledgerID {
                if position.entryID + 1 < ledger.entries {
                    return Position(ledgerID: ledger.ledgerID, entryID: max(position.entryID + 1, 0))
                }
            } else if ledger.entries > 0 {
                return Position(ledgerID: ledger.ledgerID, entryID: 0)
            }
        }
        return nil
    }

    /// Whether `position` names a durable entry.
    package func contains(_ position: Position) -> Bool {
        guard position.entryID >= 0 else { return false }
        return ledgers.contains { $0.ledgerID == position.ledgerID && position.entryID < $0.entries }
    }

    /// Number of durable entries strictly after `position`.
    package func entriesAfter(_ position: Position) -> Int64 {
        var count: Int64 = 0
        for ledger in ledgers where ledger.ledgerID >= position.ledgerID {
            if ledger.ledgerID == position.ledgerID {
                count += max(0, ledger.entries - max(position.entryID + 1, 0))
            } else {
                count += ledger.entries
            }
        }
        return count
    }

    /// Records that dispatch gave up reading `position` (it stays unacknowledged). Returns whether
    /// it was not recorded yet.
    @discardableResult
    package func recordUnreadable(_ position: Position, error: BrokerError) -> Bool {
        eventLoop.preconditionInEventLoop()
        guard unreadableEntries[position] == nil, unreadableEntries.count < Self.maxUnreadableEntriesRecorded else { return false }
        unreadableEntries[position] = error.message
        return true
    }

    // MARK: reads without blocking the loop

    /// Entries (or read failures) fetched by `readAhead` (not in the tail cache), until `read`
    /// takes them. Bounded: the oldest go first.
    private var readAheadResults: [Position: (result: Result<ByteBuffer, LedgerStoreError>, arrival: UInt64)] = [:]
    /// Arrival order, oldest first. A slot whose result was taken (or replaced by a later fetch of
    /// the same position, with a later `arrival`) is stale: skipped when it reaches the front, and
    /// never counted against the limit (`readAheadResults.count` is).
    private var readAheadOrder = CircularBuffer<(position: Position, arrival: UInt64)>()
    private var readAheadArrivals: UInt64 = 0
    private var readAheadBytes = 0
    /// Runs of entries being fetched (a few at a time: a range check each, no hashing per entry),
    /// and who waits for a batch.
    private var runsInFlight: [(ledgerID: Int64, first: Int64, last: Int64)] = []
    private var readAheadWaiters: [() -> Void] = []
    /// The last position of the latest run fetched for a reader going forward (dispatch catching
    /// up on a backlog): once a read takes an entry within one batch of it, the batch after it is
    /// fetched, so the disk works while the loop dispatches and the next pass finds it at hand.
    private var forwardFetchEnd: Position?

    /// Whether `read(position)` answers at once: the entry is in the tail cache or was fetched ahead.
    package func canReadNow(_ position: Position) -> Bool {
        eventLoop.preconditionInEventLoop()
        return tailCache.entry(at: position) != nil || readAheadResults[position] != nil
    }

    /// Fetches `positions` (those not cached or in flight) from the store without blocking the
    /// loop; `then` runs on the loop once they are all in (successes and failures both: `read`
    /// reports a failure once). Used by dispatch when `canReadNow` is false.
    ///
    /// `forward`: the reader goes on in log order after `positions` (dispatch's catch-up), so the
    /// entries after them are fetched before it asks (see `forwardFetchEnd`).
    package func readAhead(_ positions: [Position], forward: Bool = false, then: @escaping () -> Void) {
        eventLoop.preconditionInEventLoop()
        if forward, let last = positions.last { forwardFetchEnd = last }
        let missing = positions.filter { readAheadResults[$0] == nil && tailCache.entry(at: $0) == nil }
        let wanted = runsInFlight.isEmpty ? missing : missing.filter { !isInFlight($0) }
        guard !missing.isEmpty else {
            eventLoop.execute(then)
            return
        }
        // Runs when a batch completes: this one, or (all wanted already in flight) an earlier one.
        readAheadWaiters.append(then)
        guard !wanted.isEmpty else { return }
        let runs = Self.contiguousRuns(wanted)
        runsInFlight += runs
        let remaining = LoopCountdown(runs.count)
        for run in runs {
            readStoredEntries(
                ledgerID: run.ledgerID, firstEntryID: run.first, lastEntryID: run.last
            ).whenComplete { completed in
                if let index = self.runsInFlight.firstIndex(where: { $0 == run }) { self.runsInFlight.remove(at: index) }
                let count = Int(run.last - run.first + 1)
                let results = (try? completed.get()) ?? Array(repeating: .failure(.closed), count: count)
                for offset in 0..<count {
                    let result = offset < results.count ? results[offset] : .failure(.closed)
                    self.readArrived(Position(ledgerID: run.ledgerID, entryID: run.first + Int64(offset)), result)
                }
                if remaining.countDown() { self.runReadAheadWaiters() }
            }
        }
    }

    /// Fetches the batch of durable entries after `end` that is not at hand (none: the reader has
    /// reached the tail cache or the end, and the forward fetch stops).
    private func fetchForward(after end: Position) {
        // Large entries: the next batch waits until what is fetched is taken, so the fetch never
        // pushes out entries dispatch has not read yet (the next take asks again).
        guard readAheadBytes < ManagedLedgerLimits.maxReadAheadBytes / 2 else { return }
        var positions: [Position] = []
        var current = end
        var examined = 0
        while positions.count < ManagedLedgerLimits.forwardReadBatch, examined < 2 * ManagedLedgerLimits.forwardReadBatch,
              let next = next(after: current)
        {
            examined += 1
            current = next
            if tailCache.entry(at: next) != nil { break }
            if readAheadResults[next] == nil, !isInFlight(next) { positions.append(next) }
        }
        guard !positions.isEmpty else {
            forwardFetchEnd = nil
            return
        }
        readAhead(positions, forward: true) {}
    }

    private func isInFlight(_ position: Position) -> Bool {
        runsInFlight.contains { $0.ledgerID == position.ledgerID && ($0.first...$0.last).contains(position.entryID) }
    }

    /// `positions` as runs of consecutive entries of one ledger, in the order given.
    package static func contiguousRuns(_ positions: [Position]) -> [(ledgerID: Int64, first: Int64, last: Int64)] {
        var runs: [(ledgerID: Int64, first: Int64, last: Int64)] = []
        for position in positions {
            if let last = runs.last, last.ledgerID == position.ledgerID, last.last + 1 == position.entryID {
                runs[runs.count - 1].last = position.entryID
            } else {
                runs.append((position.ledgerID, position.entryID, position.entryID))
            }
        }
        return runs
    }

    private func readArrived(_ position: Position, _ result: Result<ByteBuffer, LedgerStoreError>) {
        readAheadArrivals &+= 1
        // One hash look-up: the insert hands back what a fetch of the same position left (stale now).
        if case .success(let replaced)? = readAheadResults.updateValue((result, readAheadArrivals), forKey: position)?.result {
            readAheadBytes -= replaced.readableBytes
        }
        readAheadOrder.append((position, readAheadArrivals))
        if case .success(let buffer) = result { readAheadBytes += buffer.readableBytes }
        while readAheadResults.count > ManagedLedgerLimits.maxReadAheadEntries || readAheadBytes > ManagedLedgerLimits.maxReadAheadBytes,
              let oldest = readAheadOrder.popFirst()
        {
            if readAheadResults[oldest.position]?.arrival == oldest.arrival { dropReadAhead(oldest.position) }
        }
        // Stale slots at the front go at once. Those behind a live one (an entry fetched and not
        // taken yet) wait their turn, unless they pile up: then the order is rebuilt without them,
        // once per `maxReadAheadEntries` fetches at most.
        while let oldest = readAheadOrder.first, readAheadResults[oldest.position]?.arrival != oldest.arrival {
            readAheadOrder.removeFirst()
        }
        if readAheadOrder.count > 2 * ManagedLedgerLimits.maxReadAheadEntries {
            readAheadOrder = CircularBuffer(readAheadOrder.filter { readAheadResults[$0.position]?.arrival == $0.arrival })
        }
    }

    /// Slots in the read-ahead's arrival order, stale ones included (tests watch its bound).
    package var readAheadSlotCount: Int { readAheadOrder.count }

    private func dropReadAhead(_ position: Position) {
        if case .success(let buffer)? = readAheadResults.removeValue(forKey: position)?.result {
            readAheadBytes -= buffer.readableBytes
        }
    }

    private func runReadAheadWaiters() {
        let waiters = readAheadWaiters
        readAheadWaiters.removeAll()
        for waiter in waiters { waiter() }
    }

    /// Up to `limit` durable positions after `after` (from the first with nil), taken on the loop.
    package func positions(after: Position?, limit: Int) async -> [Position] {
        (try? await eventLoop.submit { self.positionsOnLoop(after: after, limit: limit) }.get()) ?? []
    }

    /// The same, called on the loop.
    package func positionsOnLoop(after: Position?, limit: Int) -> [Position] {
        eventLoop.preconditionInEventLoop()
        var positions: [Position] = []
        var current = after.map { next(after: $0) } ?? firstPosition
        while let position = current, positions.count < limit {
            positions.append(position)
            current = next(after: position)
        }
        return positions
    }

    /// Each entry's publish time (nil: unreadable), read off the loop.
    package func publishTimes(of positions: [Position]) async -> [Int64?] {
        await entriesWithoutBlocking(positions).map { $0?.attributes.publishTimeMs }
    }

    /// The entries at `positions`, in that order (nil: unreadable), read as runs of consecutive
    /// entries, off the loop: the scans (seek by time, deduplication's rebuild).
    package func entriesWithoutBlocking(_ positions: [Position]) async -> [Entry?] {
        let runs = Self.contiguousRuns(positions)
        let futures = runs.map { run in
            readStoredEntries(ledgerID: run.ledgerID, firstEntryID: run.first, lastEntryID: run.last)
        }
        var entries: [Entry?] = []
        entries.reserveCapacity(positions.count)
        for future in futures {
            let results = (try? await future.get()) ?? []
            for result in results {
                entries.append((try? result.get()).flatMap { try? Entry.decode($0) })
            }
        }
        while entries.count < positions.count { entries.append(nil) }
        return entries
    }

    /// Reads an entry from the store without blocking (from a task, not the loop): admin peeks
    /// and scans.
    package func readWithoutBlocking(_ position: Position) async throws(BrokerError) -> Entry {
        let buffer: ByteBuffer
        do {
            buffer = try await readStoredEntry(position)
        } catch {
            throw BrokerError(.persistence, "cannot read entry \(position) of \(name): \(error)")
        }
        return try Entry.decode(buffer)
    }

    /// What `entryAtHand` found.
    package enum EntryAtHand {
        case entry(Entry)
        /// The read failed (reported by dispatch; callers pass over it).
        case unreadable
        /// Not at hand: a fetch of it and the entries after it started; ask again later.
        case fetching
    }

    /// An entry for periodic work on the loop (TTL, backlog quotas): at hand now (tail cache or
    /// fetched ahead), else fetched ahead for the next pass, never waited for.
    package func entryAtHand(_ position: Position) -> EntryAtHand {
        eventLoop.preconditionInEventLoop()
        guard canReadNow(position) else {
            var positions = [position]
            var current = position
            while positions.count < ManagedLedgerLimits.readAheadBatch, let next = next(after: current) {
                positions.append(next)
                current = next
            }
            readAhead(positions) {}
            return .fetching
        }
        guard let entry = try? read(position) else { return .unreadable }
        return .entry(entry)
    }

    /// Reads a durable entry that is at hand (`canReadNow`): the tail cache, then an entry fetched
    /// ahead (taken: a failure is reported once). Anything else is fetched with `readAhead` first.
    package func read(_ position: Position) throws(BrokerError) -> Entry {
        if let cached = tailCache.entry(at: position) {
            return try Entry.decode(cached)
        }
        // Taken (one look-up): its slot in readAheadOrder is stale now, skipped at the front.
        guard let fetched = readAheadResults.removeValue(forKey: position)?.result else {
            throw BrokerError(.persistence, "entry \(position) of \(name) is not at hand: fetch it with readAhead first")
        }
        if case .success(let buffer) = fetched { readAheadBytes -= buffer.readableBytes }
        if let end = forwardFetchEnd, end.ledgerID == position.ledgerID,
           end.entryID >= position.entryID, end.entryID - position.entryID < Int64(ManagedLedgerLimits.forwardReadBatch)
        {
            fetchForward(after: end)
        }
        switch fetched {
        case .success(let buffer): return try Entry.decode(buffer)
        case .failure(.unavailable(let detail)):
            // The tier is down: not the entry's fault, read again later (`serviceNotReady`). The
            // other entries that failed the same way are fetched again too, not taken one by one.
            readAheadResults = readAheadResults.filter { _, value in
                if case .failure(.unavailable) = value.result { return false }
                return true
            }
            throw BrokerError(.serviceNotReady, "cannot read entry \(position) of \(name) now: \(detail)")
        case .failure(let error): throw BrokerError(.persistence, "cannot read entry \(position) of \(name): \(error)")
        }
    }

    /// Appends an entry. `completion` runs on the event loop, in append order, once it is durable.
    package func append(_ entry: ByteBuffer, completion: @escaping (Result<Position, BrokerError>) -> Void) {
        append(entry, receiver: ClosureAppendReceiver(completion), tag: 0)
    }

    /// Appends `entry`; `receiver.appendCompleted(tag:result:)` runs on the event loop once it is
    /// durable (or failed), in append order.
    package func append(_ entry: ByteBuffer, receiver: any AppendReceiver, tag: Int) {
        eventLoop.preconditionInEventLoop()
        if let failure {
            receiver.appendCompleted(tag: tag, result: .failure(failure))
            return
        }
        if let writesSuspended {
            // Behind the appends in flight, so the publisher hears about its entries in order.
            inFlight.append(PendingAppend(
                position: Position(ledgerID: -1, entryID: -1), result: .failure(writesSuspended), receiver: receiver, tag: tag))
            drainCompleted()
            return
        }
        if rolling {
            waiting.append((entry, receiver, tag))
            return
        }
        let ledger = openLedger
        if openLedgerIsFull(ledger) {
            waiting.append((entry, receiver, tag))
            startRoll()
            return
        }
        let position = Position(ledgerID: ledger.ledgerID, entryID: assignedEntries)
        assignedEntries += 1
        let size = Int64(entry.readableBytes)
        assignedBytes += size
        inFlight.append(PendingAppend(position: position, size: size, entry: entry, result: nil, receiver: receiver, tag: tag))
        if !unsubmitted.isEmpty, unsubmittedFirst.ledgerID != position.ledgerID {
            submitPending()
        }
        if unsubmitted.isEmpty {
            unsubmittedFirst = position
            // Once per loop tick: every SEND of a socket read reaches the store in one call.
            eventLoop.execute { self.submitPending() }
        }
        unsubmitted.append(entry)
    }

    /// Entries with ids assigned but not yet handed to the store (consecutive, from `unsubmittedFirst`).
    private var unsubmitted: [ByteBuffer] = []
    private var unsubmittedFirst = Position(ledgerID: -1, entryID: -1)

    private func submitPending() {
        guard !unsubmitted.isEmpty else { return }
        var payloads: [ByteBuffer] = []
        swap(&payloads, &unsubmitted)
        let first = unsubmittedFirst
        let count = payloads.count
        let eventLoop = self.eventLoop
        let inbox = self.storeCompletions
        store.appendBatch(ledgerID: first.ledgerID, firstEntryID: first.entryID, payloads: payloads) { result in
            // A group commit completes many appends at once: one hop to the topic's loop per burst.
            if inbox.post((first, count, result)) {
                eventLoop.execute { self.drainStoreCompletions() }
            }
        }
    }

    /// Completes `completion` with `(-1, -1)` in append order, writing nothing (a duplicate).
    package func appendDuplicate(completion: @escaping (Result<Position, BrokerError>) -> Void) {
        appendDuplicate(receiver: ClosureAppendReceiver(completion), tag: 0)
    }

    /// As `appendDuplicate(completion:)`, answering through `receiver` with `tag`.
    package func appendDuplicate(receiver: any AppendReceiver, tag: Int) {
        eventLoop.preconditionInEventLoop()
        inFlight.append(PendingAppend(
            position: Position(ledgerID: -1, entryID: -1), isDuplicate: true, result: .success(()),
            receiver: receiver, tag: tag))
        drainCompleted()
    }

    /// Store completions waiting for the topic's loop (posted from the journal thread).
    private let storeCompletions = StoreCompletionInbox()

    private func drainStoreCompletions() {
        for (first, count, result) in storeCompletions.take() {
            switch result {
            case .success:
                appendCompleted(first: first, count: count, result: .success(()))
            case .failure(.diskFull(let detail)):
                // The entries of the batch before the group commit that found no room are durable.
                let confirmed = store.writtenLastAddConfirmed(ledgerID: first.ledgerID) ?? -1
                let durable = Int(max(0, min(Int64(count), confirmed - first.entryID + 1)))
                if durable > 0 {
                    appendCompleted(first: first, count: durable, result: .success(()))
                }
                let error = BrokerError(
                    .persistence, "disk full: cannot append to ledger \(first.ledgerID) of \(name), the broker's storage has no room left (\(detail))")
                appendCompleted(
                    first: Position(ledgerID: first.ledgerID, entryID: first.entryID + Int64(durable)), count: count - durable,
                    result: .failure(error), permanent: false)
            case .failure(let error):
                appendCompleted(first: first, count: count, result: .failure(
                    BrokerError(.persistence, "append to ledger \(first.ledgerID) failed: \(error)")))
            }
        }
    }

    /// Entries `first`, `first + 1`, ... (`count` of them) finished in the store. A failure that is
    /// not `permanent` (disk full) suspends writes instead of failing the managed ledger.
    private func appendCompleted(first: Position, count: Int, result: Result<Void, BrokerError>, permanent: Bool = true) {
        var index = inFlightHead
        for offset in 0..<count {
            let position = Position(ledgerID: first.ledgerID, entryID: first.entryID + Int64(offset))
            guard let found = inFlight[index...].firstIndex(where: { $0.position == position && !$0.isDuplicate }) else { break }
            inFlight[found].result = result
            index = found + 1
        }
        if case .failure(let error) = result {
            if !permanent {
                if writesSuspended == nil {
                    // The store logs the full disk once; this repeats for every refused burst.
                    logger.debug("managed-ledger.writes-suspended", metadata: ["topic": "\(name)", "error": "\(error)"])
                }
                writesSuspended = error
                failUnsubmitted(error)
            } else if failure == nil {
                failure = error
                logger.error("managed-ledger.append-failed", metadata: ["topic": "\(name)", "error": "\(error)"])
            }
        }
        drainCompleted()
    }

    /// Fails the entries that have ids but were not handed to the store yet: they would follow the
    /// refused ones.
    private func failUnsubmitted(_ error: BrokerError) {
        guard !unsubmitted.isEmpty else { return }
        let first = unsubmittedFirst
        let count = unsubmitted.count
        unsubmitted.removeAll(keepingCapacity: true)
        var index = inFlightHead
        for offset in 0..<count {
            let position = Position(ledgerID: first.ledgerID, entryID: first.entryID + Int64(offset))
            guard let found = inFlight[index...].firstIndex(where: { $0.position == position && !$0.isDuplicate }) else { break }
            inFlight[found].result = .failure(error)
            index = found + 1
        }
    }

    /// Nothing is in flight any more after the store refused appends for lack of space: the store's
    /// open ledger ends at the confirmed entries again, so the next entry id goes back there and
    /// the next append is tried again. If the store holds a different number of entries (a batch
    /// partly durable in a way the completion did not tell), the managed ledger fails, so the topic
    /// is reloaded and recovers the ledger as it is.
    private func resumeWrites() {
        writesSuspended = nil
        let ledger = openLedger
        let stored = store.writtenLastAddConfirmed(ledgerID: ledger.ledgerID) ?? -1
        guard stored == ledger.entries - 1 else {
            if failure == nil {
                failure = BrokerError(
                    .persistence,
                    "ledger \(ledger.ledgerID) of \(name) holds \(stored + 1) entries after a full disk, the broker confirmed \(ledger.entries): the topic must be reloaded")
                logger.error("managed-ledger.append-failed", metadata: ["topic": "\(name)", "error": "\(failure!)"])
            }
            return
        }
        assignedEntries = ledger.entries
        assignedBytes = ledger.sizeBytes
        logger.debug("managed-ledger.writes-resumed", metadata: ["topic": "\(name)", "ledger.id": "\(ledger.ledgerID)"])
    }

    private func drainCompleted() {
        while inFlightHead < inFlight.count, let done = inFlight[inFlightHead].result {
            let pending = inFlight[inFlightHead]
            inFlightHead += 1
            switch done {
            case .success where pending.isDuplicate:
                pending.receiver.appendCompleted(tag: pending.tag, result: .success(pending.position))
            case .success:
                if let last = ledgers.indices.last, ledgers[last].ledgerID == pending.position.ledgerID {
                    ledgers[last].entries = pending.position.entryID + 1
                    ledgers[last].sizeBytes += pending.size
                }
                if let entry = pending.entry {
                    let fields = Entry.indexFields(of: entry)
                    indexes[pending.position.ledgerID]?.append(numMessages: fields.numMessages, publishTimeMs: fields.publishTimeMs)
                    tailCache.insert(entry, at: pending.position)
                }
                pending.receiver.appendCompleted(tag: pending.tag, result: .success(pending.position))
            case .failure(let error):
                pending.receiver.appendCompleted(tag: pending.tag, result: .failure(failure ?? error))
            }
        }
        if inFlightHead == inFlight.count {
            inFlight.removeAll(keepingCapacity: true)
            inFlightHead = 0
            if writesSuspended != nil { resumeWrites() }
        }
        if rolling { finishRollIfIdle() }
    }

    private func startRoll() {
        rolling = true
        finishRollIfIdle()
    }

    /// Once nothing is in flight on the open ledger, closes it in metadata and opens the next.
    func finishRollIfIdle() {
        // A trim in flight holds the metadata version; the roll continues when it completes.
        guard !writingRecord else { return }
        guard rolling, inFlight.count == inFlightHead, failure == nil else {
            if failure != nil { failWaiting() }
            return
        }
        var closing = ManagedLedgerRecord(ledgers: ledgers)
        closing.ledgers[closing.ledgers.count - 1].closed = true
        let closingIndex = indexes[openLedger.ledgerID]
        closing.ledgers[closing.ledgers.count - 1].messages = closingIndex?.messages
        let indexKey = MetadataKeys.messageIndex(ofManagedLedger: metadataKey, ledgerID: openLedger.ledgerID)
        let record = closing
        let metadata = self.metadata
        let key = metadataKey
        let expected = metadataVersion
        let store = self.store
        let replication = configuration.replication
        let closingLedgerID = openLedger.ledgerID
        let future = eventLoop.makeFutureWithTask { () async throws -> (ManagedLedgerRecord, Int64) in
            // Nothing is in flight: seal the ledger in the store (a replicated store records its
            // last entry, so re-replication can repair it) before recording the roll.
            try await store.closeLedger(ledgerID: closingLedgerID)
            // The closed ledger's index, so a later load need not read the ledger back to count
            // its messages (if this write is lost, it is rebuilt that way).
            if let closingIndex, closingIndex.entries > 0 {
                _ = try? await metadata.put(indexKey, value: closingIndex.encode(), expectedVersion: nil)
            }
            let newLedgerID = try await metadata.increment(ManagedLedger.ledgerIDCounterKey)
            try await store.createLedger(ledgerID: newLedgerID, replication: replication)
            var newRecord = record
            let nextOffset = ManagedLedgerRecord.resolveOffsets(&newRecord.ledgers)
            newRecord.ledgers.removeAll { $0.closed && $0.entries == 0 }
            newRecord.ledgers.append(LedgerInfo(
                ledgerID: newLedgerID, entries: 0, sizeBytes: 0, closed: false, createdAtMs: self.clock.nowMs(),
                firstOffset: nextOffset))
            let version = try await metadata.put(
                key, value: Array(try JSONEncoder().encode(newRecord)), expectedVersion: expected)
            return (newRecord, version)
        }
        future.whenComplete { result in
            switch result {
            case .success(let (newRecord, version)):
                self.adoptLedgers(newRecord.ledgers)
                self.metadataVersion = version
                self.indexes[self.openLedger.ledgerID] = MessageIndex()
                if closingIndex?.entries == 0 { self.indexes[closingLedgerID] = nil }
                self.assignedEntries = 0
                self.assignedBytes = 0
                self.rolling = false
                self.logger.info("managed-ledger.rolled", metadata: [
                    "topic": "\(self.name)", "ledger.id": "\(self.openLedger.ledgerID)",
                ])
                let waiting = self.waiting
                self.waiting = []
                for (entry, receiver, tag) in waiting { self.append(entry, receiver: receiver, tag: tag) }
                self.writePendingRecordChanges()
                // A ledger closed: the offload threshold is checked at once.
                self.offloadIfOverThreshold()
            case .failure(let error):
                self.failure = BrokerError(.metadata, "cannot roll the ledger of \(self.name): \(error)")
                self.failWaiting()
                self.writePendingRecordChanges()
            }
        }
    }

    private func failWaiting() {
        let waiting = self.waiting
        self.waiting = []
        let error = failure ?? BrokerError(.persistence, "managed ledger \(name) failed")
        for (_, receiver, tag) in waiting { receiver.appendCompleted(tag: tag, result: .failure(error)) }
    }

    /// The wall clock rollover by age, TTL, backlog age and delayed delivery read (injected).
    package var clock: WallClock { configuration.clock }

    /// Whether the next append goes to a new ledger, by Pulsar's rule: the open ledger reached its
    /// entry or size limit, or holds entries and is older than the maximum rollover age — and in
    /// either case is at least the minimum rollover age old.
    private func openLedgerIsFull(_ ledger: LedgerInfo) -> Bool {
        let age = clock.nowMs().saturatingSubtract(ledger.createdAtMs ?? .max)
        let quotaReached = assignedEntries >= configuration.maxEntriesPerLedger
            || assignedBytes >= configuration.maxSizePerLedgerBytes
        let aged = assignedEntries > 0 && age > configuration.maxLedgerAge.nanoseconds / 1_000_000
        guard quotaReached || aged else { return false }
        let minimumMs = configuration.minLedgerAge.nanoseconds / 1_000_000
        return minimumMs <= 0 || age >= minimumMs
    }

    /// Rolls the open ledger if it holds entries and is older than the rollover age (called by
    /// the policy task, so a quiet topic's last ledger closes and can be trimmed).
    package func rollIfAged() {
        eventLoop.preconditionInEventLoop()
        guard !rolling, failure == nil, writesSuspended == nil, assignedEntries > 0,
              clock.nowMs().saturatingSubtract(openLedger.createdAtMs ?? .max) > configuration.maxLedgerAge.nanoseconds / 1_000_000
        else { return }
        startRoll()
    }

    /// A write of the metadata record by a trim or an offload is in flight (a roll waits for it).
    var writingRecord = false

    /// Deletes closed ledgers whose every entry is at or before `slowest` (nil: no cursor holds
    /// anything) and that retention no longer keeps: older than `retentionTimeMs` or beyond
    /// `retentionSizeBytes` (-1: keep forever; 0 for both: keep nothing consumed).
    package func trim(slowest: Position?, retentionTimeMs: Int64, retentionSizeBytes: Int64) {
        eventLoop.preconditionInEventLoop()
        // Only closed ledgers before the open one can go: with one ledger there is nothing to look at
        // (the policy pass calls this for every topic every second).
        guard ledgers.count > 1, !writingRecord, !rolling, failure == nil, retentionTimeMs >= 0 || retentionSizeBytes >= 0 else { return }
        let now = clock.nowMs()
        let maxLedgerAgeMs = configuration.maxLedgerAge.nanoseconds / 1_000_000
        var total = totalSizeBytes
        var candidates: [Int64] = []
        for (index, ledger) in ledgers.enumerated() where ledger.closed {
            guard index + 1 < ledgers.count else { break }
            if let slowest, Position(ledgerID: ledger.ledgerID, entryID: ledger.entries - 1) > slowest { break }
            // Without the restart that closed it, this ledger would still be the open one (never
            // trimmed) until its rollover age: keep it, and what follows it, until then. Only a
            // prefix of the log is ever trimmed, so a reader from the earliest sees no gap.
            if ledger.closedByRecovery == true, now.saturatingSubtract(ledger.createdAtMs ?? 0) < maxLedgerAgeMs { break }
            // A ledger's last entry is about as old as the next ledger's creation.
            let age = now.saturatingSubtract(ledgers[index + 1].createdAtMs ?? now)
            let tooOld = retentionTimeMs >= 0 && age >= retentionTimeMs
            let tooBig = retentionSizeBytes >= 0 && total > retentionSizeBytes
            let keepNothing = retentionTimeMs == 0 || retentionSizeBytes == 0
            guard keepNothing || tooOld || tooBig else { break }
            // The next ledger must know its first offset before this one goes (it is found from
            // this one's messages): count them first, the next pass trims.
            guard ledgers[index + 1].firstOffset != nil else {
                countMessages(ofLedgerAt: index)
                break
            }
            candidates.append(ledger.ledgerID)
            total -= ledger.sizeBytes
        }
        let deletable = candidates
        guard !deletable.isEmpty else { return }
        writingRecord = true
        var record = ManagedLedgerRecord(ledgers: ledgers)
        record.ledgers.removeAll { deletable.contains($0.ledgerID) }
        let newRecord = record
        let metadata = self.metadata
        let key = metadataKey
        let expected = metadataVersion
        eventLoop.makeFutureWithTask {
            try await metadata.put(key, value: Array(try JSONEncoder().encode(newRecord)), expectedVersion: expected)
        }.whenComplete { result in
            self.writingRecord = false
            defer {
                if self.rolling { self.finishRollIfIdle() }
                self.writePendingRecordChanges()
            }
            guard case .success(let version) = result else { return }
            self.metadataVersion = version
            let removed = self.ledgers.filter { deletable.contains($0.ledgerID) }
            self.ledgers.removeAll { deletable.contains($0.ledgerID) }
            self.offloadedLedgers.update(self.ledgers)
            for ledgerID in deletable { self.indexes[ledgerID] = nil }
            self.unreadableEntries = self.unreadableEntries.filter { !deletable.contains($0.key.ledgerID) }
            self.tailCache.removeAll()
            self.deleteFromStore(removed)
            self.logger.info("managed-ledger.trimmed", metadata: ["topic": "\(self.name)", "ledgers": "\(deletable)"])
        }
    }

    /// Bytes of the durable entries after `position` (whole ledgers counted exactly, the ledger
    /// holding `position` pro rata).
    package func sizeAfter(_ position: Position) -> Int64 {
        var size: Int64 = 0
        for ledger in ledgers where ledger.ledgerID >= position.ledgerID && ledger.entries > 0 {
            if ledger.ledgerID == position.ledgerID {
                let remaining = max(0, ledger.entries - max(position.entryID + 1, 0))
                size += ledger.sizeBytes * remaining / ledger.entries
            } else {
                size += ledger.sizeBytes
            }
        }
        return size
    }

    /// Deletes ledgers from the store and their offloaded objects, from a task (the loop goes on meanwhile).
    private func deleteFromStore(_ removed: [LedgerInfo]) {
        Task { await self.deleteEverywhere(removed) }
    }

    /// Deletes each ledger's local copy (unless already gone), its offloaded objects and its
    /// message index. Failures are logged, not thrown: what is left is garbage nothing refers to.
    private func deleteEverywhere(_ removed: [LedgerInfo]) async {
        for ledger in removed {
            if !ledger.readsFromTier { try? await store.deleteLedger(ledgerID: ledger.ledgerID) }
            if let location = ledger.offloaded {
                do {
                    try await configuration.offloaders?.offloader(reading: location).delete(location)
                } catch {
                    logger.warning("managed-ledger.offload-delete-failed", metadata: [
                        "topic": "\(name)", "ledger.id": "\(ledger.ledgerID)", "offload.object": "\(location.dataKey)",
                        "error": "\(error)", "hint": "the objects are no longer referenced; delete them from \(location.container) by hand",
                    ])
                }
            }
            try? await metadata.delete(MetadataKeys.messageIndex(ofManagedLedger: metadataKey, ledgerID: ledger.ledgerID), expectedVersion: nil)
        }
    }

    /// Deletes every ledger (local and offloaded) and the metadata record (topic deletion).
    package func delete() async throws {
        let removed = try await eventLoop.submit {
            self.tailCache.removeAll()
            return self.ledgers
        }.get()
        await deleteEverywhere(removed)
        try await metadata.delete(metadataKey, expectedVersion: nil)
    }
}

/// Counts completions on one event loop (callbacks there run one at a time): `countDown` says
/// whether it was the last.
package final class LoopCountdown: @unchecked Sendable {
    private var remaining: Int
    package init(_ count: Int) { remaining = count }
    package func countDown() -> Bool {
        remaining -= 1
        return remaining == 0
    }
}

/// The last durable entries of one ledger, contiguous by entry id, bounded by count and bytes.
/// A pure value; a write to another ledger (or a gap) starts it over.
package struct TailCache {
    package static let maxEntries = 4096
    package static let maxBytes = 4 * 1024 * 1024

    private var ledgerID: Int64 = -1
    /// Entry id of `entries[head]`.
    private var firstEntryID: Int64 = 0
    private var entries: [ByteBuffer] = []
    private var head = 0
    package private(set) var bytes = 0

    package var count: Int { entries.count - head }

    package mutating func insert(_ entry: ByteBuffer, at position: Position) {
        if position.ledgerID != ledgerID || position.entryID != firstEntryID + Int64(count) {
            entries.removeAll(keepingCapacity: true)
            head = 0
            bytes = 0
            ledgerID = position.ledgerID
            firstEntryID = position.entryID
        }
        entries.append(entry)
        bytes += entry.readableBytes
        while count > Self.maxEntries || (bytes > Self.maxBytes && count > 1) {
            bytes -= entries[head].readableBytes
            entries[head] = ByteBuffer()
            head += 1
            firstEntryID += 1
        }
        if head >= 1024, head * 2 >= entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }

    package func entry(at position: Position) -> ByteBuffer? {
        guard position.ledgerID == ledgerID, position.entryID >= firstEntryID else { return nil }
        let offset = position.entryID - firstEntryID
        guard offset < Int64(count) else { return nil }
        return entries[head + Int(offset)]
    }

    package mutating func removeAll() {
        self = TailCache()
    }
}

/// Append completions handed from the store's thread to the topic's loop in bursts: `post` says
/// whether the caller must schedule a drain (the first post since the last `take`). Thread-safe.
package final class StoreCompletionInbox: @unchecked Sendable {
    package typealias Completion = (first: Position, count: Int, result: Result<Void, LedgerStoreError>)
    private let lock = NIOLock()
    private var queued: [Completion] = []
    private var drainScheduled = false

    package func post(_ completion: Completion) -> Bool {
        lock.withLock {
            queued.append(completion)
            if drainScheduled { return false }
            drainScheduled = true
            return true
        }
    }

    package func take() -> [Completion] {
        lock.withLock {
            drainScheduled = false
            defer { queued.removeAll(keepingCapacity: true) }
            return queued
        }
    }
}
