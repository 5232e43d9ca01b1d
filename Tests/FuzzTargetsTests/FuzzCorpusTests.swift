import Foundation
import FuzzTargets
import TestSupport
import Testing

/// Replays each fuzz target's seed corpus and every kept crash (`Corpus/<target>/`, where
/// `scripts/fuzz` also saves the reproducer of any crash it finds), plus seeded random mutations of
/// the seeds: none may trap.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    static func inputs(_ target: FuzzTarget) throws -> [Data] {
        let directory = corpus.appendingPathComponent(target.rawValue)
        return try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
            .map { try Data(contentsOf: directory.appendingPathComponent($0)) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func corpusReplays(_ target: FuzzTarget) async throws {
        let inputs = try Self.inputs(target)
        #expect(!inputs.isEmpty, "every target has a seed corpus")
        for input in inputs { await target.run([UInt8](input)) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func mutatedSeedsDoNotTrap(_ target: FuzzTarget) async throws {
        var generator = SplitMix64(seed: 0x6d61_676e_6574_6172)
        let seeds = try Self.inputs(target)
        let rounds = target == .rest ? 50 : 2_000
        for round in 0..<rounds {
            var bytes = [UInt8](seeds[round % seeds.count])
            for _ in 0...Int(generator.next() % 8) {
                guard !bytes.isEmpty else { break }
                let index = Int(generator.next() % UInt64(bytes.count))
                switch generator.next() % 4 {
                case 0: bytes[index] = UInt8(truncatingIfNeeded: generator.next())
                case 1: bytes.remove(at: index)
                case 2: bytes.insert(UInt8(truncatingIfNeeded: generator.next()), at: index)
                default: bytes[index] ^= 0x80
                }
            }
            await target.run(bytes)
        }
    }
}

