#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Testing

@testable import Metadata

/// A throwaway single-node etcd on loopback for one test suite: its own data directory and free ports,
/// started by the `.etcdServer` suite trait and stopped (SIGTERM to its PID) when the suite ends.
///
/// Tests reach the running server through `EtcdTestServer.current`; each test namespaces its keys under
/// its own root prefix, so tests in a suite share one server without seeing each other's keys.
/// `@unchecked Sendable`: the stored properties are constants, and `Process` is only asked whether it
/// runs and for its PID.
final class EtcdTestServer: @unchecked Sendable {
    /// The skip message shown when no etcd is installed.
    static let missingMessage = Comment(
        rawValue: "etcd not found on PATH: the etcd tests are skipped. Install it with "
            + "`RUNLEVEL=1 apt-get install -y etcd-server` (scripts/test.sh does) to run them.")

    /// The `etcd` executable, from PATH or the Debian location; nil when it is not installed.
    static let binaryPath: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let candidates = path.split(separator: ":").map { "\($0)/etcd" } + ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static var isAvailable: Bool { binaryPath != nil }

    @TaskLocal static var current: EtcdTestServer?

    let endpoint: URL
    let dataDirectory: String
    private let process: Process

    private init(endpoint: URL, dataDirectory: String, process: Process) {
        self.endpoint = endpoint
        self.dataDirectory = dataDirectory
        self.process = process
    }

    /// Starts etcd and waits until it answers; a few tries in case a free port was taken meanwhile.
    static func start() async throws -> EtcdTestServer {
        guard let binaryPath else { throw MetadataStoreError.io("etcd not installed") }
        var lastError = ""
        for _ in 1...3 {
            let directory = makeTemporaryDirectory()
            let clientPort = freeLoopbackPort()
            let peerPort = freeLoopbackPort()
            let client = "http://127.0.0.1:\(clientPort)"
            let peer = "http://127.0.0.1:\(peerPort)"
            let process = Process()
            // A small shell stands between us and etcd so that etcd dies with the test process even when
            // that crashes: it stops etcd (by its PID) on SIGTERM, or once our PID is gone.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = [
                "-c",
                """
                "$0" "$@" & etcd=$!
                trap 'kill $etcd; wait $etcd; exit 0' TERM
                while kill -0 \(getpid()) 2>/dev/null && kill -0 $etcd 2>/dev/null; do sleep 1; done
                kill $etcd 2>/dev/null; wait $etcd
                """,
                binaryPath,
                "--name", "magnetar-test",
                "--data-dir", "\(directory)/data",
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "magnetar-test=\(peer)",
            ]
            let logPath = "\(directory)/etcd.log"
            FileManager.default.createFile(atPath: logPath, contents: nil)
            let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            process.standardOutput = log
            process.standardError = log
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let server = EtcdTestServer(endpoint: URL(string: client)!, dataDirectory: directory, process: process)
            if await server.waitUntilReady(timeout: .seconds(20)) {
                return server
            }
            lastError = (try? String(contentsOfFile: logPath, encoding: .utf8))?.suffix(2000).description ?? ""
            server.stop()
        }
        throw MetadataStoreError.io("test etcd did not start; its log ends with:\n\(lastError)")
    }

    /// Stops etcd (SIGTERM to the watchdog shell, which stops etcd by its PID and waits for it) and
    /// removes its data directory.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        removeTemporaryDirectory(dataDirectory)
    }

    private func waitUntilReady(timeout: Duration) async -> Bool {
        let probe = EtcdMetadataStore(
            endpoint: endpoint, rootPrefix: "/probe", retryPolicy: EtcdRetryPolicy(maxAttempts: 1),
            requestTimeout: .seconds(2))
        defer { Task { await probe.close() } }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, process.isRunning {
            if (try? await probe.checkConnection()) != nil { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// A loopback TCP port nobody listens on right now (bind to port 0, read it back, close).
    private static func freeLoopbackPort() -> Int {
        #if canImport(Glibc)
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let descriptor = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        precondition(descriptor >= 0, "socket() failed: \(errno)")
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
            }
        }
        precondition(bound, "bind to 127.0.0.1:0 failed: \(errno)")
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Runs a whole suite with a fresh `EtcdTestServer` in `EtcdTestServer.current` (nothing when etcd is
/// not installed: the suite's etcd tests are then not generated or are disabled).
struct EtcdServerTrait: SuiteTrait, TestScoping {
    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        guard EtcdTestServer.isAvailable else {
            try await function()
            return
        }
        let server = try await EtcdTestServer.start()
        do {
            try await EtcdTestServer.$current.withValue(server) { try await function() }
        } catch {
            server.stop()
            throw error
        }
        server.stop()
    }
}

extension Trait where Self == EtcdServerTrait {
    /// Starts a private etcd for the suite and stops it afterwards.
    static var etcdServer: Self { Self() }
}

/// A store on the suite's etcd whose keys live under a root prefix of their own.
func makeEtcdStore(
    rootPrefix: String = "/test-\(UUID().uuidString)", sessionTTL: Duration = .seconds(10)
) throws -> EtcdMetadataStore {
    guard let server = EtcdTestServer.current else {
        throw MetadataStoreError.io("no test etcd is running: give the suite the .etcdServer trait")
    }
    return EtcdMetadataStore(endpoint: server.endpoint, rootPrefix: rootPrefix, sessionTTL: sessionTTL)
}
