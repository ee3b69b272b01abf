import VaultCrypto

/// A strict, allocation-light JSON reader for request lines: it validates the whole line as one JSON
/// object (RFC 8259), keeps the raw text of `"id"`, and decodes only the top-level string fields the
/// protocol uses (`op`, `name`, `proof`, and `watch`'s array of strings `names`). Anything else is validated and skipped.
///
/// It reads raw bytes in place: keys are compared without being decoded (unless they hold escapes), and
/// the only allocations for a usual request are the id's bytes and the strings it returns.
struct JSONObjectScanner {
    struct Failure: Error { let reason: String }

    /// A top-level field the protocol reads.
    enum Field: Int { case op, name, proof, names }

    struct Fields {
        var id: [UInt8]?
        var idIsWrongType = false
        /// Decoded string values; nil when absent or not a string.
        var op: String?, name: String?, proof: String?
        /// `names`: an array of strings; nil when absent or of another shape.
        var names: [String]?
        /// Protocol fields present with a non-string value, one bit per ``Field``.
        private var mistypedBits: UInt8 = 0

        func isMistyped(_ f: Field) -> Bool { mistypedBits & (1 << f.rawValue) != 0 }

        /// Records the field's last occurrence: a string value, or (nil) a value of another type.
        mutating func set(_ f: Field, _ value: String?) {
            switch f {
            case .op: op = value
            case .name: name = value
            case .proof: proof = value
            case .names: break
            }
            if value == nil { mistypedBits |= 1 << f.rawValue } else { mistypedBits &= ~(1 << f.rawValue) }
        }
    }

    static let maxDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var i = 0
    private(set) var partialId: [UInt8]?

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    mutating func scanTopLevelObject() throws -> Fields {
        var fields = Fields()
        guard isValidUTF8(bytes) else { throw Failure(reason: "invalid UTF-8") }
        skipWhitespace()
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw Failure(reason: "expected a key") }
                let key = try readKey()
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
                let start = i
                switch key {
                case .id:
                    let c = peek()
                    try skipValue(depth: 1)
                    let raw = Array(bytes[start..<i])
                    fields.id = raw
                    partialId = raw
                    let isString = c == UInt8(ascii: "\"")
                    let isInteger = !isString && raw.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: "-") }
                        && raw.contains { $0 >= 0x30 && $0 <= 0x39 }
                    fields.idIsWrongType = !(isString || isInteger)
                case .field(.names):
                    if peek() == UInt8(ascii: "["), let list = try readStringArray() {
                        fields.names = list
                        fields.set(.names, "")
                    } else {
                        fields.names = nil
                        fields.set(.names, nil)
                    }
                case .field(let f):
                    if peek() == UInt8(ascii: "\"") {
                        fields.set(f, try readString())
                    } else {
                        try skipValue(depth: 1)
                        fields.set(f, nil)
                    }
                case .other:
                    try skipValue(depth: 1)
                }
                skipWhitespace()
                guard let c = next() else { throw Failure(reason: "unterminated object") }
                if c == UInt8(ascii: "}") { break }
                guard c == UInt8(ascii: ",") else { throw Failure(reason: "expected , or }") }
            }
        }
        skipWhitespace()
        guard i == bytes.count else { throw Failure(reason: "text after the object") }
        return fields
    }

    // MARK: - lexing

    private func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

    private mutating func next() -> UInt8? {
        guard i < bytes.count else { return nil }
        defer { i += 1 }
        return bytes[i]
    }

    private mutating func expect(_ c: UInt8) throws {
        guard next() == c else { throw Failure(reason: "expected \(Character(Unicode.Scalar(c)))") }
    }

    private mutating func skipWhitespace() {
        while i < bytes.count {
            let c = bytes[i]
            guard c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d else { return }
            i += 1
        }
    }

    private enum Key { case id, field(Field), other }

    /// Reads an object key and says which protocol field it names, decoding it only if it holds escapes.
    private mutating func readKey() throws -> Key {
        let (start, end, escaped) = try scanString()
        func named(_ text: UnsafeRawBufferPointer) -> Key {
            func equals(_ word: StaticString) -> Bool {
                text.count == word.utf8CodeUnitCount && text.elementsEqual(UnsafeRawBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount))
            }
            guard !text.isEmpty else { return .other }
            if equals("id") { return .id }
            if equals("op") { return .field(.op) }
            if equals("name") { return .field(.name) }
            if equals("proof") { return .field(.proof) }
            if equals("names") { return .field(.names) }
            return .other
        }
        if !escaped { return named(UnsafeRawBufferPointer(rebasing: bytes[start..<end])) }
        let decoded = try Self.unescape(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
        return decoded.withUnsafeBytes { named($0) }
    }

    /// Reads an array at its `[`: its strings, or nil (the array still skipped, so the line stays valid)
    /// when an element is not a string.
    private mutating func readStringArray() throws -> [String]? {
        let start = i
        try expect(UInt8(ascii: "["))
        var out: [String] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { i += 1; return out }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else {
                i = start
                try skipValue(depth: 1)
                return nil
            }
            out.append(try readString())
            skipWhitespace()
            guard let c = next() else { throw Failure(reason: "unterminated array") }
            if c == UInt8(ascii: "]") { return out }
            guard c == UInt8(ascii: ",") else { throw Failure(reason: "expected , or ]") }
        }
    }

    /// Reads a string value starting at its opening quote.
    private mutating func readString() throws -> String {
        let (start, end, escaped) = try scanString()
        let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        // The whole line was checked as UTF-8 up front, and escapes decode to valid UTF-8.
        return escaped ? String(decoding: try Self.unescape(raw), as: UTF8.self) : String(decoding: raw, as: UTF8.self)
    }

    /// Moves past a string starting at its opening quote, checking its escapes; returns the content's
    /// byte range (without quotes) and whether it holds any escape.
    private mutating func scanString() throws -> (start: Int, end: Int, escaped: Bool) {
        i += 1  // the opening quote
        let start = i
        var escaped = false
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return (start, i - 1, escaped)
            }
            if c == UInt8(ascii: "\\") {
                escaped = true
                i += 1
                guard i < bytes.count else { break }
                switch bytes[i] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    i += 1
                case UInt8(ascii: "u"):
                    i += 1
                    let scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else { throw Failure(reason: "lone surrogate") }
                        guard (0xDC00...0xDFFF).contains(try hex4()) else { throw Failure(reason: "lone surrogate") }
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw Failure(reason: "lone surrogate")
                    }
                default: throw Failure(reason: "invalid escape")
                }
                continue
            }
            guard c >= 0x20 else { throw Failure(reason: "control character in a string") }
            i += 1
        }
        throw Failure(reason: "unterminated string")
    }

    /// Decodes the escapes of string content that ``scanString()`` has already checked.
    private static func unescape(_ raw: UnsafeRawBufferPointer) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count)
        var scanner = JSONObjectScanner(raw)
        while let c = scanner.next() {
            guard c == UInt8(ascii: "\\"), let e = scanner.next() else { out.append(c); continue }
            switch e {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0c)
            case UInt8(ascii: "n"): out.append(0x0a)
            case UInt8(ascii: "r"): out.append(0x0d)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try scanner.hex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    scanner.i += 2  // the "\u" of the low surrogate, checked by scanString
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (try scanner.hex4() - 0xDC00)
                }
                if let u = Unicode.Scalar(scalar) { out.append(contentsOf: String(Character(u)).utf8) }
            default: out.append(e)  // " \ /
            }
        }
        return out
    }

    private mutating func skipValue(depth: Int) throws {
        guard depth <= Self.maxDepth else { throw Failure(reason: "nested too deeply") }
        guard let c = peek() else { throw Failure(reason: "expected a value") }
        switch c {
        case UInt8(ascii: "\""):
            _ = try scanString()
        case UInt8(ascii: "{"):
            i += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "}") { i += 1; return }
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw Failure(reason: "expected a key") }
                _ = try scanString()
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let n = next() else { throw Failure(reason: "unterminated object") }
                if n == UInt8(ascii: "}") { return }
                guard n == UInt8(ascii: ",") else { throw Failure(reason: "expected , or }") }
            }
        case UInt8(ascii: "["):
            i += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { i += 1; return }
            while true {
                skipWhitespace()
                try skipValue(depth: depth + 1)
                skipWhitespace()
                guard let n = next() else { throw Failure(reason: "unterminated array") }
                if n == UInt8(ascii: "]") { return }
                guard n == UInt8(ascii: ",") else { throw Failure(reason: "expected , or ]") }
            }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: try skipNumber()
        }
    }

    private mutating func literal(_ word: StaticString) throws {
        let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
        for c in w { guard next() == c else { throw Failure(reason: "invalid literal") } }
    }

    private mutating func skipNumber() throws {
        func digits() -> Int {
            var n = 0
            while let c = peek(), c >= 0x30 && c <= 0x39 { i += 1; n += 1 }
            return n
        }
        if peek() == UInt8(ascii: "-") { i += 1 }
        guard let first = peek(), first >= 0x30 && first <= 0x39 else { throw Failure(reason: "invalid value") }
        if first == 0x30 { i += 1 } else { _ = digits() }
        if peek() == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { throw Failure(reason: "invalid number") }
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            i += 1
            if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw Failure(reason: "invalid number") }
        }
    }

    private mutating func hex4() throws -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let c = next() else { throw Failure(reason: "bad \\u escape") }
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            default: throw Failure(reason: "bad \\u escape")
            }
            v = v << 4 | d
        }
        return v
    }
}
