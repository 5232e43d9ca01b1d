import LedgerStorage
import NIOCore

/// Limits of the storage protocol, in one place.
public enum ReplicationLimits {
    /// Largest frame (everything after the length field) a peer may send. Checked from the length
    /// field before the frame is buffered.
    public static let maxFrameSizeBytes = 8 * 1024 * 1024
    /// Smallest frame: type + request id.
    public static let minFrameSizeBytes = 1 + 8
    /// Requests one client connection may have in flight.
    public static let maxPendingRequestsPerConnection = 10_000
    /// Most entry ids one `listEntries` answer carries (8 bytes each); the client asks again from
    /// the last id + 1 when an answer is full.
    public static let maxListedEntriesPerResponse = 65_536
    /// Most listed-but-unstored entries a ledger recovery drops from a ledger's tail before it gives
    /// up and asks for a retry (see `ReplicatedLedgerClient.readBackTail`).
    public static let recoveryReadBackEntries: Int64 = 1_000
    /// Longest authentication method name (`token`, `tls`, ...).
    public static let maxAuthMethodBytes: UInt16 = 64
}

/// What a storage-node request asks for. The wire layout is in `docs/STORAGE_PROTOCOL.md`.
public enum StorageRequest: Sendable, Equatable {
    case addEntry(ledgerID: Int64, entryID: Int64, payload: ByteBuffer)
    case readEntry(ledgerID: Int64, entryID: Int64)
    case readLastAddConfirmed(ledgerID: Int64)
    case fence(ledgerID: Int64)
    case deleteLedger(ledgerID: Int64)
    /// Like `addEntry`, but accepted when the ledger is fenced on the node: a recovering writer or
    /// the re-replication auditor writing back an entry that belongs to the ledger's closed range.
    case recoveryAddEntry(ledgerID: Int64, entryID: Int64, payload: ByteBuffer)
    /// The entry ids the node holds durably for the ledger, from `fromEntryID` on, ascending, at
    /// most `ReplicationLimits.maxListedEntriesPerResponse`.
    case listEntries(ledgerID: Int64, fromEntryID: Int64)
    /// Who the client is: the first request on a connection to a node with authentication on
    /// (`method` as Pulsar names it, e.g. `token`; `data` its credentials). Until it succeeds the
    /// node answers nothing else.
    case authenticate(method: String, data: ByteBuffer)

    /// The request's type byte; its response uses `type | 0x80`.
    public var typeByte: UInt8 {
        switch self {
        case .addEntry: return 1
        case .readEntry: return 2
        case .readLastAddConfirmed: return 3
        case .fence: return 4
        case .deleteLedger: return 5
        case .recoveryAddEntry: return 6
        case .listEntries: return 7
        case .authenticate: return 8
        }
    }

    /// The highest request type byte.
    public static let maxTypeByte: UInt8 = 8

    /// Whether answering it waits for the disk (a read, a fence, a delete): the server runs those
    /// on a thread pool, never on the connection's event loop.
    public var waitsForDisk: Bool {
        switch self {
        case .readEntry, .fence, .deleteLedger: return true
        case .addEntry, .recoveryAddEntry, .readLastAddConfirmed, .listEntries, .authenticate: return false
        }
    }
}

/// The outcome a storage node reports. Raw values are the wire codes.
public enum StorageStatus: UInt8, Sendable, Equatable {
    case ok = 0
    case fenced = 1
    /// Unknown ledger or entry.
    case notFound = 2
    case outOfOrder = 3
    case corrupted = 4
    case io = 5
    /// Anything else (store closed, request refused); the body carries UTF-8 text.
    case error = 6
    /// The node has authentication on and the client has not (or could not) authenticate; the body
    /// carries UTF-8 text and the node closes the connection after it.
    case unauthenticated = 7

    /// The status a `LedgerStoreError` is reported with.
    public init(_ error: LedgerStoreError) {
        switch error {
        case .fenced: self = .fenced
        case .entryNotFound, .ledgerNotFound: self = .notFound
        case .outOfOrder: self = .outOfOrder
        case .corrupted: self = .corrupted
        // The wire format has no status of its own for it; the text says "disk full".
        case .io, .diskFull, .unavailable: self = .io
        case .closed: self = .error
        }
    }
}

/// A storage node's answer. `body` is: the entry for `readEntry`; `[i64 lastAddConfirmed]` for
/// `readLastAddConfirmed` and `fence`; `[u32 count][i64 entryID × count]` for `listEntries`; empty
/// for `addEntry`, `recoveryAddEntry` and `deleteLedger`; UTF-8 text for a status other than `ok`.
public struct StorageResponse: Sendable, Equatable {
    /// The request type byte this answers (without the 0x80 bit).
    public var requestType: UInt8
    public var status: StorageStatus
    public var body: ByteBuffer

    public init(requestType: UInt8, status: StorageStatus, body: ByteBuffer = ByteBuffer()) {
        self.requestType = requestType
        self.status = status
        self.body = body
    }

    /// The `i64` a LAC or fence response carries.
    public var lastAddConfirmed: Int64? {
        guard status == .ok else { return nil }
        return body.getInteger(at: body.readerIndex, as: Int64.self)
    }

    /// The entry ids a `listEntries` answer carries (nil if it is not an ok answer of that shape).
    public var entryIDs: [Int64]? {
        guard status == .ok, let count = body.getInteger(at: body.readerIndex, as: UInt32.self),
              body.readableBytes == 4 + Int(count) * 8
        else { return nil }
        return (0..<Int(count)).map { body.getInteger(at: body.readerIndex + 4 + $0 * 8, as: Int64.self)! }
    }

    /// The body of a `listEntries` answer.
    public static func entryList(_ entryIDs: [Int64]) -> ByteBuffer {
        var body = ByteBuffer()
        body.reserveCapacity(4 + entryIDs.count * 8)
        body.writeInteger(UInt32(entryIDs.count))
        for entryID in entryIDs { body.writeInteger(entryID) }
        return body
    }

    /// The body as text (error responses).
    public var text: String {
        body.getString(at: body.readerIndex, length: body.readableBytes) ?? ""
    }
}

/// One frame of the storage protocol, either direction.
public enum StorageMessage: Sendable, Equatable {
    case request(requestID: UInt64, StorageRequest)
    case response(requestID: UInt64, StorageResponse)
}

/// Errors of the Replication module: bad bytes from a peer, a peer gone, not enough nodes.
public struct ReplicationError: Error, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case frameTooLarge, frameTooSmall, unknownType, malformedFrame
        case connectionClosed, requestTimedOut, tooManyPendingRequests
        case notEnoughNodes
        /// The node refused the client's credentials, or wanted some.
        case authenticationFailed
    }

    public var code: Code
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public var description: String { "\(code): \(detail)" }
}

/// Writes storage frames: `[u32 length][u8 type][u64 requestID][body]`, big-endian; `length`
/// counts everything after itself.
public enum StorageMessageEncoder {
    public static func encode(_ message: StorageMessage, into buffer: inout ByteBuffer) {
        let lengthIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        switch message {
        case .request(let requestID, let request):
            buffer.writeInteger(request.typeByte)
            buffer.writeInteger(requestID)
            switch request {
            case .addEntry(let ledgerID, let entryID, var payload), .recoveryAddEntry(let ledgerID, let entryID, var payload):
                buffer.writeInteger(ledgerID)
                buffer.writeInteger(entryID)
                buffer.writeBuffer(&payload)
            case .readEntry(let ledgerID, let entryID), .listEntries(let ledgerID, let entryID):
                buffer.writeInteger(ledgerID)
                buffer.writeInteger(entryID)
            case .readLastAddConfirmed(let ledgerID), .fence(let ledgerID), .deleteLedger(let ledgerID):
                buffer.writeInteger(ledgerID)
            case .authenticate(let method, var data):
                buffer.writeInteger(UInt16(method.utf8.count))
                buffer.writeString(method)
                buffer.writeBuffer(&data)
            }
        case .response(let requestID, var response):
            buffer.writeInteger(response.requestType | 0x80)
            buffer.writeInteger(requestID)
            buffer.writeInteger(response.status.rawValue)
            buffer.writeBuffer(&response.body)
        }
        buffer.setInteger(UInt32(buffer.writerIndex - lengthIndex - 4), at: lengthIndex)
    }

    public static func encode(_ message: StorageMessage) -> ByteBuffer {
        var buffer = ByteBuffer()
        encode(message, into: &buffer)
        return buffer
    }
}

/// Splits a byte stream into `StorageMessage`s. A frame longer than `maxFrameSizeBytes` is refused
/// from its length field, before any of it is buffered. Every malformed frame throws a
/// `ReplicationError`; it never traps on bytes from the network. Owned by one channel.
public struct StorageMessageDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = StorageMessage

    public let maxFrameSizeBytes: Int

    public init(maxFrameSizeBytes: Int = ReplicationLimits.maxFrameSizeBytes) {
        self.maxFrameSizeBytes = maxFrameSizeBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> StorageMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= UInt32(maxFrameSizeBytes) else {
            throw ReplicationError(.frameTooLarge, "frame of \(length) bytes exceeds the limit of \(maxFrameSizeBytes) bytes")
        }
        guard length >= UInt32(ReplicationLimits.minFrameSizeBytes) else {
            throw ReplicationError(.frameTooSmall, "frame of \(length) bytes has no room for type and request id")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        let frame = buffer.readSlice(length: Int(length))!
        return try Self.decodeFrame(frame)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> StorageMessage? {
        try decode(buffer: &buffer)
    }

    /// Decodes one frame body (everything after the length field).
    public static func decodeFrame(_ body: ByteBuffer) throws(ReplicationError) -> StorageMessage {
        var frame = body
        guard let type = frame.readInteger(as: UInt8.self), let requestID = frame.readInteger(as: UInt64.self) else {
            throw ReplicationError(.frameTooSmall, "frame has no room for type and request id")
        }
        func int64() throws(ReplicationError) -> Int64 {
            guard let value = frame.readInteger(as: Int64.self) else {
                throw ReplicationError(.malformedFrame, "frame of type \(type) is too short")
            }
            return value
        }
        func end() throws(ReplicationError) {
            guard frame.readableBytes == 0 else {
                throw ReplicationError(.malformedFrame, "frame of type \(type) has \(frame.readableBytes) trailing bytes")
            }
        }
        if type & 0x80 != 0 {
            let requestType = type & 0x7f
            guard (1...StorageRequest.maxTypeByte).contains(requestType) else {
                throw ReplicationError(.unknownType, "unknown response type \(type)")
            }
            guard let statusByte = frame.readInteger(as: UInt8.self) else {
                throw ReplicationError(.malformedFrame, "response without a status")
            }
            guard let status = StorageStatus(rawValue: statusByte) else {
                throw ReplicationError(.malformedFrame, "unknown status \(statusByte)")
            }
            if status == .ok, requestType == 3 || requestType == 4, frame.readableBytes != 8 {
                throw ReplicationError(.malformedFrame, "last-add-confirmed response of \(frame.readableBytes) bytes")
            }
            let response = StorageResponse(requestType: requestType, status: status, body: frame)
            if status == .ok, requestType == 7, response.entryIDs == nil {
                throw ReplicationError(.malformedFrame, "entry list response of \(frame.readableBytes) bytes does not match its count")
            }
            return .response(requestID: requestID, response)
        }
        let request: StorageRequest
        switch type {
        case 1:
            let ledgerID = try int64()
            let entryID = try int64()
            request = .addEntry(ledgerID: ledgerID, entryID: entryID, payload: frame)
        case 2:
            let ledgerID = try int64()
            let entryID = try int64()
            try end()
            request = .readEntry(ledgerID: ledgerID, entryID: entryID)
        case 3:
            let ledgerID = try int64()
            try end()
            request = .readLastAddConfirmed(ledgerID: ledgerID)
        case 4:
            let ledgerID = try int64()
            try end()
            request = .fence(ledgerID: ledgerID)
        case 5:
            let ledgerID = try int64()
            try end()
            request = .deleteLedger(ledgerID: ledgerID)
        case 6:
            let ledgerID = try int64()
            let entryID = try int64()
            request = .recoveryAddEntry(ledgerID: ledgerID, entryID: entryID, payload: frame)
        case 7:
            let ledgerID = try int64()
            let fromEntryID = try int64()
            try end()
            request = .listEntries(ledgerID: ledgerID, fromEntryID: fromEntryID)
        case 8:
            guard let length = frame.readInteger(as: UInt16.self), length <= ReplicationLimits.maxAuthMethodBytes,
                  let method = frame.readString(length: Int(length)), !method.isEmpty
            else {
                throw ReplicationError(.malformedFrame, "authenticate frame without a method name of 1 to \(ReplicationLimits.maxAuthMethodBytes) bytes")
            }
            request = .authenticate(method: method, data: frame)
        default:
            throw ReplicationError(.unknownType, "unknown request type \(type)")
        }
        return .request(requestID: requestID, request)
    }
}

/// Writes `StorageMessage`s as frames. Stateless; shared by client and server pipelines.
public final class StorageMessageEncoderHandler: ChannelOutboundHandler, Sendable {
    public typealias OutboundIn = StorageMessage
    public typealias OutboundOut = ByteBuffer

    public init() {}

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let message = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        StorageMessageEncoder.encode(message, into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }
}
