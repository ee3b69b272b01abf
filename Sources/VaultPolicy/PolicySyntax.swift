/// The TOML a policy file may hold, checked before the TOML library sees it.
///
/// The library underneath (toml++ through TOMLKit) asserts on some malformed input — a stray byte after
/// `[`, `s=[}` — and in a release build those assertions become compiler assumptions, which is undefined
/// behaviour in the daemon that reloads the file. So the policy is held to a strict subset of TOML 1.0
/// that covers everything a policy needs, and the library only parses text that is well-formed in it:
///
/// - comments, blank lines, an optional byte-order mark;
/// - table headers `[name]` and `[[name]]`, the name bare (`A–Z a–z 0–9 _ -`) or quoted;
/// - `key = value`, the key bare or quoted (no dotted keys);
/// - values: basic `"…"` and literal `'…'` one-line strings, decimal integers and floats, `true`,
///   `false`, and arrays of them (across lines, with comments and a trailing comma), nested up to 8 deep.
///
/// Anything else (inline tables, multi-line strings, dates, hex integers) is refused with its line.
struct PolicySyntax {
    struct Failure: Error {
        let line: Int
        let message: String
    }

    private let s: [Unicode.Scalar]
    private var i = 0
    private var line = 1

    static func check(_ text: String) throws(Failure) {
        var p = PolicySyntax(s: Array(text.unicodeScalars))
        try p.file()
    }

    private init(s: [Unicode.Scalar]) { self.s = s }

    private var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }

    private func fail(_ message: String) -> Failure { Failure(line: line, message: message) }

    private mutating func file() throws(Failure) {
        if peek == "\u{FEFF}" { i += 1 }
        while i < s.count {
            skipBlank()
            guard let c = peek else { return }
            if c == "#" || c == "\n" || c == "\r" {
                try endOfLine()
            } else if c == "[" {
                try header()
            } else {
                try keyValue()
            }
        }
    }

    private mutating func skipBlank() { while peek == " " || peek == "\t" { i += 1 } }

    /// An optional comment, then a line end (or the end of the file).
    private mutating func endOfLine() throws(Failure) {
        skipBlank()
        if peek == "#" {
            i += 1
            while let c = peek, c != "\n" {
                if c == "\r" { break }
                guard c == "\t" || (c.value >= 0x20 && c.value != 0x7f) else { throw fail(controlMessage(c)) }
                i += 1
            }
        }
        guard let c = peek else { return }
        if c == "\r" {
            i += 1
            guard peek == "\n" else { throw fail("a carriage return must be followed by a line feed") }
        }
        guard peek == "\n" else { throw fail("expected the end of the line, found \(shown(peek))") }
        i += 1
        line += 1
    }

    private mutating func header() throws(Failure) {
        i += 1
        let double = peek == "["
        if double { i += 1 }
        skipBlank()
        try key(what: "a table header must start with a name, like [[allow]]")
        skipBlank()
        guard peek == "]" else { throw fail("a table header holds one name, then \(double ? "]]" : "]")") }
        i += 1
        if double {
            guard peek == "]" else { throw fail("[[ must be closed by ]]") }
            i += 1
        }
        try endOfLine()
    }

    private mutating func keyValue() throws(Failure) {
        try key(what: "expected a key, like tokens = [...]")
        skipBlank()
        if peek == "." { throw fail("dotted keys are not used in policy.toml") }
        guard peek == "=" else { throw fail("expected = after the key") }
        i += 1
        skipBlank()
        try value(depth: 0)
        try endOfLine()
    }

    private mutating func key(what: String) throws(Failure) {
        guard let c = peek else { throw fail(what) }
        if c == "\"" || c == "'" { return try string() }
        var n = 0
        while let c = peek, c.isASCII, c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" || c == "-" {
            i += 1
            n += 1
        }
        guard n > 0 else { throw fail(what) }
    }

    private mutating func value(depth: Int) throws(Failure) {
        guard let c = peek else { throw fail("expected a value") }
        switch c {
        case "\"", "'":
            try string()
        case "[":
            guard depth < 8 else { throw fail("arrays nest at most 8 deep") }
            i += 1
            try array(depth: depth + 1)
        case "t", "f":
            for word in ["true", "false"] where matches(word) {
                i += word.unicodeScalars.count
                return
            }
            throw fail("expected true or false")
        case "+", "-", "0"..."9":
            try number()
        case "{":
            throw fail("inline tables are not used in policy.toml")
        default:
            throw fail("expected a value, found \(shown(c))")
        }
    }

    private func matches(_ word: String) -> Bool {
        let w = Array(word.unicodeScalars)
        return i + w.count <= s.count && Array(s[i..<(i + w.count)]) == w
    }

    /// Blank space, line ends and comments inside an array.
    private mutating func skipArraySpace() throws(Failure) {
        while true {
            skipBlank()
            guard let c = peek, c == "#" || c == "\n" || c == "\r" else { return }
            try endOfLine()
        }
    }

    private mutating func array(depth: Int) throws(Failure) {
        let opened = line
        try skipArraySpace()
        while peek != "]" {
            guard peek != nil else { throw Failure(line: opened, message: "unterminated array: no ] before the end of the file") }
            try value(depth: depth)
            try skipArraySpace()
            if peek == "," {
                i += 1
                try skipArraySpace()
            } else if peek == nil {
                throw Failure(line: opened, message: "unterminated array: no ] before the end of the file")
            } else if peek != "]" {
                throw fail("expected , or ] in the array, found \(shown(peek))")
            }
        }
        i += 1
    }

    private mutating func number() throws(Failure) {
        if peek == "+" || peek == "-" { i += 1 }
        func digits() throws(Failure) {
            guard let c = peek, ("0"..."9").contains(c) else { throw fail("expected a digit") }
            var last: Unicode.Scalar = c
            while let c = peek, ("0"..."9").contains(c) || c == "_" {
                if c == "_" && last == "_" { throw fail("a number has at most one _ between digits") }
                last = c
                i += 1
            }
            if last == "_" { throw fail("a number cannot end in _") }
        }
        let start = i
        try digits()
        if s[start] == "0", i - start > 1 { throw fail("a decimal integer has no leading zero (hex, octal and binary are not used)") }
        if peek == "." {
            i += 1
            try digits()
        }
        if peek == "e" || peek == "E" {
            i += 1
            if peek == "+" || peek == "-" { i += 1 }
            try digits()
        }
        if let c = peek, c.properties.isAlphabetic || c == ":" || c == "-" {
            throw fail("dates, times and hex numbers are not used in policy.toml")
        }
    }

    private mutating func string() throws(Failure) {
        let quote = peek!
        if matches(quote == "\"" ? "\"\"\"" : "'''") { throw fail("multi-line strings are not used in policy.toml") }
        i += 1
        while true {
            guard let c = peek, c != "\n", c != "\r" else { throw fail("unterminated string") }
            i += 1
            if c == quote { return }
            guard c == "\t" || (c.value >= 0x20 && c.value != 0x7f) else { throw fail(controlMessage(c)) }
            if c == "\\" && quote == "\"" { try escape() }
        }
    }

    private mutating func escape() throws(Failure) {
        guard let e = peek else { throw fail("unterminated string") }
        i += 1
        switch e {
        case "b", "t", "n", "f", "r", "\"", "\\": return
        case "u", "U":
            let count = e == "u" ? 4 : 8
            var v: UInt32 = 0
            for _ in 0..<count {
                guard let h = peek, let d = hexValue(h) else {
                    throw fail("\\\(e) needs \(count) hex digits")
                }
                v = v * 16 + d
                i += 1
            }
            guard Unicode.Scalar(v) != nil else { throw fail("\\\(e) names no Unicode scalar") }
        default:
            throw fail("unknown escape \\\(e)")
        }
    }

    private func hexValue(_ c: Unicode.Scalar) -> UInt32? {
        switch c {
        case "0"..."9": return c.value - 0x30
        case "a"..."f": return c.value - 0x61 + 10
        case "A"..."F": return c.value - 0x41 + 10
        default: return nil
        }
    }

    private func controlMessage(_ c: Unicode.Scalar) -> String {
        "control character U+\(String(c.value, radix: 16, uppercase: true).leftPadded(4)) is not allowed in TOML"
    }

    private func shown(_ c: Unicode.Scalar?) -> String {
        guard let c else { return "the end of the file" }
        return c.value < 0x20 || c.value == 0x7f ? "U+\(String(c.value, radix: 16, uppercase: true).leftPadded(4))" : "'\(c)'"
    }
}

extension String {
    fileprivate func leftPadded(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}
