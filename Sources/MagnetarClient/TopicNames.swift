import Foundation

/// Topic name rules the client applies before a topic goes on the wire (notes §3). Pure functions.
enum TopicNames {
    /// `t` → `persistent://public/default/t`; `a/b/t` → `persistent://a/b/t`; full names pass unchanged.
    static func normalize(_ topic: String) -> String {
        if topic.contains("://") { return topic }
        let parts = topic.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.count {
        case 1: return "persistent://public/default/\(topic)"
        default: return "persistent://\(topic)"
        }
    }

    /// The index from a `-partition-N` suffix, or -1.
    static func partitionIndex(_ topic: String) -> Int32 {
        guard let range = topic.range(of: "-partition-", options: .backwards) else { return -1 }
        return Int32(topic[range.upperBound...]) ?? -1
    }
}
