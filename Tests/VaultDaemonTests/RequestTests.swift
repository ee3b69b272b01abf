import NIOCore
import TestSupport
import Testing
@testable import VaultDaemon
@testable import VaultWire

@Suite("Protocol v1 codec")
struct RequestTests {
    func parse(_ s: String) -> Result<Request, RequestError> { Request.parse(Array(s.utf8)) }

    @Test func operationsAndIds() throws {
        #expect(try parse(#"{"op":"ping"}"#).get() == Request(id: nil, operation: .ping))
        #expect(try parse(#" { "id" : 7 , "op" : "whoami" } "#).get() == Request(id: Array("7".utf8), operation: .whoami))
        #expect(try parse(#"{"op":"list","id":"abc"}"#).get().id == Array("\"abc\"".utf8))
        #expect(try parse(#"{"op":"get","name":"acme/ads","id":-12}"#).get() == Request(id: Array("-12".utf8), operation: .get(name: "acme/ads", proof: nil)))
        #expect(try parse(#"{"op":"get","name":"a","proof":"timed"}"#).get().operation == .get(name: "a", proof: .timed))
        #expect(try parse(#"{"op":"get","name":"a","proof":"legacy"}"#).get().operation == .get(name: "a", proof: .legacy))
        // Unknown fields of any shape are skipped; escapes decode.
        let r = try parse(#"{"x":{"y":[1,2.5e3,true,null,{"z":"\u00e9"}]},"op":"get","name":"caf\u00e9\/\ud83d\ude00"}"#).get()
        #expect(r.operation == .get(name: "café/😀", proof: nil))
        // The id is echoed exactly as sent, escapes and all.
        #expect(try parse(#"{"op":"ping","id":"a\"b"}"#).get().id == Array(#""a\"b""#.utf8))
    }

    /// The audit record's request_id: a string id without its quotes (escapes as sent), a number as written.
    @Test func idTextForTheAuditRecord() throws {
        #expect(try parse(#"{"op":"ping","id":7}"#).get().idText == "7")
        #expect(try parse(#"{"op":"ping","id":-12}"#).get().idText == "-12")
        #expect(try parse(#"{"op":"ping","id":"abc"}"#).get().idText == "abc")
        #expect(try parse(#"{"op":"ping","id":""}"#).get().idText == "")
        #expect(try parse(#"{"op":"ping","id":"a\"b"}"#).get().idText == #"a\"b"#)
        #expect(try parse(#"{"op":"ping","id":"caf\u00e9 é"}"#).get().idText == #"caf\u00e9 é"#)
        #expect(try parse(#"{"op":"ping"}"#).get().idText == nil)
    }

    @Test(arguments: [
        "", "null", "[]", "\"op\"", #"{"op":"ping""#, #"{"op":"ping"} x"#, #"{"op":ping}"#, #"{op:"ping"}"#,
        #"{"op":"ping",}"#, #"{"op":"pi\xg"}"#, #"{"op":"\ud800"}"#, "{\"op\":\"p\u{01}\"}", #"{"op":"ping","id":01x}"#,
        #"{"op":"ping","n":1.}"#, #"{"op":"ping","n":tru}"#, String(repeating: "[", count: 70),
    ])
    func notAJSONObjectIsBadRequest(line: String) {
        guard case .failure(let e) = parse(line) else { Issue.record("accepted \(line)"); return }
        #expect(e.code == .badRequest)
    }

    @Test func invalidUTF8IsBadRequest() {
        guard case .failure(let e) = Request.parse([0x7b, 0x22, 0x6f, 0x70, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]) else {
            Issue.record("accepted invalid UTF-8")
            return
        }
        #expect(e.code == .badRequest)
    }

    @Test func mistypedFields() {
        for (line, fragment) in [
            (#"{"id":1}"#, "missing \"op\""), (#"{"op":5,"id":1}"#, "\"op\" must be a string"),
            (#"{"op":"get","id":1}"#, "needs \"name\""), (#"{"op":"get","name":3,"id":1}"#, "\"name\" must be a string"),
            (#"{"op":"get","name":"a","proof":"yes","id":1}"#, "proof"), (#"{"op":"get","name":"a","proof":true,"id":1}"#, "proof"),
            (#"{"op":"ping","id":1.5}"#, "\"id\" must be"), (#"{"op":"ping","id":[1]}"#, "\"id\" must be"),
        ] {
            guard case .failure(let e) = parse(line) else { Issue.record("accepted \(line)"); continue }
            #expect(e.code == .badRequest && e.message.contains(fragment), "\(line): \(e.message)")
            #expect(e.id != nil)
        }
    }

    @Test func unknownOp() {
        guard case .failure(let e) = parse(#"{"op":"delete","id":9}"#) else { Issue.record("accepted"); return }
        #expect(e.code == .unknownOp && e.id == Array("9".utf8))
    }

    @Test func errorRepliesAreOneJSONLine() throws {
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        ReplyEncoder.encode(.error(.denied, "uid 5 may not read \"x\"\n"), id: Array("\"q\"".utf8), into: &buffer)
        let text = buffer.readString(length: buffer.readableBytes)!
        #expect(text == #"{"id":"q","ok":false,"error":{"code":"denied","message":"uid 5 may not read \"x\"\n"}}"# + "\n")
    }
}
