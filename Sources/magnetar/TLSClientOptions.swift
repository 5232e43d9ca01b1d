import ArgumentParser
import MagnetarClient
import NIOSSL

/// `--tls-trust-cert` and, for brokers that ask for a client certificate, `--tls-cert-file` /
/// `--tls-key-file` (pulsar-admin's and pulsar-client's `--tls-trust-cert-path`, ...): for
/// `pulsar+ssl://` and `https://` URLs.
struct TLSClientOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The CA certificate(s) the broker's certificate must chain to (PEM), for pulsar+ssl:// and https:// URLs; default: the system's.", valueName: "file"))
    var tlsTrustCert: String?

    @Option(help: ArgumentHelp("A client certificate (PEM) for brokers that require one.", valueName: "file"))
    var tlsCertFile: String?

    @Option(help: ArgumentHelp("The client certificate's private key (PEM).", valueName: "file"))
    var tlsKeyFile: String?

    func validate() throws {
        if (tlsCertFile == nil) != (tlsKeyFile == nil) {
            throw ValidationError("--tls-cert-file and --tls-key-file go together")
        }
    }

    /// For the admin API's HTTPS (the broker's hostname is checked, as any HTTPS client does).
    func clientConfiguration() throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        do {
            if let tlsTrustCert {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(tlsTrustCert))
            }
            if let tlsCertFile, let tlsKeyFile {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(tlsCertFile).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: tlsKeyFile, format: .pem))
            }
        } catch {
            throw AdminCLIError(description: "cannot read the TLS files (\(tlsTrustCert ?? tlsCertFile ?? "")): \(error)")
        }
        return configuration
    }

    /// For the binary protocol's `pulsar+ssl://`.
    func apply(to options: inout ClientOptions) {
        options.tlsTrustCertsFile = tlsTrustCert
        options.tlsCertificateFile = tlsCertFile
        options.tlsKeyFile = tlsKeyFile
    }
}
