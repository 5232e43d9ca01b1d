import Foundation
import LedgerStorage
import Logging
@testable import ManagedLedger
import Metadata
import NIOCore
import NIOPosix
import TestSupport
import Testing
import TieredStorage

/// Issue 18: a managed ledger offloads its closed ledgers into a filesystem tier, records them in
/// its metadata, deletes the local copies, and reads them back (after a reopen too). On a real
/// event loop, over the in-memory store.
@Suite struct OffloadTests {
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var loop: any EventLoop { group.next() }
    private let store = InMemoryLedgerStore()
    private let metadata = InMemoryMetadataStore()
    private let tier = FileManager.default.temporaryDirectory.appendingPathComponent("offload-tests-\(UUID().uuidString)").path
    private let registry = OffloaderRegistry()
    private let time = ManualWallClock(nowMs: 1_700_000_000_000)

    private func open(deletionLagMs: Int64 = 0) async throws -> ManagedLedger {
        var configuration = ManagedLedgerConfiguration()
        configuration.maxEntriesPerLedger = 3
        configuration.offloaders = registry
        configuration.clock = time.clock
        let ledger = try await ManagedLedger.open(
            name: "persistent://public/default/t", metadataKey: "/managed-ledgers/public/default/persistent/t", eventLoop: loop,
            store: LocalLedgerClient(store: store), metadata: metadata, configuration: configuration, logger: Logger(label: "test"))
        let target = try OffloadTarget.filesystem(uri: "file://\(tier)", blockSizeBytes: 1024)
        try await loop.submit {
            ledger.offloadTarget = target
            ledger.offloadDeletionLagMs = deletionLagMs
        }.get()
        return ledger
    }

    private func append(_ ledger: ManagedLedger, _ text: String) async throws {
        let attributes = EntryAttributes(numMessages: 1, publishTimeMs: 1, key: [])
        let encoded = Entry(attributes: attributes, body: ByteBuffer(string: text)).encode()
        let promise = loop.makePromise(of: Position.self)
        loop.execute { ledger.append(encoded) { promise.completeWith($0.mapError { $0 as any Error }) } }
        _ = try await promise.futureResult.get()
    }

    private func waitForOffload(_ ledger: ManagedLedger) async throws -> OffloadStatus {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let status = try await loop.submit { ledger.offloadStatus }.get()
            if status.state != .running || ContinuousClock.now > deadline { return status }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    private func bodies(_ ledger: ManagedLedger) async throws -> [String] {
        let positions = await ledger.positions(after: nil, limit: 100)
        return await ledger.entriesWithoutBlocking(positions).map { entry in
            entry.map { String(buffer: $0.body) } ?? "<unreadable>"
        }
    }

    @Test func offloadedLedgersAreReadFromTheTierAfterTheirLocalCopyIsGoneAndAfterAReopen() async throws {
        defer { try? FileManager.default.removeItem(atPath: tier) }
        let ledger = try await open()
        for i in 0..<10 { try await append(ledger, "m\(i)") }
        let first = try await loop.submit { try ledger.startOffload(before: nil) }.get()
        let status = try await waitForOffload(ledger)
        #expect(status.state == .success, "\(status.lastError)")
        let ledgers = try await loop.submit { ledger.ledgers }.get()
        let closed = ledgers.dropLast()
        #expect(closed.count == 3)
        #expect(closed.allSatisfy { $0.offloaded != nil && $0.localDeleted == true })
        #expect(first == Position(ledgerID: ledgers.last!.ledgerID, entryID: 0))
        // The local copies are gone: the store no longer knows the ledgers.
        for info in closed { #expect(store.lastAddConfirmed(ledgerID: info.ledgerID) == nil) }
        #expect(try await bodies(ledger) == (0..<10).map { "m\($0)" })

        // Another offload while nothing is left to offload succeeds at once.
        _ = try await loop.submit { try ledger.startOffload(before: nil) }.get()
        #expect(try await loop.submit { ledger.offloadStatus.state }.get() == .success)

        // A reopen (a restart, or another broker) finds the offloaded ledgers in metadata.
        let reopened = try await open()
        #expect(try await bodies(reopened) == (0..<10).map { "m\($0)" })
        let offloadedBytes = try await loop.submit { reopened.offloadedSizeBytes }.get()
        #expect(offloadedBytes == closed.reduce(0) { $0 + $1.sizeBytes })
        try await group.shutdownGracefully()
    }

    @Test func theThresholdOffloadsTheLedgersBeyondTheNewestBytesAndAnOffloadInFlightIsAConflict() async throws {
        defer { try? FileManager.default.removeItem(atPath: tier) }
        let ledger = try await open()
        for i in 0..<9 { try await append(ledger, "entry-\(i)") }
        let (over, size, expected) = try await loop.submit { () -> ([Int64], Int64, [Int64]) in
            ledger.offloadThresholdBytes = -1
            #expect(ledger.ledgersOverOffloadThreshold.ledgers.isEmpty)
            // Room for the newest two ledgers: the older closed ones are over it.
            let newest = ledger.ledgers.suffix(2)
            ledger.offloadThresholdBytes = newest.reduce(0) { $0 + $1.sizeBytes }
            let over = ledger.ledgersOverOffloadThreshold
            return (over.ledgers.map(\.ledgerID), over.bytes, ledger.ledgers.dropLast(2).map(\.ledgerID))
        }.get()
        #expect(!expected.isEmpty)
        #expect(over == expected)
        #expect(size > 0)
        try await loop.submit {
            ledger.offloadIfOverThreshold()
            #expect(ledger.offloadStatus.state == .running)
            #expect(throws: BrokerError.self) { try ledger.startOffload(before: nil) }
        }.get()
        #expect(try await waitForOffload(ledger).state == .success)
        let offloaded = try await loop.submit { ledger.ledgers.filter { $0.offloaded != nil }.map(\.ledgerID) }.get()
        #expect(offloaded == expected)
        #expect(try await loop.submit { ledger.offloadLagBytes }.get() == 0)
        try await group.shutdownGracefully()
    }

    @Test func theLocalCopyOutlivesItsOffloadByTheDeletionLag() async throws {
        defer { try? FileManager.default.removeItem(atPath: tier) }
        let ledger = try await open(deletionLagMs: 60_000)
        for i in 0..<7 { try await append(ledger, "m\(i)") }
        _ = try await loop.submit { try ledger.startOffload(before: nil) }.get()
        #expect(try await waitForOffload(ledger).state == .success)
        let closed = try await loop.submit { Array(ledger.ledgers.dropLast()) }.get()
        #expect(closed.count == 2)
        #expect(closed.allSatisfy { $0.offloaded != nil && $0.localDeleted == nil })
        for info in closed { #expect(store.lastAddConfirmed(ledgerID: info.ledgerID) != nil) }

        try await loop.submit { ledger.deleteOffloadedLocalCopies() }.get()
        try await Task.sleep(for: .milliseconds(50))
        for info in closed { #expect(store.lastAddConfirmed(ledgerID: info.ledgerID) != nil, "deleted before the lag passed") }

        time.advance(byMs: 60_001)
        try await loop.submit { ledger.deleteOffloadedLocalCopies() }.get()
        let deadline = ContinuousClock.now + .seconds(10)
        while closed.contains(where: { store.lastAddConfirmed(ledgerID: $0.ledgerID) != nil }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        for info in closed { #expect(store.lastAddConfirmed(ledgerID: info.ledgerID) == nil) }
        let recorded = try await loop.submit { ledger.ledgers.dropLast().allSatisfy { $0.localDeleted == true } }.get()
        #expect(recorded)
        #expect(try await bodies(ledger) == (0..<7).map { "m\($0)" })
        try await group.shutdownGracefully()
    }
}
