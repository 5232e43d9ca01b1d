import Foundation
import Testing

@testable import TieredStorage

/// SigV4 against AWS's published signature test suite (aws-sig-v4-test-suite: the example
/// credentials, 2015-08-30T12:36:00Z, us-east-1, service "service").
@Suite struct SigV4Tests {
    let signer = SigV4Signer(
        accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1", service: "service")
    let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]
    let credential = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature="

    @Test func getVanilla() {
        let (canonical, signed) = SigV4Signer.canonicalRequest(
            method: "GET", path: "/", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(canonical == "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n" + SigV4Signer.emptyPayloadHash)
        #expect(signed == "host;x-amz-date")
        #expect(SigV4Signer.sha256Hex(Array(canonical.utf8)) == "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63")
        #expect(signer.authorization(
            method: "GET", path: "/", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash, amzDate: "20150830T123600Z")
            == credential + "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test func getVanillaQueryOrderKeyCase() {
        #expect(signer.authorization(
            method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")], headers: headers,
            payloadHash: SigV4Signer.emptyPayloadHash, amzDate: "20150830T123600Z")
            == credential + "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    @Test func postVanilla() {
        #expect(signer.authorization(
            method: "POST", path: "/", query: [], headers: headers, payloadHash: SigV4Signer.emptyPayloadHash, amzDate: "20150830T123600Z")
            == credential + "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
    }

    @Test func theSecretNeverShows() {
        #expect(!"\(signer)".contains("EXAMPLEKEY") && !String(reflecting: signer).contains("EXAMPLEKEY"))
        #expect(SigV4Signer.amzDate(Date(timeIntervalSince1970: 1_440_938_160)) == "20150830T123600Z")
        #expect(SigV4Signer.uriEncode("a b/c~é") == "a%20b%2Fc~%C3%A9")
    }
}

/// Credentials are looked up as AWS's tools do: the environment, then the credentials file's profile.
@Suite struct S3CredentialsTests {
    @Test func theEnvironmentWinsThenTheProfileOfTheCredentialsFile() throws {
        let fromEnvironment = try S3Credentials.resolve(environment: ["AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"])
        #expect(fromEnvironment == S3Credentials(accessKeyID: "AK", secretAccessKey: "SK"))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("credentials-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
            # comment
            [default]
            aws_access_key_id = DEF
            aws_secret_access_key = DEFSECRET

            [tier]
            aws_access_key_id=TIER
            aws_secret_access_key=TIERSECRET
            aws_session_token = TOKEN
            """.write(to: file, atomically: true, encoding: .utf8)
        let profiled = try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": file.path, "AWS_PROFILE": "tier"])
        #expect(profiled == S3Credentials(accessKeyID: "TIER", secretAccessKey: "TIERSECRET", sessionToken: "TOKEN"))
        #expect(try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": file.path]).accessKeyID == "DEF")
        #expect(throws: TieredStorageError.self) {
            try S3Credentials.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": file.path, "AWS_PROFILE": "missing"])
        }
    }

    @Test func targetsComeFromPulsarsKeys() throws {
        #expect(OffloadTarget.Driver(configName: "S3") == .awsS3)
        #expect(OffloadTarget.Driver(configName: "aws-s3") == .awsS3)
        #expect(OffloadTarget.Driver(configName: "filesystem") == .filesystem)
        #expect(OffloadTarget.Driver(configName: "google-cloud-storage") == nil)
        #expect(try OffloadTarget.filesystem(uri: "file:///var/offload").container == "/var/offload")
        #expect(throws: TieredStorageError.self) { try OffloadTarget.filesystem(uri: "hdfs://nn:9000/offload") }
        #expect(throws: TieredStorageError.self) { try OffloadTarget.filesystem(uri: "relative/dir") }
    }
}
