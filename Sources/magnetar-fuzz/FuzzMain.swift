import FuzzTargets
import Foundation

// Built two ways (scripts/fuzz):
// - with `-sanitize=fuzzer,address -DFUZZING`: libFuzzer's own `main` drives LLVMFuzzerTestOneInput;
//   the target comes from MAGNETAR_FUZZ_TARGET;
// - plainly: `magnetar-fuzz TARGET [--repeat N] FILE|DIR...` replays inputs (a crash's reproducer, a
//   corpus), N times each with the RSS after every pass.

#if FUZZING
private let fuzzTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["MAGNETAR_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        fatalError("set MAGNETAR_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver, for a program that has its own `main` (SwiftPM names an executable's entry
/// point `<module>_main` on Linux, so libFuzzer's `main` is not the one that runs).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@_cdecl("magnetar_fuzz_main")
public func magnetarFuzzMain(
    _ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in fuzzOneInput(data, size) }
}
#else
@main
struct FuzzReplay {
    static func main() throws {
        var arguments = Array(CommandLine.arguments.dropFirst())
        // `--repeat N`: every input N times, read once first (to watch a target's memory over many runs).
        var repeats = 1
        if let flag = arguments.firstIndex(of: "--repeat"), flag + 1 < arguments.count, let count = Int(arguments[flag + 1]), count > 0 {
            repeats = count
            arguments.removeSubrange(flag...(flag + 1))
        }
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count > 1 else {
            print("usage: magnetar-fuzz TARGET [--repeat N] FILE|DIR...   targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))")
            exit(2)
        }
        var inputs: [[UInt8]] = []
        for path in arguments.dropFirst() {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                print("no such file: \(path)")
                exit(2)
            }
            let files = isDirectory.boolValue
                ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { "\(path)/\($0)" } : [path]
            for file in files {
                inputs.append(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
            }
        }
        for pass in 1...repeats {
            for input in inputs {
                input.withUnsafeBytes { target.run($0) }
            }
            if repeats > 1 { print("pass \(pass): \(inputs.count) inputs, \(residentSetSize())") }
        }
        print("\(target.rawValue): \(inputs.count * repeats) inputs replayed, none trapped")
    }

    /// The process's resident set size, as /proc reports it (Linux).
    static func residentSetSize() -> String {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("VmRSS") }.map { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().joined(separator: " ") }.map { "RSS \($0)" } ?? "RSS unknown"
    }
}
#endif
