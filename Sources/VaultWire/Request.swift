/// One request of protocol v1, as parsed from a line.
public struct Request: Sendable, Equatable {
    public enum Operation: Sendable, Equatable {
        case ping, whoami, list
        case get(name: String, proof: Proof?)
        /// `watch`: exact names or `prefix*` patterns, as sent.
        case watch(patterns: [String])
    }

    /// The most patterns one `watch` may name.
    public static let maxWatchPatterns = 256

    public enum Proof: String, Sendable, Equatable {
        case timed, legacy
    }

    /// The request's `"id"` exactly as it was sent (its JSON text), echoed back unchanged.
    public var id: [UInt8]?
    public var operation: Operation

    /// The `"id"` as text, for the audit record.
    /// A string id loses its quotes (its escapes stay as sent); a number is kept as written. On the bytes:
    /// the raw id is one well-formed JSON value, so its first and last bytes say which it is.
    public var idText: String? {
        id.map { raw in
            let quoted = raw.count >= 2 && raw.first == UInt8(ascii: "\"") && raw.last == UInt8(ascii: "\"")
            return quoted ? String(decoding: raw[1..<(raw.count - 1)], as: UTF8.self) : String(decoding: raw, as: UTF8.self)
        }
    }
}

/// Why a line is not a usable request, with the code the contract gives it.
public struct RequestError: Error, Sendable, Equatable {
    public enum Code: String, Sendable {
        case badRequest = "bad_request"
        case unknownOp = "unknown_op"
    }
    public var code: Code
    public var message: String
    /// The request's id, when the line got far enough to have one.
    public var id: [UInt8]?
}

extension Request {
    /// Parses one line (without its newline). Strict JSON: a line that is not one JSON object is a
    /// `bad_request`; an `op` outside the table is `unknown_op`.
    public static func parse<Bytes: Collection>(_ line: Bytes) -> Result<Request, RequestError>
    where Bytes.Element == UInt8 {
        if let parsed = line.withContiguousStorageIfAvailable({ parse(UnsafeRawBufferPointer($0)) }) { return parsed }
        return Array(line).withUnsafeBytes { parse($0) }
    }

    /// Parses one line (without its newline) in place.
    public static func parse(_ line: UnsafeRawBufferPointer) -> Result<Request, RequestError> {
        var scanner = JSONObjectScanner(line)
        let fields: JSONObjectScanner.Fields
        do {
            fields = try scanner.scanTopLevelObject()
        } catch let failure as JSONObjectScanner.Failure {
            return .failure(RequestError(code: .badRequest, message: "the line is not a JSON object (\(failure.reason))", id: scanner.partialId))
        } catch {
            return .failure(RequestError(code: .badRequest, message: "the line is not a JSON object", id: nil))
        }
        let id = fields.id
        func bad(_ message: String) -> Result<Request, RequestError> {
            .failure(RequestError(code: .badRequest, message: message, id: id))
        }
        if fields.idIsWrongType { return bad("\"id\" must be a string or an integer") }
        guard let op = fields.op else {
            return bad(fields.isMistyped(.op) ? "\"op\" must be a string" : "missing \"op\"")
        }
        switch op {
        case "ping": return .success(Request(id: id, operation: .ping))
        case "whoami": return .success(Request(id: id, operation: .whoami))
        case "list": return .success(Request(id: id, operation: .list))
        case "get":
            guard let name = fields.name else {
                return bad(fields.isMistyped(.name) ? "\"name\" must be a string" : "get needs \"name\"")
            }
            var proof: Proof?
            if let p = fields.proof {
                guard let parsed = Proof(rawValue: p) else { return bad("\"proof\" must be \"timed\" or \"legacy\"") }
                proof = parsed
            } else if fields.isMistyped(.proof) {
                return bad("\"proof\" must be \"timed\" or \"legacy\"")
            }
            return .success(Request(id: id, operation: .get(name: name, proof: proof)))
        case "watch":
            guard let names = fields.names else {
                return bad(fields.isMistyped(.names) ? "\"names\" must be an array of strings" : "watch needs \"names\"")
            }
            guard !names.isEmpty else { return bad("watch needs at least one name or pattern in \"names\"") }
            guard names.count <= maxWatchPatterns else { return bad("watch takes at most \(maxWatchPatterns) names") }
            return .success(Request(id: id, operation: .watch(patterns: names)))
        default:
            let shown = op.count > 40 ? String(op.prefix(40)) + "…" : op
            return .failure(RequestError(code: .unknownOp, message: "unknown op \"\(shown)\" (expected ping, whoami, list, get or watch)", id: id))
        }
    }
}
