import BrokerCore
import CRC32C
import ManagedLedger
import NIOCore
import PulsarProtocol

/// A transaction's commit or abort marker as the Pulsar endpoint stores entries: message metadata
/// with `marker_type` (PulsarMarkers.proto: TXN_COMMIT 21, TXN_ABORT 22) and the transaction id,
/// and no payload. Written once per transaction and topic: SwiftProtobuf. A pure value.
struct PulsarTransactionMarkerCodec: TransactionMarkerCodec {
    static let commitMarkerType: Int32 = 21
    static let abortMarkerType: Int32 = 22

    func markerBody(transaction: TransactionID, committed: Bool, producerName: String, publishTimeMs: Int64) -> ByteBuffer {
        var metadata = Pulsar_Proto_MessageMetadata()
        metadata.producerName = producerName
        metadata.sequenceID = 0
        metadata.publishTime = UInt64(max(publishTimeMs, 0))
        metadata.markerType = committed ? Self.commitMarkerType : Self.abortMarkerType
        metadata.txnidMostBits = transaction.mostBits
        metadata.txnidLeastBits = transaction.leastBits
        let bytes = (try? metadata.serializedBytes() as [UInt8]) ?? []
        var body = ByteBuffer()
        body.reserveCapacity(8 + bytes.count)
        body.writeInteger(UInt32(0))
        body.writeInteger(UInt32(bytes.count))
        body.writeBytes(bytes)
        var crc = CRC32C()
        body.withUnsafeReadableBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[4...])) }
        body.setInteger(crc.value, at: 0)
        return body
    }
}
