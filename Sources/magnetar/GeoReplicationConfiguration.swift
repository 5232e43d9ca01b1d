import GeoReplication
import ServerConfig

/// How replicators reach remote clusters, from Pulsar's keys: the token of
/// `brokerClientAuthenticationPlugin` / `brokerClientAuthenticationParameters` (as for storage
/// nodes), `brokerClientTrustCertsFilePath` and `tlsAllowInsecureConnection` for `pulsar+ssl://`
/// remotes, `replicationProducerQueueSize` (1000) messages in flight per replicator.
enum GeoReplicationConfiguration {
    static func settings(_ file: ConfigFile?) throws -> ReplicationClientSettings {
        var settings = ReplicationClientSettings()
        guard let file else { return settings }
        if let credentials = try BrokerClientAuthentication.credentials(file) {
            settings.token = { String(decoding: try credentials.data(), as: UTF8.self) }
        }
        settings.trustCertsFile = file.string("brokerClientTrustCertsFilePath").flatMap { $0.isEmpty ? nil : $0 }
        settings.allowInsecureConnection = try file.bool("tlsAllowInsecureConnection") ?? false
        settings.producerQueueSize = try file.int("replicationProducerQueueSize", in: 1...1_000_000) ?? 1000
        return settings
    }
}
