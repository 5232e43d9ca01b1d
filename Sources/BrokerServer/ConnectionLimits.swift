/// Per-connection limits of the Pulsar endpoint (the frame size limit is in `PulsarLimits`).
enum ConnectionLimits {
    /// SENDs in flight (received, receipt not yet written) before the connection stops reading;
    /// reading resumes at half. Pulsar's `maxPendingPublishRequestsPerConnection` default.
    static let maxPendingPublishesPerConnection = 1_000
}
