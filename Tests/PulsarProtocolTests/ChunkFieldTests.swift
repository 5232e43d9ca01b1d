import PulsarProtocol
import Testing

/// Issue 12, fault 2: chunk fields of any value are classified without overflow.
@Suite struct ChunkFieldTests {
    @Test func chunkFieldsOfAnyValueAreClassified() {
        #expect(SendMetadataFields.isNonFinalChunk(chunkID: 0, numChunks: .min) == false)
        #expect(SendMetadataFields.isNonFinalChunk(chunkID: .min, numChunks: 1) == true)
        #expect(SendMetadataFields.isNonFinalChunk(chunkID: .max, numChunks: .max) == false)
        #expect(SendMetadataFields.isNonFinalChunk(chunkID: 0, numChunks: 3) == true)
        #expect(SendMetadataFields.isNonFinalChunk(chunkID: 2, numChunks: 3) == false)
        #expect(SendMetadataFields.isNonFinalChunk(chunkID: nil, numChunks: 3) == false)
    }

}
