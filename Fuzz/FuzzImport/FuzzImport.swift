import Foundation
import FuzzSupport
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
    static func main() { runFuzzer(fuzzImport) }
}
