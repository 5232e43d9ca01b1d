import Foundation
import ManagedLedger
import NIOConcurrencyHelpers

/// A regex subscription's topic pattern as Pulsar applies it (`TopicList.filterTopics`): the
/// domain scheme is taken off the pattern and the names, a partition is matched by its
/// partitioned topic's name, and the whole name must match. Immutable, so safe from any thread.
public struct TopicListPattern: @unchecked Sendable {
    private let regex: NSRegularExpression
    /// Patterns longer than this are refused (a client's input, compiled and run on every list).
    public static let maxLength = 4096

    public init(_ pattern: String) throws(BrokerError) {
        guard pattern.utf8.count <= Self.maxLength else {
            throw BrokerError(.badRequest, "topics pattern is longer than \(Self.maxLength) bytes")
        }
        do {
            regex = try NSRegularExpression(pattern: Self.withoutScheme(pattern))
        } catch {
            throw BrokerError(.badRequest, "topics pattern '\(pattern)' is not a regular expression: \(error)")
        }
    }

    private static func withoutScheme(_ name: String) -> String {
        guard let range = name.range(of: "://") else { return name }
        return String(name[range.upperBound...])
    }

    public func matches(_ topic: String) -> Bool {
        var name = Self.withoutScheme(topic)
        if let range = name.range(of: "-partition-", options: .backwards), Int(name[range.upperBound...]) != nil {
            name = String(name[..<range.lowerBound])
        }
        let whole = NSRange(name.startIndex..., in: name)
        guard let match = regex.firstMatch(in: name, options: [.anchored], range: whole) else { return false }
        return match.range == whole
    }

    public func filter(_ topics: [String]) -> [String] { topics.filter(matches) }
}

/// The topic-list watches of the broker's connections (WATCH_TOPIC_LIST): each watch holds its
/// namespace, pattern and the list it was last told; `reconcile` compares that with the namespace's
/// current topics and tells each watch what was created and deleted. Thread-safe (a lock).
public final class TopicListWatchers: Sendable {
    public struct Token: Hashable, Sendable {
        public var connectionID: UInt64
        public var watcherID: UInt64
        public init(connectionID: UInt64, watcherID: UInt64) {
            self.connectionID = connectionID
            self.watcherID = watcherID
        }
    }

    /// Called with the topics created and deleted since the watch was last told, and the new list's hash.
    public typealias Notify = @Sendable (_ created: [String], _ deleted: [String], _ hash: String) -> Void

    private struct Watch {
        var namespace: String
        var pattern: TopicListPattern
        var topics: [String]
        var notify: Notify
    }

    private let watches = NIOLockedValueBox([Token: Watch]())

    public init() {}

    /// Starts a watch told `topics` (sorted, already filtered) so far.
    func add(_ token: Token, namespace: String, pattern: TopicListPattern, topics: [String], notify: @escaping Notify) {
        watches.withLockedValue { $0[token] = Watch(namespace: namespace, pattern: pattern, topics: topics, notify: notify) }
    }

    public func remove(_ token: Token) {
        _ = watches.withLockedValue { $0.removeValue(forKey: token) }
    }

    /// A connection closed: its watches end.
    public func removeAll(connectionID: UInt64) {
        watches.withLockedValue { $0 = $0.filter { $0.key.connectionID != connectionID } }
    }

    public var count: Int { watches.withLockedValue { $0.count } }

    var namespaces: Set<String> { watches.withLockedValue { Set($0.values.map(\.namespace)) } }

    /// Tells every watch of `namespace` how `topics` (the namespace's persistent topics now, sorted)
    /// differ from what it was told.
    func reconcile(namespace: String, topics: [String]) {
        let changes: [(Notify, [String], [String], String)] = watches.withLockedValue { watches in
            var changes: [(Notify, [String], [String], String)] = []
            for (token, watch) in watches where watch.namespace == namespace {
                let current = watch.pattern.filter(topics)
                guard current != watch.topics else { continue }
                let before = Set(watch.topics)
                let after = Set(current)
                changes.append((
                    watch.notify, current.filter { !before.contains($0) }, watch.topics.filter { !after.contains($0) },
                    BrokerService.topicListHash(current)))
                watches[token]?.topics = current
            }
            return changes
        }
        // Outside the lock: a notification writes to a connection.
        for (notify, created, deleted, hash) in changes { notify(created, deleted, hash) }
    }
}

extension BrokerService {
    /// Most topic-list watches one connection may hold.
    public static let maxTopicListWatchesPerConnection = 1_000

    /// Starts a topic-list watch: the namespace's persistent topics matching `pattern` now (sorted)
    /// and their hash; later changes go to `notify` (checked once a second by the policy pass, so
    /// topics created on other brokers of a cluster are seen too).
    public func watchTopicList(
        _ token: TopicListWatchers.Token, namespace: String, pattern: String, notify: @escaping TopicListWatchers.Notify
    ) async throws -> (topics: [String], hash: String) {
        let compiled = try TopicListPattern(pattern)
        let topics = compiled.filter(try await topicsOfNamespace(namespace, persistent: true, nonPersistent: false).topics)
        topicListWatchers.add(token, namespace: namespace, pattern: compiled, topics: topics, notify: notify)
        return (topics, Self.topicListHash(topics))
    }

    /// Compares every watched namespace's topics with what its watches were told.
    func reconcileTopicListWatches() async {
        for namespace in topicListWatchers.namespaces {
            guard let topics = try? await topicsOfNamespace(namespace, persistent: true, nonPersistent: false).topics else { continue }
            topicListWatchers.reconcile(namespace: namespace, topics: topics)
        }
    }
}
