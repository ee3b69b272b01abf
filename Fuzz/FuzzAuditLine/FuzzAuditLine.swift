import Foundation
import FuzzSupport
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
    static func main() { runFuzzer(fuzzAuditLine) }
}
