import Foundation
import VaultCore

/// libFuzzer entry: an import file, as .env and as JSON Lines. Refused with a line number, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImport(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let content = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? ImportFormat.parseEnv(content, prefix: "p/", kind: .other, app: nil)
    _ = try? ImportFormat.parseJSONLines(content, kind: .other, app: nil)
    return 0
}

@main
enum FuzzImportMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzImport($0, $1) })
    }
}

/// libFuzzer's driver (in the runtime that -sanitize=fuzzer links): runs the fuzzing loop with our entry.
/// SwiftPM points an executable's `main` at the target's own, so that one hands over to libFuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
