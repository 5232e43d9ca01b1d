import NIOCore
import Testing

@testable import MagnetarClient

/// Which failures a first `createProducer` / `subscribe` retries, and that it gives up with the last
/// error once the operation timeout is used up.
@Suite struct CreationRetryTests {
    @Test func retryableFailures() {
        #expect(PulsarClientError(.connectionFailed, "refused").isRetryableForCreation)
        #expect(PulsarClientError(.connectionClosed, "dropped").isRetryableForCreation)
        #expect(PulsarClientError(.timeout, "no answer").isRetryableForCreation)
        for error in [ServerError.serviceNotReady, .tooManyRequests, .metadataError, .persistenceError] {
            #expect(PulsarClientError(.server, "x", serverError: error).isRetryableForCreation, "\(error)")
        }
    }

    @Test func failuresThatRetryingCannotFix() {
        for error in [
            ServerError.authenticationError, .authorizationError, .topicTerminatedError, .producerBusy, .consumerBusy,
            .incompatibleSchema, .topicNotFound, .invalidTopicName, .producerFenced, .notAllowedError,
        ] {
            #expect(!PulsarClientError(.server, "x", serverError: error).isRetryableForCreation, "\(error)")
        }
        for code in [PulsarClientError.Code.invalidURL, .alreadyClosed, .unsupported, .protocolViolation] {
            #expect(!PulsarClientError(code, "x").isRetryableForCreation, "\(code)")
        }
    }

    @Test func refusedConnectionIsRetriedUntilTheOperationTimeout() async throws {
        // Port 1: nobody listens there, every attempt is refused at once.
        var options = ClientOptions()
        options.operationTimeout = .milliseconds(800)
        let client = try PulsarClient(url: "pulsar://127.0.0.1:1", options: options)
        do {
            _ = try await client.createProducer(topic: "t")
            Issue.record("created a producer without a broker")
        } catch let error as PulsarClientError {
            #expect(error.code == .connectionFailed)
            #expect(error.message.contains("gave up after"), "\(error)")
        }
        await client.close()
    }
}
