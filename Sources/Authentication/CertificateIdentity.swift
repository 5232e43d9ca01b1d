import X509

/// Who a TLS client certificate names (Pulsar's `AuthenticationProviderTls`: the subject's common
/// name is the role). The certificate was verified by the TLS handshake; this only reads it.
public enum CertificateIdentity {
    /// The subject's first common name; nil if the bytes are not a certificate or it has none.
    public static func commonName(derEncoded der: [UInt8]) -> String? {
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                if let text = String(attribute.value), !text.isEmpty { return text }
            }
        }
        return nil
    }
}
