import Foundation
import FuzzSupport
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
    static func main() { runFuzzer(fuzzRequest) }
}
