/// One change to a watched key, as delivered by `SessionCapableMetadataStore.watch(prefix:)`.
///
/// A pure value. Versions follow `VersionedValue`: 0 for a newly created key, +1 per put.
public enum MetadataEvent: Sendable, Equatable {
    /// `key` was created or overwritten and now holds `value` at `version`.
    case put(key: String, value: [UInt8], version: Int64)
    /// `key` was deleted (explicitly, or because the session lease of its ephemeral owner ended).
    /// `version` is the version it had when deleted, or -1 when the store could not tell.
    case delete(key: String, version: Int64)

    public var key: String {
        switch self {
        case .put(let key, _, _), .delete(let key, _):
            return key
        }
    }
}

/// A `MetadataStore` that also has a session: ephemeral keys that live as long as the session does,
/// and watches on key prefixes. What broker liveness and topic ownership are built on.
///
/// The session starts with the first `putEphemeral` and is kept alive in the background until `close()`,
/// which ends it (its ephemeral keys disappear at once). If the process dies or stops refreshing the
/// session (a paused or partitioned broker), the store's server ends it after its time-to-live and
/// deletes its ephemeral keys; watchers see `.delete` events. Code that owns something through an
/// ephemeral key should watch that key: its deletion means the ownership is lost.
///
/// Only `EtcdMetadataStore` implements it today: the embedded store has no other process to share a
/// session with, so there ownership is trivially the one broker's.
public protocol SessionCapableMetadataStore: MetadataStore {
    /// Like `put`, but the key is deleted when this store's session ends. Returns the new version.
    @discardableResult
    func putEphemeral(_ key: String, value: [UInt8], expectedVersion: Int64?) async throws -> Int64

    /// Every change to keys starting with `prefix` made after this call returns, in the order the store
    /// applied them. The stream finishes when the store is closed, or when the store cannot continue
    /// the watch without a gap (e.g. its history was compacted past it): then re-read and watch again.
    /// Cancelling the consuming task, or dropping the stream, stops the watch.
    func watch(prefix: String) async throws -> AsyncStream<MetadataEvent>
}
