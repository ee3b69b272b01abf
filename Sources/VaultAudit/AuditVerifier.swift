import Foundation
import VaultCrypto
import VaultStore

/// Checks an audit log end to end: every record's hash chain, its MAC (with the audit keys), its
/// Ed25519 signature (with the keys or just the exported public key), segment continuity, and the
/// checkpoint kept in vault.db. Stops at the first bad record and names it.
public enum AuditVerifier {
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public let file: String
        public let line: Int
        public let seq: Int64?
        public let message: String

        public var description: String {
            "\(file):\(line)\(seq.map { " (seq \($0))" } ?? ""): \(message)"
        }
    }

    public struct Report: Sendable {
        public var records: Int64 = 0
        public var segments = 0
        public var lastSeq: Int64 = 0
        /// The highest seq whose record carries a valid signature.
        public var signedThrough: Int64 = 0
        public var checkedMACs = false
        public var checkedCheckpoint = false
        public var problem: Problem?

        public var ok: Bool { problem == nil }
    }

    /// `keys` checks MACs and the checkpoint; `publicKey` alone checks the chain and signatures.
    public static func verify(directory: String, keys: AuditKeys?, publicKey: [UInt8]?,
                              checkpoint: AuditCheckpointRecord?) -> Report {
        var report = Report()
        report.checkedMACs = keys != nil
        let publicKey = publicKey ?? keys?.publicKey
        let segments = AuditSegments.list(directory)
        var expectedSeq: Int64 = 1
        var prevHash = AuditRecordFormat.genesisHash
        var checkpointHash: [UInt8]?

        for (position, index) in segments.enumerated() {
            let path = AuditSegments.path(directory, index)
            if index != position + 1 {
                report.problem = Problem(file: AuditSegments.path(directory, position + 1), line: 0, seq: nil,
                                         message: "segment missing: the log jumps to \(path)")
                return report
            }
            report.segments += 1
            guard let data = FileManager.default.contents(atPath: path) else {
                report.problem = Problem(file: path, line: 0, seq: nil, message: "cannot read the segment")
                return report
            }
            let bytes = [UInt8](data)
            var lineNumber = 0
            var start = 0
            while start < bytes.count {
                lineNumber += 1
                guard let end = bytes[start...].firstIndex(of: 0x0a) else {
                    report.problem = Problem(file: path, line: lineNumber, seq: nil,
                                             message: "the last record is cut off mid-line (truncated)")
                    return report
                }
                let line = bytes[start..<end]
                start = end + 1
                func fail(_ seq: Int64?, _ message: String) -> Report {
                    var r = report
                    r.problem = Problem(file: path, line: lineNumber, seq: seq, message: message)
                    return r
                }
                guard let record = AuditRecordFormat.parse(line) else {
                    return fail(nil, "not an audit record (changed or inserted text)")
                }
                if record.seq != expectedSeq {
                    if record.seq > expectedSeq {
                        let wanted = Array("{\"seq\":\(expectedSeq),".utf8)
                        if bytes[start...].split(separator: 0x0a).contains(where: { $0.starts(with: wanted) }) {
                            return fail(record.seq, "expected seq \(expectedSeq), which comes later: records were reordered")
                        }
                        let missing = record.seq - 1 == expectedSeq ? "record \(expectedSeq) is" : "records \(expectedSeq)–\(record.seq - 1) are"
                        return fail(record.seq, "\(missing) missing (deleted)")
                    }
                    return fail(record.seq, "expected seq \(expectedSeq): a record was reordered or inserted")
                }
                let computed = prevHash.withUnsafeBytes { p in line[line.startIndex..<record.prefixEnd].withUnsafeBytes { SHA256.hash(p, $0) } }
                guard constantTimeEqual(computed, record.hash) else {
                    return fail(record.seq, "the record does not match its hash: it was changed, or the chain before it was")
                }
                if let keys, !constantTimeEqual(keys.recordMAC(hash: record.hash), record.mac) {
                    return fail(record.seq, "the record's MAC does not verify: it was forged without the audit key")
                }
                if let signature = record.signature, let publicKey {
                    guard SigningKey.verify(signature: signature, message: AuditKeys.signedMessage(hash: record.hash), publicKey: publicKey) else {
                        return fail(record.seq, "the record's signature does not verify")
                    }
                    report.signedThrough = record.seq
                }
                if let checkpoint, record.seq == checkpoint.seq { checkpointHash = record.hash }
                prevHash = record.hash
                report.lastSeq = record.seq
                report.records += 1
                expectedSeq += 1
            }
        }
        if let checkpoint, let keys {
            report.checkedCheckpoint = true
            let cpHash = decodeHex(checkpoint.hash) ?? []
            let last = segments.last.map { AuditSegments.path(directory, $0) } ?? directory
            guard constantTimeEqual(keys.checkpointMAC(seq: checkpoint.seq, hash: cpHash), decodeHex(checkpoint.mac) ?? []) else {
                report.problem = Problem(file: "vault.db", line: 0, seq: checkpoint.seq, message: "the audit checkpoint in vault.db was altered")
                return report
            }
            guard report.lastSeq >= checkpoint.seq else {
                report.problem = Problem(file: last, line: 0, seq: report.lastSeq + 1,
                                         message: "the log ends at seq \(report.lastSeq) but vault.db's checkpoint vouches for seq \(checkpoint.seq): records were cut off (truncated)")
                return report
            }
            guard let seen = checkpointHash, constantTimeEqual(seen, cpHash) else {
                report.problem = Problem(file: last, line: 0, seq: checkpoint.seq,
                                         message: "record \(checkpoint.seq) differs from the one vault.db's checkpoint vouches for")
                return report
            }
        }
        return report
    }
}
