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
    public struct TokenReply: Sendable {
        public let record: TokenRecord
        public let secret: SecretBytes
        public let proof: (hex: String, time: Int64?)?
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
            buffer.writeString(String(caller.uid))
            buffer.writeStaticString(",\"gid\":")
            buffer.writeString(String(caller.gid))
            buffer.writeStaticString(",\"pid\":")
            buffer.writeString(String(caller.pid))
        case .names(let names):
            buffer.writeStaticString("\"ok\":true,\"names\":[")
            for (i, name) in names.enumerated() {
                if i > 0 { buffer.writeStaticString(",") }
                writeJSONString(name.utf8, into: &buffer)
            }
            buffer.writeStaticString("]")
        case .token(let t):
            let r = t.record
            buffer.writeStaticString("\"ok\":true,\"name\":")
            writeJSONString(r.name.utf8, into: &buffer)
            buffer.writeStaticString(",\"token\":")
            t.secret.withUnsafeBytes { writeJSONString($0, into: &buffer) }
            buffer.writeStaticString(",\"kind\":")
            writeJSONString(r.kind.utf8, into: &buffer)
            buffer.writeStaticString(",\"expires_at\":")
            // Meta's 0 means "never"; the contract says null for a token that never expires.
            writeOptional(r.expiresAt.flatMap { $0 == 0 ? nil : $0 }, into: &buffer)
            buffer.writeStaticString(",\"scopes\":")
            buffer.writeString(r.scopes.isEmpty ? "[]" : r.scopes)  // stored as a JSON array we wrote
            buffer.writeStaticString(",\"valid\":")
            if let v = r.valid { buffer.writeString(v ? "true" : "false") } else { buffer.writeStaticString("null") }
            buffer.writeStaticString(",\"checked_at\":")
            writeOptional(r.checkedAt, into: &buffer)
            if let proof = t.proof {
                buffer.writeStaticString(",\"appsecret_proof\":\"")
                buffer.writeString(proof.hex)
                buffer.writeStaticString("\"")
                if let time = proof.time {
                    buffer.writeStaticString(",\"appsecret_time\":")
                    buffer.writeString(String(time))
                }
            }
        case .error(let code, let message):
            buffer.writeStaticString("\"ok\":false,\"error\":{\"code\":\"")
            buffer.writeString(code.rawValue)
            buffer.writeStaticString("\",\"message\":")
            writeJSONString(message.utf8, into: &buffer)
            buffer.writeStaticString("}")
        }
        buffer.writeStaticString("}\n")
    }

    private static func writeOptional(_ v: Int64?, into buffer: inout ByteBuffer) {
        if let v { buffer.writeString(String(v)) } else { buffer.writeStaticString("null") }
    }

    /// Writes a JSON string literal, escaping `"`, `\` and control characters.
    static func writeJSONString<C: Sequence>(_ bytes: C, into buffer: inout ByteBuffer) where C.Element == UInt8 {
        let hex: StaticString = "0123456789abcdef"
        buffer.writeInteger(UInt8(ascii: "\""))
        for b in bytes {
            switch b {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case 0x0a: buffer.writeStaticString("\\n")
            case 0x0d: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            case 0..<0x20:
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex.utf8Start[Int(b >> 4)])
                buffer.writeInteger(hex.utf8Start[Int(b & 0xf)])
            default: buffer.writeInteger(b)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
