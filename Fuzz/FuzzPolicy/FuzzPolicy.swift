import Foundation
import FuzzSupport
import VaultPolicy

/// libFuzzer entry: a policy file. It parses or is refused with a line number; it never crashes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPolicy(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if let policy = try? Policy.parse(text, path: "fuzz.toml") {
        _ = policy.decide(Caller(uid: 1001, gid: 1001, pid: 1, supplementaryGroups: [1001]), name: "acme/ads")
    }
    return 0
}

@main
enum FuzzPolicyMain {
    static func main() { runFuzzer(fuzzPolicy) }
}
