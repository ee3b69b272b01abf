import NIOCore
import VaultCore
import VaultCrypto
import VaultPolicy
import VaultStore

/// What the daemon answers to one request, before it is encoded.
public enum Reply: Sendable {
    case pong
    case whoami(Caller)
    case names([String])
    case token(TokenReply)
    case error(ErrorCode, String)

    public enum ErrorCode: String, Sendable {
        case badRequest = "bad_request", unknownOp = "unknown_op", tooLarge = "too_large", denied
        case notFound = "not_found", unavailable, rateLimited = "rate_limited", `internal`
    }

    /// A granted `get`: the opened token (wiped when the reply is released) and its proof, if asked.
    /// A class, so a reply moving through the audit callbacks is one reference, not a record's every field.
    public final class TokenReply: Sendable {
        public let record: TokenRecord
        public let secret: SecretBytes
        public let proof: (hex: String, time: Int64?)?

        public init(record: TokenRecord, secret: SecretBytes, proof: (hex: String, time: Int64?)?) {
            self.record = record
            self.secret = secret
            self.proof = proof
        }
    }

    /// Whether the connection closes after this reply (only `too_large`).
    public var closesConnection: Bool {
        if case .error(.tooLarge, _) = self { return true }
        return false
    }
}

/// Encodes replies as protocol v1 lines: `{"id":…,"ok":…,…}\n`.
public enum ReplyEncoder {
    public static func encode(_ reply: Reply, id: [UInt8]?, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{")
        if let id {
            buffer.writeStaticString("\"id\":")
            buffer.writeBytes(id)
            buffer.writeStaticString(",")
        }
        switch reply {
        case .pong:
            buffer.writeStaticString("\"ok\":true,\"protocol\":1")
        case .whoami(let caller):
            buffer.writeStaticString("\"ok\":true,\"uid\":")
            writeDecimal(caller.uid, into: &buffer)
            buffer.writeStaticString(",\"gid\":")
            writeDecimal(caller.gid, into: &buffer)
            buffer.writeStaticString(",\"pid\":")
            writeDecimal(caller.pid, into: &buffer)
        case .names(let names):
            buffer.writeStaticString("\"ok\":true,\"names\":[")
            for (i, name) in names.enumerated() {
                if i > 0 { buffer.writeStaticString(",") }
                writeJSONString(name, into: &buffer)
            }
            buffer.writeStaticString("]")
        case .token(let t):
            let r = t.record
            buffer.writeStaticString("\"ok\":true,\"name\":")
            writeJSONString(r.name, into: &buffer)
            buffer.writeStaticString(",\"token\":")
            t.secret.withUnsafeBytes { writeJSONString($0, into: &buffer) }
            buffer.writeStaticString(",\"kind\":")
            writeJSONString(r.kind, into: &buffer)
            buffer.writeStaticString(",\"expires_at\":")
            // Meta's 0 means "never"; the contract says null for a token that never expires.
            writeOptional(r.expiresAt.flatMap { $0 == 0 ? nil : $0 }, into: &buffer)
            buffer.writeStaticString(",\"scopes\":[")
            // Typed values, each escaped: stored text is never spliced into the reply.
            for (i, scope) in Vault.scopes(of: r).enumerated() {
                if i > 0 { buffer.writeStaticString(",") }
                writeJSONString(scope, into: &buffer)
            }
            buffer.writeStaticString("]")
            buffer.writeStaticString(",\"valid\":")
            if let v = r.valid { if v { buffer.writeStaticString("true") } else { buffer.writeStaticString("false") } } else { buffer.writeStaticString("null") }
            buffer.writeStaticString(",\"checked_at\":")
            writeOptional(r.checkedAt, into: &buffer)
            if let proof = t.proof {
                buffer.writeStaticString(",\"appsecret_proof\":\"")
                buffer.writeString(proof.hex)
                buffer.writeStaticString("\"")
                if let time = proof.time {
                    buffer.writeStaticString(",\"appsecret_time\":")
                    writeDecimal(time, into: &buffer)
                }
            }
        case .error(let code, let message):
            buffer.writeStaticString("\"ok\":false,\"error\":{\"code\":\"")
            buffer.writeString(code.rawValue)
            buffer.writeStaticString("\",\"message\":")
            writeJSONString(message, into: &buffer)
            buffer.writeStaticString("}")
        }
        buffer.writeStaticString("}\n")
    }

    private static func writeOptional(_ v: Int64?, into buffer: inout ByteBuffer) {
        if let v { writeDecimal(v, into: &buffer) } else { buffer.writeStaticString("null") }
    }

    static func writeDecimal<I: BinaryInteger>(_ value: I, into buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 21) { out in
            var v = UInt64(value.magnitude)
            var digits = 0
            repeat { digits += 1; v /= 10 } while v > 0
            var n = 0
            if value < 0 { out[0] = UInt8(ascii: "-"); n = 1 }
            v = UInt64(value.magnitude)
            for k in stride(from: n + digits - 1, through: n, by: -1) {
                out[k] = UInt8(48 + v % 10)
                v /= 10
            }
            return n + digits
        }
    }

    static func writeJSONString(_ string: String, into buffer: inout ByteBuffer) {
        if let done: Void = string.utf8.withContiguousStorageIfAvailable({ writeJSONString(UnsafeRawBufferPointer($0), into: &buffer) }) {
            return done
        }
        Array(string.utf8).withUnsafeBytes { writeJSONString($0, into: &buffer) }
    }

    /// Writes a JSON string literal, escaping `"`, `\` and control characters, straight into the buffer.
    /// The common case — nothing to escape, as in every Meta token — is one scan and one copy.
    static func writeJSONString(_ bytes: UnsafeRawBufferPointer, into buffer: inout ByteBuffer) {
        let n = bytes.count
        guard n > 0 else { buffer.writeStaticString("\"\""); return }
        let p = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
        @inline(__always) func plain(_ b: UInt8) -> Bool { b >= 0x20 && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") }
        var escapes = 0  // bytes the escapes add, so exactly the needed space is reserved
        for i in 0..<n where !plain(p[i]) {
            let b = p[i]
            escapes += (b == 0x0a || b == 0x0d || b == 0x09 || b >= 0x20) ? 1 : 5
        }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n + escapes + 2) { raw in
            let out = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            out[0] = UInt8(ascii: "\"")
            if escapes == 0 {
                (out + 1).update(from: p, count: n)
                out[n + 1] = UInt8(ascii: "\"")
                return n + 2
            }
            let hex: StaticString = "0123456789abcdef"
            var o = 1
            for i in 0..<n {
                let b = p[i]
                if plain(b) {
                    out[o] = b; o += 1
                    continue
                }
                out[o] = UInt8(ascii: "\\"); o += 1
                switch b {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out[o] = b; o += 1
                case 0x0a: out[o] = UInt8(ascii: "n"); o += 1
                case 0x0d: out[o] = UInt8(ascii: "r"); o += 1
                case 0x09: out[o] = UInt8(ascii: "t"); o += 1
                default:
                    out[o] = UInt8(ascii: "u"); out[o + 1] = UInt8(ascii: "0"); out[o + 2] = UInt8(ascii: "0")
                    out[o + 3] = hex.utf8Start[Int(b >> 4)]; out[o + 4] = hex.utf8Start[Int(b & 0xf)]
                    o += 5
                }
            }
            out[o] = UInt8(ascii: "\""); o += 1
            return o
        }
    }
}
