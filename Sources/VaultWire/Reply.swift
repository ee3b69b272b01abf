import NIOCore
import VaultCrypto

/// What the daemon answers to one request, before it is encoded. Every field is a typed value: nothing
/// read from the store is spliced into the reply's JSON.
public enum Reply: Sendable {
    case pong
    case whoami(uid: UInt32, gid: UInt32, pid: Int32)
    case names([String])
    case token(TokenReply)
    /// A granted `watch`: the patterns, as the client sent them.
    case watching([String])
    case error(ErrorCode, String)

    /// The error codes of protocol v1.
    public enum ErrorCode: String, Sendable, CaseIterable {
        case badRequest = "bad_request", unknownOp = "unknown_op", tooLarge = "too_large", denied
        case notFound = "not_found", unavailable, rateLimited = "rate_limited", `internal`
    }

    /// A granted `get`: the opened token (wiped when the reply is released), its metadata and its proof.
    /// A class, so a reply moving through the audit callbacks is one reference, not every field.
    public final class TokenReply: Sendable {
        public let name: String
        public let secret: SecretBytes
        public let kind: String
        /// Unix seconds, nil for a token that never expires (Meta's 0) or was never checked.
        public let expiresAt: Int64?
        public let scopes: [String]
        public let valid: Bool?
        public let checkedAt: Int64?
        public let proof: (hex: String, time: Int64?)?

        public init(name: String, secret: SecretBytes, kind: String, expiresAt: Int64?, scopes: [String], valid: Bool?,
                    checkedAt: Int64?, proof: (hex: String, time: Int64?)?) {
            self.name = name
            self.secret = secret
            self.kind = kind
            self.expiresAt = expiresAt == 0 ? nil : expiresAt
            self.scopes = scopes
            self.valid = valid
            self.checkedAt = checkedAt
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
            // The request's own id text, which the scanner checked is one JSON string or integer.
            buffer.writeStaticString("\"id\":")
            buffer.writeBytes(id)
            buffer.writeStaticString(",")
        }
        switch reply {
        case .pong:
            buffer.writeStaticString("\"ok\":true,\"protocol\":1")
        case .whoami(let uid, let gid, let pid):
            buffer.writeStaticString("\"ok\":true,\"uid\":")
            JSONText.writeDecimal(uid, into: &buffer)
            buffer.writeStaticString(",\"gid\":")
            JSONText.writeDecimal(gid, into: &buffer)
            buffer.writeStaticString(",\"pid\":")
            JSONText.writeDecimal(pid, into: &buffer)
        case .names(let names):
            buffer.writeStaticString("\"ok\":true,\"names\":")
            writeStrings(names, into: &buffer)
        case .watching(let patterns):
            buffer.writeStaticString("\"ok\":true,\"watching\":")
            writeStrings(patterns, into: &buffer)
        case .token(let t):
            buffer.writeStaticString("\"ok\":true,\"name\":")
            JSONText.writeQuoted(t.name, into: &buffer)
            buffer.writeStaticString(",\"token\":")
            t.secret.withUnsafeBytes { JSONText.writeQuoted($0, into: &buffer) }
            buffer.writeStaticString(",\"kind\":")
            JSONText.writeQuoted(t.kind, into: &buffer)
            buffer.writeStaticString(",\"expires_at\":")
            writeOptional(t.expiresAt, into: &buffer)
            buffer.writeStaticString(",\"scopes\":")
            writeStrings(t.scopes, into: &buffer)
            buffer.writeStaticString(",\"valid\":")
            if let v = t.valid { if v { buffer.writeStaticString("true") } else { buffer.writeStaticString("false") } } else { buffer.writeStaticString("null") }
            buffer.writeStaticString(",\"checked_at\":")
            writeOptional(t.checkedAt, into: &buffer)
            if let proof = t.proof {
                buffer.writeStaticString(",\"appsecret_proof\":")
                JSONText.writeQuoted(proof.hex, into: &buffer)
                if let time = proof.time {
                    buffer.writeStaticString(",\"appsecret_time\":")
                    JSONText.writeDecimal(time, into: &buffer)
                }
            }
        case .error(let code, let message):
            buffer.writeStaticString("\"ok\":false,\"error\":{\"code\":")
            JSONText.writeQuoted(code.rawValue, into: &buffer)
            buffer.writeStaticString(",\"message\":")
            JSONText.writeQuoted(message, into: &buffer)
            buffer.writeStaticString("}")
        }
        buffer.writeStaticString("}\n")
    }

    /// One `watch` event line: `{"event":"changed","name":…,"change":…}\n` (never a token).
    public static func encodeEvent(name: String, change: String, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"event\":\"changed\",\"name\":")
        JSONText.writeQuoted(name, into: &buffer)
        buffer.writeStaticString(",\"change\":")
        JSONText.writeQuoted(change, into: &buffer)
        buffer.writeStaticString("}\n")
    }

    /// A JSON array of strings.
    private static func writeStrings(_ strings: [String], into buffer: inout ByteBuffer) {
        buffer.writeStaticString("[")
        for (i, s) in strings.enumerated() {
            if i > 0 { buffer.writeStaticString(",") }
            JSONText.writeQuoted(s, into: &buffer)
        }
        buffer.writeStaticString("]")
    }

    private static func writeOptional(_ v: Int64?, into buffer: inout ByteBuffer) {
        if let v { JSONText.writeDecimal(v, into: &buffer) } else { buffer.writeStaticString("null") }
    }
}
