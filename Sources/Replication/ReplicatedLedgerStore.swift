import Dispatch
import LedgerStorage
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Configuration of a `ReplicatedLedgerStore`.
public struct ReplicatedLedgerStoreConfiguration: Sendable {
    /// The storage nodes to place ledgers on (ensembles and replacements are picked from these).
    public var nodes: [StorageNodeAddress]
    public var quorum: QuorumConfiguration
    /// How long one storage request may take before the node counts as failed.
    public var requestTimeout: TimeAmount = .seconds(10)

    public init(nodes: [StorageNodeAddress], quorum: QuorumConfiguration) {
        precondition(nodes.count >= quorum.ensembleSize, "need at least E storage nodes")
        self.nodes = nodes
        self.quorum = quorum
    }
}

/// A `LedgerStore` whose ledgers live on remote storage nodes, written with BookKeeper's quorum
/// protocol (`LedgerWriteQuorum`), so a broker can use it unchanged.
///
/// Threads: all writer state lives on one event loop of its own group (`eventLoop`); `append`
/// hops there, and completions run there, in entry order per ledger. The synchronous calls of
/// the `LedgerStore` protocol (`read`, `lastAddConfirmed`, `fence`, `deleteLedger`) block the
/// calling thread on a semaphore until the nodes answer: they must not be called on this store's
/// own loop (a precondition), and the broker's loops must be a different group.
///
/// Not yet (issue 5, later work): ledger metadata in etcd. The ensemble history of a ledger is
/// kept in memory by the store that wrote it; a ledger this store did not write is assumed to be
/// on its initial ensemble (`initialEnsemble(for:)`, a pure function of the ledger id and the node
/// list), so another broker with the same node list finds it as long as no ensemble change happened.
public final class ReplicatedLedgerStore: LedgerStore, @unchecked Sendable {
    public typealias Completion = @Sendable (Result<Void, LedgerStoreError>) -> Void

    public let configuration: ReplicatedLedgerStoreConfiguration
    public let eventLoop: any EventLoop
    private let eventLoopGroup: any EventLoopGroup
    private let ownsGroup: Bool
    private let logger: Logger

    // Only on `eventLoop`.
    private var writers: [Int64: LedgerWriteQuorum<StorageNodeAddress>] = [:]
    private var completions: [Int64: [Int64: Completion]] = [:]
    private var clients: [StorageNodeAddress: EventLoopFuture<StorageNodeClient>] = [:]
    private var failedNodes: Set<StorageNodeAddress> = []
    private var fencedLedgers: Set<Int64> = []
    private var isClosed = false

    /// `eventLoopGroup`: where the node connections run; nil makes a one-thread group of its own.
    public init(configuration: ReplicatedLedgerStoreConfiguration, eventLoopGroup: (any EventLoopGroup)? = nil, logger: Logger) {
        self.configuration = configuration
        if let eventLoopGroup {
            self.eventLoopGroup = eventLoopGroup
            ownsGroup = false
        } else {
            self.eventLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownsGroup = true
        }
        eventLoop = self.eventLoopGroup.next()
        self.logger = logger
    }

    /// The ensemble a new ledger starts on: E consecutive nodes of the list, starting at `ledgerID % n`.
    public func initialEnsemble(for ledgerID: Int64) -> [StorageNodeAddress] {
        let nodes = configuration.nodes
        let first = Int(ledgerID.magnitude % UInt64(nodes.count))
        return (0..<configuration.quorum.ensembleSize).map { nodes[(first + $0) % nodes.count] }
    }

    /// The ensemble history of a ledger this store writes (for tests and admin), nil otherwise.
    public func ensembleHistory(of ledgerID: Int64) -> [(firstEntryID: Int64, ensemble: [StorageNodeAddress])]? {
        onLoop { self.writers[ledgerID]?.ensembleHistory }
    }

    // MARK: - LedgerStore

    public func append(ledgerID: Int64, entryID: Int64, payload: ByteBuffer, completion: @escaping Completion) {
        eventLoop.execute {
            self.appendOnLoop(ledgerID: ledgerID, entryID: entryID, payload: payload, completion: completion)
        }
    }

    public func read(ledgerID: Int64, entryID: Int64) throws(LedgerStoreError) -> ByteBuffer {
        let (cached, nodes) = onLoop { () -> (ByteBuffer?, [StorageNodeAddress]) in
            if let writer = self.writers[ledgerID] {
                return (writer.pendingPayload(of: entryID), writer.writeSetNodes(of: entryID))
            }
            let ensemble = self.initialEnsemble(for: ledgerID)
            return (nil, self.configuration.quorum.writeSet(of: entryID).map { ensemble[$0] })
        }
        if let cached { return cached }
        var lastError = LedgerStoreError.entryNotFound(ledgerID: ledgerID, entryID: entryID)
        var notFoundCount = 0
        for node in nodes {
            switch request(.readEntry(ledgerID: ledgerID, entryID: entryID), to: node) {
            case .success(let response) where response.status == .ok:
                return response.body
            case .success(let response) where response.status == .notFound:
                notFoundCount += 1
            case .success(let response):
                lastError = Self.error(response, ledgerID: ledgerID)
            case .failure(let error):
                lastError = .io("storage node \(node): \(error)")
            }
        }
        if notFoundCount == nodes.count {
            throw .entryNotFound(ledgerID: ledgerID, entryID: entryID)
        }
        throw lastError
    }

    public func lastAddConfirmed(ledgerID: Int64) -> Int64? {
        let local = onLoop { self.writers[ledgerID]?.lastAddConfirmed }
        if let local { return local }
        // Not written here: the highest entry any node of the initial ensemble holds (a hint; `fence` recovers exactly).
        var highest: Int64?
        for node in initialEnsemble(for: ledgerID) {
            if case .success(let response) = request(.readLastAddConfirmed(ledgerID: ledgerID), to: node),
               let value = response.lastAddConfirmed {
                highest = max(highest ?? -1, value)
            }
        }
        return highest
    }

    /// BookKeeper recovery: fences the ledger on every node of its ensembles (so no writer can
    /// reach Qa again), then reads forward from the last entry known confirmed: the recovered
    /// LastAddConfirmed is the highest entry such that it and every entry before it is readable
    /// from some node. Needs a fence answer from at least `E - Qa + 1` nodes of the current
    /// ensemble (then no ack quorum can form without a fenced node).
    ///
    /// Not yet: writing recovered entries back to the nodes of their write set that lack them
    /// (fenced `LedgerStore`s refuse every append; it needs a recovery-add path in LedgerStorage)
    /// — under-replicated entries wait for background re-replication.
    public func fence(ledgerID: Int64) throws(LedgerStoreError) -> Int64 {
        let (history, knownConfirmed) = onLoop { () -> ([[StorageNodeAddress]], Int64) in
            self.fencedLedgers.insert(ledgerID)
            guard var writer = self.writers[ledgerID] else {
                return ([self.initialEnsemble(for: ledgerID)], -1)
            }
            let actions = writer.stop(.fenced(ledgerID: ledgerID))
            self.run(actions, ledgerID: ledgerID, writer: &writer)
            self.writers[ledgerID] = writer
            return (writer.ensembleHistory.map(\.ensemble), writer.lastAddConfirmed)
        }
        let current = history.last!
        var allNodes: [StorageNodeAddress] = []
        for ensemble in history { for node in ensemble where !allNodes.contains(node) { allNodes.append(node) } }
        var fencedInCurrent = 0
        for node in allNodes {
            if case .success(let response) = request(.fence(ledgerID: ledgerID), to: node), response.status == .ok,
               current.contains(node) {
                fencedInCurrent += 1
            }
        }
        let needed = configuration.quorum.ensembleSize - configuration.quorum.ackQuorumSize + 1
        guard fencedInCurrent >= needed else {
            throw .io("ledger \(ledgerID): fenced on \(fencedInCurrent) storage nodes, need \(needed)")
        }
        var last = knownConfirmed
        while true {
            do {
                _ = try read(ledgerID: ledgerID, entryID: last + 1)
                last += 1
            } catch .entryNotFound {
                break
            } catch .ledgerNotFound {
                break
            }
        }
        logger.info("replicated-store.ledger-recovered", metadata: ["ledger.id": "\(ledgerID)", "ledger.lac": "\(last)"])
        return last
    }

    public func deleteLedger(ledgerID: Int64) throws(LedgerStoreError) {
        let history = onLoop { () -> [[StorageNodeAddress]] in
            if var writer = self.writers.removeValue(forKey: ledgerID) {
                let actions = writer.stop(.ledgerNotFound(ledgerID: ledgerID))
                self.run(actions, ledgerID: ledgerID, writer: &writer)
                return writer.ensembleHistory.map(\.ensemble)
            }
            return [self.initialEnsemble(for: ledgerID)]
        }
        var nodes: Set<StorageNodeAddress> = []
        for ensemble in history { nodes.formUnion(ensemble) }
        var deleted = 0
        for node in nodes.sorted() {
            if case .success(let response) = request(.deleteLedger(ledgerID: ledgerID), to: node), response.status == .ok {
                deleted += 1
            }
        }
        if deleted == 0 { throw .ledgerNotFound(ledgerID: ledgerID) }
    }

    /// Ledgers written through this store (no metadata yet to list the others).
    public func ledgerIDs() -> [Int64] {
        onLoop { self.writers.keys.sorted() }
    }

    public func close() {
        let clients = onLoop { () -> [EventLoopFuture<StorageNodeClient>] in
            guard !self.isClosed else { return [] }
            self.isClosed = true
            for ledgerID in self.writers.keys.sorted() {
                var writer = self.writers[ledgerID]!
                let actions = writer.stop(.closed)
                self.run(actions, ledgerID: ledgerID, writer: &writer)
                self.writers[ledgerID] = writer
            }
            let clients = Array(self.clients.values)
            self.clients.removeAll()
            return clients
        }
        for client in clients {
            _ = try? Self.blockingWait(client.flatMap { $0.close() })
        }
        if ownsGroup {
            try? eventLoopGroup.syncShutdownGracefully()
        }
    }

    // MARK: - On the loop

    private func appendOnLoop(ledgerID: Int64, entryID: Int64, payload: ByteBuffer, completion: @escaping Completion) {
        if isClosed {
            completion(.failure(.closed))
            return
        }
        var writer: LedgerWriteQuorum<StorageNodeAddress>
        if let existing = writers[ledgerID] {
            writer = existing
        } else if fencedLedgers.contains(ledgerID) {
            completion(.failure(.fenced(ledgerID: ledgerID)))
            return
        } else {
            writer = LedgerWriteQuorum(ledgerID: ledgerID, configuration: configuration.quorum, ensemble: placeEnsemble(for: ledgerID))
        }
        completions[ledgerID, default: [:]][entryID] = completion
        let actions = writer.addEntry(entryID: entryID, payload: payload)
        run(actions, ledgerID: ledgerID, writer: &writer)
        writers[ledgerID] = writer
    }

    /// The initial ensemble, with nodes known to have failed swapped for healthy spares when possible.
    private func placeEnsemble(for ledgerID: Int64) -> [StorageNodeAddress] {
        var ensemble = initialEnsemble(for: ledgerID)
        for index in ensemble.indices where failedNodes.contains(ensemble[index]) {
            if let spare = configuration.nodes.first(where: { !failedNodes.contains($0) && !ensemble.contains($0) }) {
                ensemble[index] = spare
            }
        }
        return ensemble
    }

    private func event(ledgerID: Int64, _ body: (inout LedgerWriteQuorum<StorageNodeAddress>) -> [LedgerWriteQuorum<StorageNodeAddress>.Action]) {
        guard var writer = writers[ledgerID] else { return }
        let actions = body(&writer)
        run(actions, ledgerID: ledgerID, writer: &writer)
        writers[ledgerID] = writer
    }

    /// Carries out the state machine's actions; follow-up events (a replacement) are fed back at once.
    private func run(_ actions: [LedgerWriteQuorum<StorageNodeAddress>.Action], ledgerID: Int64, writer: inout LedgerWriteQuorum<StorageNodeAddress>) {
        for action in actions {
            switch action {
            case .sendEntry(let entryID, let payload, let node):
                client(for: node)
                    .flatMap { $0.send(.addEntry(ledgerID: ledgerID, entryID: entryID, payload: payload)) }
                    .whenComplete { result in
                      // Always a fresh loop turn: a failure can complete synchronously inside `run`,
                      // which holds this ledger's writer as an `inout` copy.
                      self.eventLoop.execute {
                        let writeResult: LedgerWriteQuorum<StorageNodeAddress>.WriteResult
                        switch result {
                        case .success(let response) where response.status == .ok: writeResult = .ok
                        case .success(let response) where response.status == .fenced: writeResult = .fenced
                        case .success(let response):
                            self.logger.warning("replicated-store.write-refused", metadata: [
                                "ledger.id": "\(ledgerID)", "entry.id": "\(entryID)", "node": "\(node)", "error": "\(response.text)"])
                            writeResult = .failed
                        case .failure(let error):
                            self.logger.warning("replicated-store.write-failed", metadata: [
                                "ledger.id": "\(ledgerID)", "entry.id": "\(entryID)", "node": "\(node)", "error": "\(error)"])
                            self.clients[node] = nil
                            writeResult = .failed
                        }
                        self.event(ledgerID: ledgerID) { $0.writeCompleted(entryID: entryID, node: node, result: writeResult) }
                      }
                    }
            case .replaceNode(let index, let failed):
                failedNodes.insert(failed)
                clients[failed] = nil
                let replacement = configuration.nodes.first { !failedNodes.contains($0) && !writer.ensemble.contains($0) }
                let followUp: [LedgerWriteQuorum<StorageNodeAddress>.Action]
                if let replacement {
                    logger.notice("replicated-store.ensemble-changed", metadata: [
                        "ledger.id": "\(ledgerID)", "failed": "\(failed)", "replacement": "\(replacement)"])
                    followUp = writer.nodeReplaced(ensembleIndex: index, with: replacement)
                } else {
                    logger.warning("replicated-store.no-replacement", metadata: ["ledger.id": "\(ledgerID)", "failed": "\(failed)"])
                    followUp = writer.replacementUnavailable(ensembleIndex: index)
                }
                run(followUp, ledgerID: ledgerID, writer: &writer)
            case .confirmEntries(let from, let through):
                for entryID in from...through {
                    completions[ledgerID]?.removeValue(forKey: entryID)?(.success(()))
                }
            case .failEntries(let entryIDs, let error):
                for entryID in entryIDs {
                    completions[ledgerID]?.removeValue(forKey: entryID)?(.failure(error))
                }
            }
        }
    }

    private func client(for node: StorageNodeAddress) -> EventLoopFuture<StorageNodeClient> {
        if let existing = clients[node] { return existing }
        let connecting = StorageNodeClient.connect(to: node, eventLoopGroup: eventLoop, requestTimeout: configuration.requestTimeout)
        clients[node] = connecting
        connecting.whenComplete { result in
            if case .success(let client) = result {
                client.channel.closeFuture.hop(to: self.eventLoop).whenComplete { _ in
                    if let current = self.clients[node], current === connecting { self.clients[node] = nil }
                }
            } else if let current = self.clients[node], current === connecting {
                self.clients[node] = nil
            }
        }
        return connecting
    }

    // MARK: - Blocking helpers

    private func request(_ request: StorageRequest, to node: StorageNodeAddress) -> Result<StorageResponse, any Error> {
        let future = eventLoop.flatSubmit { self.client(for: node).flatMap { $0.send(request) } }
        do {
            return .success(try Self.blockingWait(future))
        } catch {
            return .failure(error)
        }
    }

    private func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        if eventLoop.inEventLoop { return body() }
        return try! Self.blockingWait(eventLoop.submit(body))
    }

    /// Waits for `future` on a semaphore (EventLoopFuture.wait refuses any event-loop thread, and
    /// the broker calls reads from its topic loops, which are another group).
    private static func blockingWait<T: Sendable>(_ future: EventLoopFuture<T>) throws -> T {
        precondition(!future.eventLoop.inEventLoop, "blocking on the replicated store's own event loop")
        let semaphore = DispatchSemaphore(value: 0)
        let box = NIOLockedValueBox<Result<T, any Error>?>(nil)
        future.whenComplete { result in
            box.withLockedValue { $0 = result }
            semaphore.signal()
        }
        semaphore.wait()
        return try box.withLockedValue { $0! }.get()
    }

    private static func error(_ response: StorageResponse, ledgerID: Int64) -> LedgerStoreError {
        switch response.status {
        case .fenced: return .fenced(ledgerID: ledgerID)
        case .corrupted: return .corrupted(response.text)
        default: return .io(response.text)
        }
    }
}
