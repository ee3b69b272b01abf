/// A strict, allocation-light JSON reader for request lines: it validates the whole line as one JSON
/// object (RFC 8259), keeps the raw text of `"id"`, and decodes only the top-level string fields the
/// protocol uses. Anything else is validated and skipped.
struct JSONObjectScanner<Bytes: Collection> where Bytes.Element == UInt8, Bytes.Index == Int {
    struct Failure: Error { let reason: String }

    struct Fields {
        var id: [UInt8]?
        var idIsWrongType = false
        var strings: [String: String] = [:]
        /// Protocol fields present with a non-string value.
        var mistyped: Set<String> = []
    }

    static var wanted: Set<String> { ["op", "name", "proof"] }
    static var maxDepth: Int { 64 }

    private let bytes: Bytes
    private var i: Int
    private(set) var partialId: [UInt8]?

    init(_ bytes: Bytes) {
        self.bytes = bytes
        self.i = bytes.startIndex
    }

    mutating func scanTopLevelObject() throws -> Fields {
        var fields = Fields()
        guard Self.isValidUTF8(bytes) else { throw Failure(reason: "invalid UTF-8") }
        skipWhitespace()
        try expect(UInt8(ascii: "{"))
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw Failure(reason: "expected a key") }
                let key = try readString()
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
                let start = i
                if key == "id" {
                    let c = peek()
                    try skipValue(depth: 1)
                    let raw = Array(bytes[start..<i])
                    fields.id = raw
                    partialId = raw
                    let isString = c == UInt8(ascii: "\"")
                    let isInteger = !isString && raw.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: "-") }
                        && raw.contains { $0 >= 0x30 && $0 <= 0x39 }
                    fields.idIsWrongType = !(isString || isInteger)
                } else if Self.wanted.contains(key) {
                    if peek() == UInt8(ascii: "\"") {
                        fields.strings[key] = try readString()
                        fields.mistyped.remove(key)
                    } else {
                        try skipValue(depth: 1)
                        fields.strings[key] = nil
                        fields.mistyped.insert(key)
                    }
                } else {
                    try skipValue(depth: 1)
                }
                skipWhitespace()
                guard let c = next() else { throw Failure(reason: "unterminated object") }
                if c == UInt8(ascii: "}") { break }
                guard c == UInt8(ascii: ",") else { throw Failure(reason: "expected , or }") }
            }
        }
        skipWhitespace()
        guard i == bytes.endIndex else { throw Failure(reason: "text after the object") }
        return fields
    }

    static func isValidUTF8(_ bytes: Bytes) -> Bool {
        if !bytes.contains(where: { $0 >= 0x80 }) { return true }
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    // MARK: - lexing

    private func peek() -> UInt8? { i < bytes.endIndex ? bytes[i] : nil }

    private mutating func next() -> UInt8? {
        guard i < bytes.endIndex else { return nil }
        defer { i += 1 }
        return bytes[i]
    }

    private mutating func expect(_ c: UInt8) throws {
        guard next() == c else { throw Failure(reason: "expected \(Character(Unicode.Scalar(c)))") }
    }

    private mutating func skipWhitespace() {
        while let c = peek(), c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d { i += 1 }
    }

    private mutating func skipValue(depth: Int) throws {
        guard depth <= Self.maxDepth else { throw Failure(reason: "nested too deeply") }
        guard let c = peek() else { throw Failure(reason: "expected a value") }
        switch c {
        case UInt8(ascii: "\""):
            _ = try readString(decode: false)
        case UInt8(ascii: "{"):
            i += 1
            skipWhitespace()
            if peek() == UInt8(ascii: "}") { i += 1; return }
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw Failure(reason: "expected a key") }
                _ = try readString(decode: false)
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

    /// Reads a string starting at its opening quote; decodes escapes into UTF-8 when `decode` is true.
    private mutating func readString(decode: Bool = true) throws -> String {
        i += 1  // the opening quote
        var out: [UInt8] = []
        while true {
            guard let c = next() else { throw Failure(reason: "unterminated string") }
            switch c {
            case UInt8(ascii: "\""):
                // The whole line was checked as UTF-8 up front, and escapes decode to valid UTF-8.
                return decode ? String(decoding: out, as: UTF8.self) : ""
            case UInt8(ascii: "\\"):
                guard let e = next() else { throw Failure(reason: "unterminated string") }
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else { throw Failure(reason: "lone surrogate") }
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw Failure(reason: "lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw Failure(reason: "lone surrogate")
                    }
                    if decode, let u = Unicode.Scalar(scalar) { out.append(contentsOf: Array(String(Character(u)).utf8)) }
                default: throw Failure(reason: "invalid escape")
                }
            default:
                guard c >= 0x20 else { throw Failure(reason: "control character in a string") }
                if decode { out.append(c) }
            }
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
