@testable import BrokerCore
@testable import ManagedLedger
import Testing

/// The deduplication stage of the publish path, as a pure state machine.
@Suite struct PublishStagesTests {
    func entry(_ producer: String, _ sequenceID: Int64, nonFinalChunk: Bool = false) -> EntryAttributes {
        EntryAttributes(
            numMessages: 1, publishTimeMs: 0, key: [], producerName: producer, highestSequenceID: sequenceID,
            isNonFinalChunk: nonFinalChunk)
    }

    func isWrite(_ verdict: PublishVerdict) -> Bool {
        if case .write = verdict { return true }
        return false
    }

    @Test func offLetsEverythingThrough() {
        let stage = DeduplicationStage()
        #expect(isWrite(stage.admit(entry("p", 1))))
        #expect(isWrite(stage.admit(entry("p", 1))))
    }

    @Test func aRepeatIsADuplicateUntilItsWriteFails() {
        let stage = DeduplicationStage()
        stage.state = DeduplicationState()
        #expect(isWrite(stage.admit(entry("p", 5))))
        #expect(!isWrite(stage.admit(entry("p", 5))))
        #expect(!isWrite(stage.admit(entry("p", 3))))
        #expect(isWrite(stage.admit(entry("q", 3))))
        // The write of 5 failed: its resend is taken.
        stage.failed(entry("p", 5))
        #expect(isWrite(stage.admit(entry("p", 5))))
        stage.persisted(entry("p", 5), at: Position(ledgerID: 1, entryID: 0))
        stage.failed(entry("p", 6))
        #expect(!isWrite(stage.admit(entry("p", 5))))
        #expect(stage.state?.persisted["p"] == 5)
    }

    @Test func chunksAndUnnamedProducersAreNotDeduplicated() {
        let stage = DeduplicationStage()
        stage.state = DeduplicationState()
        #expect(isWrite(stage.admit(entry("p", 1, nonFinalChunk: true))))
        #expect(isWrite(stage.admit(entry("p", 1, nonFinalChunk: true))))
        #expect(isWrite(stage.admit(entry("", 1))))
        #expect(isWrite(stage.admit(entry("", 1))))
        #expect(isWrite(stage.admit(entry("p", -1))))
    }
}
