import Authentication
@testable import BrokerServer
import Crypto
import Foundation
import Logging
import NIOSSL
import Testing
import X509

/// The TLS listeners' settings and certificate reload, on certificates made here with swift-certificates.
@Suite struct TLSCertificatesTests {
    /// A self-signed certificate for `commonName` and its key, as PEM files in a fresh directory.
    static func makePair(commonName: String, in directory: URL, name: String) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-60), notValidAfter: now.addingTimeInterval(3600),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: Certificate.Extensions {}, issuerPrivateKey: .init(key))
        let certificatePath = directory.appendingPathComponent("\(name).pem").path
        let keyPath = directory.appendingPathComponent("\(name).key").path
        try certificate.serializeAsPEM().pemString.write(toFile: certificatePath, atomically: true, encoding: .utf8)
        try key.pemRepresentation.write(toFile: keyPath, atomically: true, encoding: .utf8)
        return (certificatePath, keyPath)
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tls-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    @Test func protocolsBecomeAVersionRange() throws {
        #expect(try TLSCertificates.versions([]) == (.tlsv12, .tlsv13))
        #expect(try TLSCertificates.versions(["TLSv1.3"]) == (.tlsv13, .tlsv13))
        #expect(try TLSCertificates.versions(["TLSv1.2", "tlsv1.3"]) == (.tlsv12, .tlsv13))
        #expect(throws: TLSSettingsError.self) { try TLSCertificates.versions(["SSLv3"]) }
    }

    @Test func ciphersAreIANANames() throws {
        #expect(try TLSCertificates.ciphers(["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]) == [.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256])
        let error = #expect(throws: TLSSettingsError.self) { try TLSCertificates.ciphers(["ECDHE-RSA-AES128-GCM-SHA256"]) }
        #expect(error?.description.contains("tlsCiphers") == true)
    }

    @Test func missingFilesNameTheSetting() throws {
        let error = #expect(throws: TLSSettingsError.self) {
            try TLSCertificates(settings: TLSServerSettings(certificateFile: "/nonexistent/cert.pem", keyFile: "/nonexistent/key.pem"))
        }
        #expect(error?.description.contains("tlsCertificateFilePath") == true)
    }

    @Test func changedFilesAreReloadedAndABrokenPairKeepsTheOldOne() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let served = try Self.makePair(commonName: "first", in: directory, name: "served")
        let certificates = try TLSCertificates(settings: TLSServerSettings(certificateFile: served.certificate, keyFile: served.key))
        let logger = Logger(label: "test")
        #expect(!certificates.reloadIfChanged(logger: logger))
        _ = try certificates.makeContext()

        // A renewal writes a new pair over the files.
        let renewed = try Self.makePair(commonName: "second", in: directory, name: "renewed")
        try FileManager.default.removeItem(atPath: served.certificate)
        try FileManager.default.removeItem(atPath: served.key)
        try FileManager.default.copyItem(atPath: renewed.certificate, toPath: served.certificate)
        try FileManager.default.copyItem(atPath: renewed.key, toPath: served.key)
        #expect(certificates.reloadIfChanged(logger: logger))
        #expect(!certificates.reloadIfChanged(logger: logger))

        // A half-written certificate: not loaded, the renewed pair stays in use.
        try "-----BEGIN CERTIFICATE-----\ntruncated".write(toFile: served.certificate, atomically: true, encoding: .utf8)
        #expect(!certificates.reloadIfChanged(logger: logger))
        _ = try certificates.makeContext()
    }

    @Test func theCommonNameIsReadFromACertificate() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pair = try Self.makePair(commonName: "alice", in: directory, name: "alice")
        let der = try NIOSSLCertificate.fromPEMFile(pair.certificate)[0].toDERBytes()
        #expect(CertificateIdentity.commonName(derEncoded: der) == "alice")
        #expect(CertificateIdentity.commonName(derEncoded: [0x30, 0x03, 0x02, 0x01, 0x00]) == nil)
    }
}
