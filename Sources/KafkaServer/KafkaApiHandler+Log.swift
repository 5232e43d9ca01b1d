import BrokerCore
import Foundation
import KafkaProtocol
import Logging
import ManagedLedger
import Metadata
import NIOConcurrencyHelpers
import NIOCore
import PulsarProtocol

/// Produce, Fetch and ListOffsets: Kafka's partitions are the topic's (or partition's) managed
/// ledger, Kafka's offsets its gap-free message offsets (`MessageIndex`).
extension KafkaApiHandler {
    /// A partition that cannot be used, as Kafka's error code and a message.
    struct PartitionFailure: Error {
        var code: KafkaErrorCode
        var message: String
    }

    /// The event loop of the connection whose request this task answers (set by the connection).
    @TaskLocal static var connectionLoop: (any EventLoop)?

    /// The loaded topic behind Kafka partition `index` of `kafkaName` (loading it if needed).
    func partitionTopic(_ kafkaName: String, _ index: Int32) async -> Result<Topic, PartitionFailure> {
        let name: TopicName
        do {
            name = try pulsarName(kafkaName)
        } catch {
            return .failure(PartitionFailure(code: .invalidTopicException, message: "\(error)"))
        }
        var partitionName = name
        partitionName.localName += "-partition-\(index)"
        if let topic = broker.loadedTopic(partitionName) { return .success(topic) }
        if index == 0, let topic = broker.loadedTopic(name) { return .success(topic) }
        do {
            guard let count = try await broker.existingPartitionCount(name) else {
                return .failure(PartitionFailure(code: .unknownTopicOrPartition, message: "topic '\(kafkaName)' does not exist"))
            }
            guard index >= 0, index < max(count, 1) else {
                return .failure(PartitionFailure(
                    code: .unknownTopicOrPartition, message: "topic '\(kafkaName)' has \(max(count, 1)) partitions, not \(index + 1)"))
            }
            // Loaded on the loop of the connection that asked (the producer's, usually): its
            // appends and answers then need no thread hop.
            return .success(try await broker.topic(count == 0 ? name : partitionName, preferredLoop: Self.connectionLoop).get())
        } catch {
            return .failure(Self.failure(error))
        }
    }

    /// A broker error in Kafka's terms (retriable ones where the client should retry).
    static func failure(_ error: any Error) -> PartitionFailure {
        if let failure = error as? PartitionFailure { return failure }
        guard let error = error as? BrokerError else { return PartitionFailure(code: .unknownServerError, message: "\(error)") }
        let code: KafkaErrorCode = switch error.code {
        case .topicNotFound, .notFound: .unknownTopicOrPartition
        case .invalidTopicName, .badRequest: .invalidTopicException
        case .authorizationError, .authenticationError: .topicAuthorizationFailed
        case .serviceNotReady, .metadata: .notLeaderOrFollower
        case .persistence: .kafkaStorageError
        case .producerBlockedQuota, .notAllowed: .policyViolation
        default: .unknownServerError
        }
        return PartitionFailure(code: code, message: error.message)
    }

    // MARK: Produce

    func produce(_ request: ProduceRequest, clientID: String?, admitted: @Sendable () -> Void) async -> ProduceResponse {
        let producerName = "kafka-\(clientID.flatMap { $0.isEmpty ? nil : $0 } ?? "producer")"
        var pending: [(topic: Int, partition: Int32, result: EventLoopFuture<Int64>?, failure: PartitionFailure?)] = []
        for (topicIndex, topic) in request.topics.enumerated() {
            for partition in topic.partitions {
                switch await startProduce(topic.name, partition, producerName: producerName, transactionalID: request.transactionalID) {
                case .success(let future): pending.append((topicIndex, partition.index, future, nil))
                case .failure(let failure): pending.append((topicIndex, partition.index, nil, failure))
                }
            }
        }
        admitted()
        var topics = request.topics.map { ProduceResponse.Topic(name: $0.name, partitions: []) }
        for item in pending {
            var answer = ProduceResponse.Partition(index: item.partition, errorCode: .none, baseOffset: -1)
            if let future = item.result {
                do {
                    answer.baseOffset = try await future.get()
                } catch {
                    let failure = Self.failure(error)
                    answer.errorCode = failure.code
                    answer.errorMessage = failure.message
                }
            } else if let failure = item.failure {
                answer.errorCode = failure.code
                answer.errorMessage = failure.message
            }
            topics[item.topic].partitions.append(answer)
        }
        return ProduceResponse(topics: topics)
    }

    /// Decodes one partition's batches and appends them, one entry per batch; the future gives the
    /// first batch's base offset once every entry is durable.
    private func startProduce(
        _ kafkaName: String, _ partition: ProduceRequest.Partition, producerName: String, transactionalID: String? = nil
    ) async -> Result<EventLoopFuture<Int64>, PartitionFailure> {
        guard let transactionalID, !transactionalID.isEmpty else {
            let prepared: KafkaProduceEntries
            switch prepare(partition, producerName: producerName) {
            case .success(let entries): prepared = entries
            case .failure(let failure): return .failure(failure)
            }
            switch await partitionTopic(kafkaName, partition.index) {
            case .success(let topic): return .success(enqueue(prepared, to: topic))
            case .failure(let failure): return .failure(failure)
            }
        }
        // A transactional producer's batches: written in its open transaction, which must hold the partition.
        let topic: Topic
        switch await partitionTopic(kafkaName, partition.index) {
        case .success(let found): topic = found
        case .failure(let failure): return .failure(failure)
        }
        guard let records = partition.records, let first = try? KafkaRawRecordBatch.readAll(records).first else {
            return .failure(PartitionFailure(code: .invalidRecord, message: "the partition's records are empty or malformed"))
        }
        guard first.isTransactional, first.producerID >= 0 else {
            return .failure(PartitionFailure(
                code: .invalidRecord, message: "a Produce with a transactional id must carry transactional batches"))
        }
        let transaction: TransactionID
        do {
            transaction = try await transactions.transaction(
                forProduce: transactionalID, producerID: first.producerID, epoch: first.producerEpoch, topic: topic.name.description)
        } catch KafkaTransactions.Refusal.code(let code, let message) {
            // A fenced producer hears INVALID_PRODUCER_EPOCH from a partition, as from Kafka's.
            return .failure(PartitionFailure(code: code == .producerFenced ? .invalidProducerEpoch : code, message: message))
        } catch {
            return .failure(Self.failure(error))
        }
        switch prepare(partition, producerName: producerName, transaction: transaction) {
        case .success(let prepared): return .success(enqueue(prepared, to: topic))
        case .failure(let failure): return .failure(failure)
        }
    }

    /// A partition's record batches, checked (within the size limit, CRC-valid, data batches only,
    /// every record well-formed) and encoded as the entries they are stored as.
    func prepare(
        _ partition: ProduceRequest.Partition, producerName: String, transaction: TransactionID? = nil
    ) -> Result<KafkaProduceEntries, PartitionFailure> {
        guard let records = partition.records, records.readableBytes > 0 else {
            return .failure(PartitionFailure(code: .invalidRecord, message: "the partition's records are empty"))
        }
        guard records.readableBytes <= PulsarLimits.maxMessageSizeBytes else {
            return .failure(PartitionFailure(
                code: .messageTooLarge,
                message: "\(records.readableBytes) bytes of records, over the \(PulsarLimits.maxMessageSizeBytes)-byte limit"))
        }
        let now = broker.configuration.managedLedger.clock.nowMs()
        let allocator = ByteBufferAllocator()
        do throws(KafkaProtocolError) {
            let batches = try KafkaRawRecordBatch.readAll(records)
            guard let first = batches.first, let last = batches.last, batches.allSatisfy({ $0.count > 0 && !$0.isControl }) else {
                return .failure(PartitionFailure(code: .invalidRecord, message: "a record batch holds no records, or is a control batch"))
            }
            guard batches.allSatisfy({ $0.isTransactional == (transaction != nil) }) else {
                return .failure(PartitionFailure(
                    code: .invalidRecord,
                    message: transaction == nil
                        ? "a transactional batch came without a transactional id (initialize the producer's transactions first)"
                        : "a Produce with a transactional id must carry transactional batches only"))
            }
            var prepared = KafkaProduceEntries(
                producerID: first.producerID, producerEpoch: first.producerEpoch, firstSequence: first.baseSequence,
                lastSequence: Int32(truncatingIfNeeded: Int64(last.baseSequence) + Int64(last.count) - 1) & Int32.max,
                compression: first.compression)
            prepared.transaction = transaction
            prepared.attributes.reserveCapacity(batches.count)
            // An idempotent producer's entries carry its id and epoch (its state is rebuilt from them).
            let name = first.producerID >= 0
                ? PartitionProducers.producerName(producerID: first.producerID, epoch: first.producerEpoch) : producerName
            prepared.producerName = name
            prepared.entries.reserveCapacity(batches.count)
            for batch in batches {
                let (entry, attributes) = try KafkaEntryCodec.entry(
                    from: batch, producerName: name, publishTimeMs: now, transaction: transaction, allocator: allocator)
                prepared.entries.append(entry)
                prepared.attributes.append(attributes)
                prepared.records += Int(batch.count)
            }
            return .success(prepared)
        } catch {
            let code: KafkaErrorCode = error.message.contains("CRC") ? .corruptMessage : .invalidRecord
            return .failure(PartitionFailure(code: code, message: error.message))
        }
    }

    /// The topic already loaded here behind Kafka partition `index` of `kafkaName`, without
    /// waiting: nil when it is not loaded (the async path loads it, or says why not).
    func loadedPartitionTopic(_ kafkaName: String, _ index: Int32) -> Topic? {
        guard let names = partitionNames(kafkaName, index) else { return nil }
        if let topic = broker.loadedTopic(names.partition) { return topic }
        return index == 0 ? broker.loadedTopic(names.topic) : nil
    }

    /// The Pulsar names behind a Kafka partition (the topic's and the partition's), remembered:
    /// parsing them is most of a small Produce's cost otherwise.
    private func partitionNames(_ kafkaName: String, _ index: Int32) -> (topic: TopicName, partition: TopicName)? {
        let key = KafkaPartitionKey(topic: kafkaName, index: index)
        if let known = nameCache.withLockedValue({ $0[key] }) { return known }
        guard let name = try? pulsarName(kafkaName) else { return nil }
        var partitionName = name
        partitionName.localName += "-partition-\(index)"
        nameCache.withLockedValue { cache in
            if cache.count >= Self.maxCachedNames { cache.removeAll(keepingCapacity: true) }
            cache[key] = (name, partitionName)
        }
        return (name, partitionName)
    }

    /// A Produce whose partitions are all loaded here, answered without leaving the connection's
    /// event loop for a task: decoded and handed to the topics at once (so it is admitted when this
    /// returns), answered when every append is durable. nil: not such a request (the async path
    /// takes it, and answers its errors).
    func produceOnLoop(_ frame: ByteBuffer, allocator: ByteBufferAllocator, eventLoop: any EventLoop) -> EventLoopFuture<ByteBuffer?>? {
        var reader = KafkaReader(frame)
        guard var header = try? KafkaRequestHeader.readPrefix(&reader), header.apiKey == KafkaApiKey.produce.rawValue,
              let support = KafkaApis.support(header.apiKey), support.supports(header.apiVersion)
        else { return nil }
        let version = header.apiVersion
        let flexible = support.isFlexible(version)
        guard (try? header.readRest(&reader, flexible: flexible)) != nil,
              let request = try? ProduceRequest.read(&reader, version: version), request.transactionalID == nil
        else { return nil }
        var topics: [[Topic]] = []
        for topic in request.topics {
            var partitions: [Topic] = []
            for partition in topic.partitions {
                guard let loaded = loadedPartitionTopic(topic.name, partition.index) else { return nil }
                partitions.append(loaded)
            }
            topics.append(partitions)
        }
        let producerName = "kafka-\(header.clientID.flatMap { $0.isEmpty ? nil : $0 } ?? "producer")"
        var pending: [(topic: Int, partition: Int32, result: Result<EventLoopFuture<Int64>, PartitionFailure>)] = []
        for (topicIndex, topic) in request.topics.enumerated() {
            for (partitionIndex, partition) in topic.partitions.enumerated() {
                let result = prepare(partition, producerName: producerName).map { enqueue($0, to: topics[topicIndex][partitionIndex]) }
                pending.append((topicIndex, partition.index, result))
            }
        }
        if request.acks == 0 { return eventLoop.makeSucceededFuture(nil) }
        let futures = pending.map { item -> EventLoopFuture<Int64> in
            switch item.result {
            case .success(let future): return future
            case .failure(let failure): return eventLoop.makeFailedFuture(failure)
            }
        }
        let names = request.topics.map(\.name)
        let correlationID = header.correlationID
        let slots = pending.map { (topic: $0.topic, partition: $0.partition) }
        @Sendable func respond(_ results: [Result<Int64, any Error>]) -> ByteBuffer? {
            var answer = names.map { ProduceResponse.Topic(name: $0, partitions: []) }
            for (item, result) in zip(slots, results) {
                var partition = ProduceResponse.Partition(index: item.partition, errorCode: .none, baseOffset: -1)
                switch result {
                case .success(let offset):
                    partition.baseOffset = offset
                case .failure(let error):
                    let failure = Self.failure(error)
                    partition.errorCode = failure.code
                    partition.errorMessage = failure.message
                }
                answer[item.topic].partitions.append(partition)
            }
            let response = ProduceResponse(topics: answer)
            return KafkaResponseFrame.make(correlationID: correlationID, flexibleHeader: flexible, allocator: allocator) {
                response.write(into: &$0, version: version)
            }
        }
        if futures.count == 1 {
            // One partition (librdkafka's usual request): answered from its future, no combinator.
            let answered = eventLoop.makePromise(of: ByteBuffer?.self)
            futures[0].whenComplete { answered.succeed(respond([$0])) }
            return answered.futureResult
        }
        return EventLoopFuture.whenAllComplete(futures, on: eventLoop).map(respond)
    }

    /// Hands a partition's entries to its topic (after the idempotence check on the topic's loop);
    /// the future gives the first batch's base offset once all are durable.
    private func enqueue(_ prepared: KafkaProduceEntries, to topic: Topic) -> EventLoopFuture<Int64> {
        logger.trace("kafka.produce", metadata: [
            "topic": "\(topic.name)", "batches": "\(prepared.entries.count)", "records": "\(prepared.records)",
            "compression": "\(prepared.compression)", "producer.id": "\(prepared.producerID)",
        ])
        let promise = topic.eventLoop.makePromise(of: Int64.self)
        let replier = KafkaProduceReplier(topic: topic, numMessages: prepared.attributes[0].numMessages, count: prepared.entries.count, promise: promise)
        let batch = PublishBatch(entries: prepared.entries, attributes: prepared.attributes, replier: replier)
        let future = promise.futureResult
        guard prepared.producerID >= 0 else {
            topic.eventLoop.execute {
                if let refusal = topic.publishRefusal { return promise.fail(refusal) }
                topic.publish(batch)
            }
            return future
        }
        let table = idempotence.table(for: topic)
        topic.eventLoop.execute {
            // The producers' state is rebuilt from the log before the first check.
            table.whenReady(topic) {
                if let refusal = topic.publishRefusal { return promise.fail(refusal) }
                switch table.check(
                    producerID: prepared.producerID, epoch: prepared.producerEpoch, firstSequence: prepared.firstSequence,
                    lastSequence: prepared.lastSequence)
                {
                case .duplicate(let original):
                    original.cascade(to: promise)
                    return
                case .refuse(let code, let message):
                    promise.fail(PartitionFailure(code: code, message: message))
                    return
                case .write:
                    table.record(
                        producerID: prepared.producerID, epoch: prepared.producerEpoch, firstSequence: prepared.firstSequence,
                        lastSequence: prepared.lastSequence, offset: future)
                    future.whenFailure { _ in
                        table.failed(producerID: prepared.producerID, epoch: prepared.producerEpoch, firstSequence: prepared.firstSequence)
                    }
                }
                if let transaction = prepared.transaction {
                    topic.publish(batch, transaction: transaction, producerName: prepared.producerName)
                } else {
                    topic.publish(batch)
                }
            }
        }
        return future
    }

    // MARK: Fetch

    /// Answers at once when `min_bytes` are there (or an error), else waits for the next append to
    /// one of the partitions, up to `max_wait_ms`, and reads again: no polling loop.
    func fetch(_ request: FetchRequest, allocator: ByteBufferAllocator) async -> FetchResponse {
        let deadline = NIODeadline.now() + .milliseconds(Int64(max(request.maxWaitMs, 0)))
        while true {
            let (response, bytes, waits) = await fetchOnce(request, allocator: allocator)
            let hasError = response.topics.contains { $0.partitions.contains { $0.errorCode != .none } }
            if bytes >= Int(max(request.minBytes, 1)) || hasError || waits.isEmpty || NIODeadline.now() >= deadline {
                return response
            }
            await waitForAppend(waits, until: deadline)
            if NIODeadline.now() >= deadline {
                return await fetchOnce(request, allocator: allocator).response
            }
        }
    }

    /// One read of every requested partition: the response, the record bytes in it, and for each
    /// partition read to its end, the topic and the offset it waits at.
    private func fetchOnce(
        _ request: FetchRequest, allocator: ByteBufferAllocator
    ) async -> (response: FetchResponse, bytes: Int, waits: [(Topic, Int64, Bool)]) {
        var budget = Int(request.maxBytes <= 0 ? Int32.max : request.maxBytes)
        var total = 0
        var waits: [(Topic, Int64, Bool)] = []
        var topics: [FetchResponse.Topic] = []
        let committedOnly = request.isolationLevel == 1
        for topic in request.topics {
            var partitions: [FetchResponse.Partition] = []
            for partition in topic.partitions {
                switch await partitionTopic(topic.name, partition.index) {
                case .failure(let failure):
                    partitions.append(FetchResponse.Partition(
                        index: partition.index, errorCode: failure.code, highWatermark: -1, logStartOffset: -1, records: nil))
                case .success(let found):
                    let limit = total == 0 ? Int(max(partition.maxBytes, 1)) : min(Int(max(partition.maxBytes, 1)), budget)
                    let (answer, bytes, atEnd) = await read(
                        found, index: partition.index, from: partition.fetchOffset, maxBytes: limit, committedOnly: committedOnly,
                        allocator: allocator)
                    partitions.append(answer)
                    total += bytes
                    budget = max(budget - bytes, 0)
                    if atEnd { waits.append((found, partition.fetchOffset, committedOnly)) }
                }
            }
            topics.append(FetchResponse.Topic(name: topic.name, partitions: partitions))
        }
        return (FetchResponse(topics: topics), total, waits)
    }

    /// One partition from `offset`: whole entries (the first one even past `maxBytes`, as Kafka
    /// does), each as one batch; the client skips the records of the first batch before `offset`.
    /// Transactions: their entries carry their producer's id and the transactional flag, their
    /// markers read as control batches; read_committed (`committedOnly`) stops at the last stable
    /// offset and lists the aborted transactions in what it returns (a Pulsar transaction's aborted
    /// entries, which have no Kafka producer id, are left out instead).
    private func read(
        _ topic: Topic, index: Int32, from offset: Int64, maxBytes: Int, committedOnly: Bool, allocator: ByteBufferAllocator
    ) async -> (FetchResponse.Partition, Int, Bool) {
        guard let bounds = await topic.offsetBounds() else {
            return (FetchResponse.Partition(index: index, errorCode: .leaderNotAvailable, highWatermark: -1, logStartOffset: -1, records: nil), 0, false)
        }
        var answer = FetchResponse.Partition(
            index: index, errorCode: .none, highWatermark: bounds.next, logStartOffset: bounds.first, records: nil)
        // The transaction state as last published (no hop: most topics have none), read after the
        // bounds: a transaction it does not show registered after them, so its entries all come at
        // or after `bounds.next`, where read_committed stops.
        let transactions = topic.publishedTransactionState ?? TransactionBufferState()
        let stable = min(transactions.stableOffset ?? bounds.next, bounds.next)
        answer.lastStableOffset = stable
        guard offset >= bounds.first, offset <= bounds.next else {
            answer.errorCode = .offsetOutOfRange
            return (answer, 0, false)
        }
        let end = committedOnly ? stable : bounds.next
        guard offset < end, let (position, firstOffset) = await topic.position(ofOffset: offset) else {
            answer.records = allocator.buffer(capacity: 0)
            return (answer, 0, true)
        }
        let entries = await topic.entries(from: position, maxEntries: KafkaLimits.maxEntriesPerFetch, maxBytes: maxBytes)
        var records = allocator.buffer(capacity: min(maxBytes, entries.reduce(0) { $0 + $1.entry.body.readableBytes + 64 }))
        let aborted = Set(transactions.aborted.map(\.id))
        var next = firstOffset
        for (entryPosition, entry) in entries {
            if records.readableBytes >= maxBytes { break }
            if committedOnly, next >= end || transactions.readLimit.map({ entryPosition >= $0 }) == true { break }
            defer { next += Int64(max(entry.attributes.numMessages, 1)) }
            if committedOnly, let transaction = entry.attributes.transactionID, aborted.contains(transaction),
               PartitionProducers.identity(ofProducerName: entry.attributes.producerName) == nil
            {
                continue
            }
            KafkaEntryCodec.batch(from: entry, baseOffset: next).write(into: &records)
        }
        if committedOnly {
            answer.abortedTransactions = transactions.aborted(overlapping: offset, next).compactMap { aborted in
                PartitionProducers.identity(ofProducerName: aborted.producerName).map {
                    FetchResponse.AbortedTransaction(producerID: $0.producerID, firstOffset: aborted.firstOffset)
                }
            }
        }
        answer.records = records
        return (answer, records.readableBytes, records.readableBytes == 0)
    }

    /// Waits until one of the topics appends past its offset (read_committed: its last stable
    /// offset moves past it), or the deadline.
    private func waitForAppend(_ waits: [(Topic, Int64, Bool)], until deadline: NIODeadline) async {
        guard let loop = waits.first?.0.eventLoop else { return }
        let promise = loop.makePromise(of: Void.self)
        let fired = NIOLockedValueBox(false)
        let fire: @Sendable () -> Void = {
            if fired.withLockedValue({ done in
                defer { done = true }
                return !done
            }) { promise.succeed() }
        }
        var tokens: [(Topic, UInt64)] = []
        for (topic, offset, committedOnly) in waits {
            let token = try? await topic.eventLoop.submit { () -> UInt64? in
                if var next = topic.nextOffsetOnLoop() {
                    if committedOnly, let stable = topic.transactionState.stableOffset { next = min(next, stable) }
                    if next > offset {
                        fire()
                        return nil
                    }
                }
                return topic.waitForAppend(fire)
            }.get()
            if let token { tokens.append((topic, token)) }
        }
        let timeout = loop.scheduleTask(deadline: deadline) { fire() }
        try? await promise.futureResult.get()
        timeout.cancel()
        for (topic, token) in tokens {
            topic.eventLoop.execute { topic.cancelAppendWaiter(token) }
        }
    }

    // MARK: InitProducerId

    /// A new producer id (from the cluster-wide counter) at epoch 0, or the same id at the next
    /// epoch when the client names its current one; with a `transactional.id`, the id's own
    /// producer at its next epoch (`KafkaTransactions`).
    func initProducerID(_ request: InitProducerIdRequest) async -> InitProducerIdResponse {
        if let transactionalID = request.transactionalID, !transactionalID.isEmpty {
            return await transactions.initProducerID(
                transactionalID, timeoutMs: request.transactionTimeoutMs, producerID: request.producerID, epoch: request.producerEpoch)
        }
        if request.producerID >= 0, request.producerEpoch >= 0, request.producerEpoch < Int16.max {
            return InitProducerIdResponse(errorCode: .none, producerID: request.producerID, producerEpoch: request.producerEpoch + 1)
        }
        do {
            let id = try await broker.metadata.increment(MetadataKeys.kafkaProducerIDCounter)
            return InitProducerIdResponse(errorCode: .none, producerID: id, producerEpoch: 0)
        } catch {
            logger.warning("kafka.init-producer-id.failed", metadata: ["error": "\(error)"])
            return InitProducerIdResponse(errorCode: .coordinatorNotAvailable, producerID: -1, producerEpoch: -1)
        }
    }

    // MARK: ListOffsets

    func listOffsets(_ request: ListOffsetsRequest) async -> ListOffsetsResponse {
        var topics: [ListOffsetsResponse.Topic] = []
        for topic in request.topics {
            var partitions: [ListOffsetsResponse.Partition] = []
            for partition in topic.partitions {
                switch await partitionTopic(topic.name, partition.index) {
                case .failure(let failure):
                    partitions.append(ListOffsetsResponse.Partition(index: partition.index, errorCode: failure.code))
                case .success(let found):
                    partitions.append(await listOffset(
                        found, index: partition.index, timestamp: partition.timestamp, committedOnly: request.isolationLevel == 1))
                }
            }
            topics.append(ListOffsetsResponse.Topic(name: topic.name, partitions: partitions))
        }
        return ListOffsetsResponse(topics: topics)
    }

    private func listOffset(_ topic: Topic, index: Int32, timestamp: Int64, committedOnly: Bool) async -> ListOffsetsResponse.Partition {
        guard let bounds = await topic.offsetBounds() else {
            return ListOffsetsResponse.Partition(index: index, errorCode: .leaderNotAvailable)
        }
        switch timestamp {
        case ListOffsetsRequest.latest:
            // read_committed: the last stable offset.
            var latest = bounds.next
            if committedOnly, let stable = topic.publishedTransactionState?.stableOffset {
                latest = min(latest, stable)
            }
            return ListOffsetsResponse.Partition(index: index, errorCode: .none, offset: latest)
        case ListOffsetsRequest.earliest:
            return ListOffsetsResponse.Partition(index: index, errorCode: .none, offset: bounds.first)
        default:
            // The first entry published at or after the time (publish times are the log's times).
            guard let position = await topic.firstPosition(publishedAtOrAfter: timestamp),
                  let offset = await topic.offset(of: position)
            else { return ListOffsetsResponse.Partition(index: index, errorCode: .none, timestamp: -1, offset: -1) }
            let published = await topic.entries(from: position, maxEntries: 1, maxBytes: 1).first?.entry.attributes.publishTimeMs ?? timestamp
            return ListOffsetsResponse.Partition(index: index, errorCode: .none, timestamp: published, offset: offset)
        }
    }
}

/// Hears about a Produce's entries: the first one's offset from the open ledger's index as it
/// becomes durable, then the promise once every entry is (or one failed). On the topic's loop.
final class KafkaProduceReplier: PublishReplier, @unchecked Sendable {
    private let topic: Topic
    private let numMessages: Int32
    private var remaining: Int
    private let promise: EventLoopPromise<Int64>
    private var baseOffset: Int64 = -1
    private var failure: BrokerError?
    /// Where the first entry went (for a lookup when its offset was not known at once).
    private(set) var firstPosition: Position?

    init(topic: Topic, numMessages: Int32, count: Int, promise: EventLoopPromise<Int64>) {
        self.topic = topic
        self.numMessages = numMessages
        remaining = count
        self.promise = promise
    }

    func published(index: Int, result: Result<Position, BrokerError>) {
        switch result {
        case .success(let position):
            if index == 0 {
                firstPosition = position
                baseOffset = topic.offsetOfAppended(position, numMessages: numMessages) ?? -1
            }
        case .failure(let error):
            failure = failure ?? error
        }
        remaining -= 1
        guard remaining == 0 else { return }
        if let failure {
            promise.fail(failure)
        } else if baseOffset >= 0 {
            promise.succeed(baseOffset)
        } else if let firstPosition {
            // The append could not tell the offset: look it up.
            let topic = topic
            let promise = promise
            promise.completeWithTask { await topic.offset(of: firstPosition) ?? -1 }
        } else {
            promise.succeed(-1)
        }
    }
}

/// One partition's part of a Produce, decoded and encoded: the entries to append and what the
/// idempotence check needs. A value.
struct KafkaProduceEntries: Sendable {
    var entries: [ByteBuffer] = []
    var attributes: [EntryAttributes] = []
    var producerID: Int64
    var producerEpoch: Int16
    var firstSequence: Int32
    var lastSequence: Int32
    var compression: Int16
    var records = 0
    /// The transaction the entries are written in (a transactional producer's), and their producer name.
    var transaction: TransactionID?
    var producerName = ""
}
