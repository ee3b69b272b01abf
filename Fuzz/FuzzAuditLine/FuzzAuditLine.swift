import Foundation
import VaultAudit

/// libFuzzer entry: one audit-log line, through the verifier's parser and the query's decoder.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAuditLine(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let line = UnsafeRawBufferPointer(start: data, count: size)
    _ = AuditRecordFormat.recordSeq(line)
    _ = try? JSONDecoder().decode(AuditEntry.self, from: Data(line))
    return 0
}

@main
enum FuzzAuditLineMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzAuditLine($0, $1) })
    }
}

/// libFuzzer's driver (in the runtime that -sanitize=fuzzer links): runs the fuzzing loop with our entry.
/// SwiftPM points an executable's `main` at the target's own, so that one hands over to libFuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
