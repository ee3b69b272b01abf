import Foundation
import VaultWire

/// libFuzzer entry: one request line. The scanner must never crash or read out of bounds, and an
/// accepted request's id must be one JSON value (it is echoed byte for byte into the reply).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let line = UnsafeRawBufferPointer(start: data, count: size)
    if case .success(let request) = Request.parse(line) {
        if let id = request.id {
            precondition(!id.isEmpty && (id.first == UInt8(ascii: "\"") || id.first == UInt8(ascii: "-") || (0x30...0x39).contains(id.first!)),
                         "an accepted id that is neither a string nor a number")
        }
        _ = request.idText
    }
    return 0
}

@main
enum FuzzRequestMain {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { fuzzRequest($0, $1) })
    }
}

/// libFuzzer's driver (in the runtime that -sanitize=fuzzer links): runs the fuzzing loop with our entry.
/// SwiftPM points an executable's `main` at the target's own, so that one hands over to libFuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32
