@testable import BrokerServer
import ServiceLifecycle
import Testing

/// `messagingProtocols` picks the endpoints served beside Pulsar's.
@Suite struct ProtocolEndpointsTests {
    struct Idle: Service {
        func run() async throws {}
    }

    let kafka = ProtocolEndpoint(name: "kafka", configKeys: ["kafkaListeners"]) { _ in Idle() }
    let amqp = ProtocolEndpoint(name: "amqp", configKeys: []) { _ in Idle() }

    @Test func namesPickEndpointsInOrderOnceEachAndPulsarIsAlwaysThere() throws {
        let selected = try ProtocolEndpoints.select([" AMQP", "pulsar", "kafka", "amqp", ""], from: [kafka, amqp])
        #expect(selected.map(\.name) == ["amqp", "kafka"])
        #expect(try ProtocolEndpoints.select([], from: [kafka]).isEmpty)
        #expect(try ProtocolEndpoints.select(["pulsar"], from: []).isEmpty)
    }

    @Test func anUnknownNameSaysWhatThisBuildServes() {
        #expect {
            try ProtocolEndpoints.select(["kafka", "mqtt"], from: [kafka])
        } throws: { error in
            guard let error = error as? EndpointSelectionError else { return false }
            return error.name == "mqtt" && error.served == ["pulsar", "kafka"]
                && error.description.contains("'mqtt' is not a protocol this build serves (it serves: pulsar, kafka)")
        }
    }
}
