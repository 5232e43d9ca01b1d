import ManagedLedger
import NIOConcurrencyHelpers
import NIOCore

/// The topics this broker serves: persistent ones by their load (concurrent users of a topic share
/// one load; a failed load is forgotten so the next use tries again) and non-persistent ones (made
/// on first use). Knows nothing of how a topic loads or who owns it: `BrokerService` passes the
/// loading and asks ownership first. Thread-safe (locks); each topic belongs to one event loop.
final class TopicRegistry: Sendable {
    private let loading = NIOLockedValueBox<[TopicName: EventLoopFuture<Topic>]>([:])
    private let loaded = NIOLockedValueBox<[TopicName: Topic]>([:])
    private let nonPersistent = NIOLockedValueBox<[TopicName: NonPersistentTopic]>([:])

    /// The topic's load: the one in progress or done, else a new one run by `load` (a task).
    /// `installed` runs on `loop`, the topic's, with the loaded topic and what else `load` returned,
    /// before anyone gets the topic; `failed` turns a failed load's error into the one callers see.
    func topic<Extra: Sendable>(
        _ name: TopicName, on loop: any EventLoop, load: @escaping @Sendable () async throws -> (Topic, Extra),
        installed: @escaping @Sendable (Topic, Extra) -> Void, failed: @escaping @Sendable (any Error) -> any Error
    ) -> EventLoopFuture<Topic> {
        let (future, promise) = loading.withLockedValue { loading -> (EventLoopFuture<Topic>, EventLoopPromise<Topic>?) in
            if let existing = loading[name] { return (existing, nil) }
            let promise = loop.makePromise(of: Topic.self)
            loading[name] = promise.futureResult
            return (promise.futureResult, promise)
        }
        guard let promise else { return future }
        loop.makeFutureWithTask(load).whenComplete { result in
            switch result {
            case .success(let (topic, extra)):
                installed(topic, extra)
                self.loaded.withLockedValue { $0[name] = topic }
                promise.succeed(topic)
            case .failure(let error):
                // Forget the failed load so the next request tries again.
                _ = self.loading.withLockedValue { $0.removeValue(forKey: name) }
                promise.fail(failed(error))
            }
        }
        return future
    }

    /// The non-persistent topic `name`, made by `make` if there is none yet.
    /// The non-persistent topic, made if needed (`created`: it was).
    func nonPersistentTopic(_ name: TopicName, make: () -> NonPersistentTopic) -> (topic: NonPersistentTopic, created: Bool) {
        nonPersistent.withLockedValue { topics in
            if let existing = topics[name] { return (existing, false) }
            let topic = make()
            topics[name] = topic
            return (topic, true)
        }
    }

    /// Persistent topics loaded so far.
    var loadedTopics: [Topic] {
        loaded.withLockedValue { Array($0.values) }
    }

    /// Non-persistent topics made so far.
    var nonPersistentTopics: [NonPersistentTopic] {
        nonPersistent.withLockedValue { Array($0.values) }
    }

    /// The persistent topic if it is loaded.
    func loadedTopic(_ name: TopicName) -> Topic? {
        loaded.withLockedValue { $0[name] }
    }

    /// Forgets a persistent topic: the next use loads it anew.
    func forget(_ name: TopicName) {
        _ = loading.withLockedValue { $0.removeValue(forKey: name) }
        _ = loaded.withLockedValue { $0.removeValue(forKey: name) }
    }

    /// Forgets the non-persistent topics whose name matches; returns them.
    func forgetNonPersistentTopics(where matches: (TopicName) -> Bool) -> [NonPersistentTopic] {
        nonPersistent.withLockedValue { topics in
            let names = topics.keys.filter(matches)
            return names.compactMap { topics.removeValue(forKey: $0) }
        }
    }
}
