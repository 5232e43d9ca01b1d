import Foundation
import Testing

@testable import ServerConfig

@Suite struct ConfigFileTests {
    @Test func readsPulsarStyleKeyValueLines() throws {
        let file = try ConfigFile(text: """
            # The cluster
            clusterName=east-1
              brokerServicePort = 6651
            webServicePort:8081
            advertisedAddress   broker-1.example
            ! a comment too
            bindAddress=
            managedLedgerMaxEntriesPerLedger=100
            managedLedgerMaxEntriesPerLedger=200
            """, path: "broker.conf")
        #expect(file.string("clusterName") == "east-1")
        #expect(try file.int("brokerServicePort") == 6651)
        #expect(try file.int("webServicePort") == 8081)
        #expect(file.string("advertisedAddress") == "broker-1.example")
        // An empty value is the default, as in Pulsar; the last of two values wins.
        #expect(file.string("bindAddress") == nil)
        #expect(try file.int64("managedLedgerMaxEntriesPerLedger") == 200)
        #expect(file.lineNumbers["managedLedgerMaxEntriesPerLedger"] == 9)
        #expect(file.unknownKeys(known: ["clusterName", "brokerServicePort"]) == [
            "advertisedAddress", "bindAddress", "managedLedgerMaxEntriesPerLedger", "webServicePort",
        ])
    }

    @Test func continuationLinesEscapesAndCRLF() throws {
        let file = try ConfigFile(text: "bookkeeperMetadataServiceUri=etcd://a:2379,\\\r\n    etcd://b:2379\r\nkey\\=with\\:colon=v\\u00e9\\tx\r\nplain=ends\\\\\r\n", path: "f")
        #expect(file.string("bookkeeperMetadataServiceUri") == "etcd://a:2379,etcd://b:2379")
        #expect(file.string("key=with:colon") == "vé\tx")
        #expect(file.string("plain") == "ends\\")
        #expect(file.list("bookkeeperMetadataServiceUri") == ["etcd://a:2379", "etcd://b:2379"])
    }

    @Test func badValuesNameTheKeyTheValueAndTheFileLine() throws {
        let file = try ConfigFile(text: "brokerServicePort=66x50\nwebServicePort=70000\nflag=yes\n", path: "/etc/magnetar/broker.conf")
        #expect(throws: ConfigFileError.badValue(
            key: "brokerServicePort", value: "66x50", path: "/etc/magnetar/broker.conf", line: 1, expected: "an integer")
        ) { try file.int("brokerServicePort", in: 1...65535) }
        do {
            _ = try file.int("webServicePort", in: 1...65535)
            Issue.record("70000 accepted as a port")
        } catch {
            #expect(error.description == "/etc/magnetar/broker.conf:2: webServicePort=70000 is not valid: expected an integer from 1 to 65535")
        }
        #expect(throws: ConfigFileError.self) { try file.bool("flag") }
        #expect(try file.int("absent") == nil)
    }

    @Test func syntaxErrorsAndUnreadableFilesSayWhere() throws {
        #expect(throws: ConfigFileError.syntax(path: "f", line: 2, reason: "a line without a key: '=value'")) {
            try ConfigFile(text: "a=1\n=value\n", path: "f")
        }
        #expect(throws: ConfigFileError.self) { try ConfigFile(text: "a=\\u12", path: "f") }
        do {
            _ = try ConfigFile(path: "/nonexistent/standalone.conf")
            Issue.record("a missing file was read")
        } catch {
            #expect(error.description.hasPrefix("cannot read configuration file /nonexistent/standalone.conf: "))
        }
    }

    @Test func aFileLargerThanTheLimitIsRefusedBeforeItIsRead() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("big-\(UUID().uuidString).conf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: ConfigFile.maxFileBytes + 1)))
        do {
            _ = try ConfigFile(path: path)
            Issue.record("an oversized file was read")
        } catch {
            #expect(error.description.contains("larger than \(ConfigFile.maxFileBytes) bytes"))
        }
    }
}

/// `conf/*.conf` document exactly the keys each role reads, each with its default.
@Suite struct ConfigKeysTests {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test(arguments: [
        ("standalone.conf", ConfigKeys.standalone), ("broker.conf", ConfigKeys.broker), ("bookkeeper.conf", ConfigKeys.storage),
    ])
    func shippedFilesDocumentEverySupportedKey(_ name: String, _ keys: Set<String>) throws {
        let path = Self.repositoryRoot.appendingPathComponent("conf").appendingPathComponent(name).path
        let file = try ConfigFile(path: path)
        let documented = Set(file.values.keys).union(file.emptyKeys)
        #expect(documented == keys, "\(name): documented but not read: \(documented.subtracting(keys).sorted()); read but not documented: \(keys.subtracting(documented).sorted())")
    }
}
