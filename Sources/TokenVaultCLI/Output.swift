import Foundation
import MetaLifecycle
import VaultCore
import VaultStores
#if canImport(Glibc)
import Glibc
#endif

/// Listing output: a table for people, JSON Lines (`--json`) for scripts.
enum Output {
    /// Every cell is printed through ``escaped(_:)``: a stored name or reason can never move the cursor,
    /// clear the screen or draw a row of its own on the reader's terminal.
    static func table(_ header: [String], _ rows: [[String]], withHeader: Bool = true) -> String {
        let rows = rows.map { $0.map(escaped) }
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return ((withHeader ? [line(header)] : []) + rows.map(line)).joined(separator: "\n")
    }

    /// `s` with control characters (C0, DEL, C1), bidirectional overrides and line separators written
    /// as `\x1b` or `\u{202e}`, and `\` as `\\`, so what is shown is unambiguous and inert.
    static func escaped(_ s: String) -> String {
        func unsafe(_ v: UInt32) -> Bool {
            v < 0x20 || (0x7f...0x9f).contains(v) || (0x200e...0x200f).contains(v) || (0x2028...0x202e).contains(v)
                || (0x2066...0x2069).contains(v) || v == 0x5c
        }
        guard s.unicodeScalars.contains(where: { unsafe($0.value) }) else { return s }
        var out = ""
        for u in s.unicodeScalars {
            if u.value == 0x5c { out += "\\\\" }
            else if u.value < 0x100 && unsafe(u.value) { out += "\\x" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16) }
            else if unsafe(u.value) { out += "\\u{" + String(u.value, radix: 16) + "}" }
            else { out.unicodeScalars.append(u) }
        }
        return out
    }

    /// `s` in single quotes for a POSIX shell (`'` written as `'\''`), safe for `eval`.
    static func shellQuoted(_ s: String) -> String {
        "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func date(_ t: Int64?, never: String = "-") -> String {
        guard let t else { return never }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm'Z'"
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(t)))
    }

    /// The JSON shape of a token's metadata (never its value).
    static func json(_ r: TokenRecord) -> [String: Any] {
        func parsed(_ s: String?) -> Any {
            guard let s, let v = try? JSONSerialization.jsonObject(with: Data(s.utf8), options: [.fragmentsAllowed]) else { return NSNull() }
            return v
        }
        return [
            "name": r.name, "kind": r.kind, "app": r.app as Any? ?? NSNull(),
            "type": r.tokenType as Any? ?? NSNull(),
            "scopes": parsed(r.scopes), "granular_scopes": parsed(r.granularScopes),
            "expires_at": r.expiresAt as Any? ?? NSNull(),
            "data_access_expires_at": r.dataAccessExpiresAt as Any? ?? NSNull(),
            "valid": r.valid as Any? ?? NSNull(), "checked_at": r.checkedAt as Any? ?? NSNull(),
            "last_error": parsed(r.lastError),
            "created_at": r.createdAt, "updated_at": r.updatedAt,
        ]
    }

    /// A token's metadata with its lifecycle state (`"state"`, always: `unchecked` before any check),
    /// the scopes it must keep and who issued it.
    static func json(_ r: TokenRecord, meta m: MetaTokenState?) -> [String: Any] {
        var o = json(r)
        o["state"] = m?.state ?? TokenState.unchecked.rawValue
        o["required_scopes"] = m?.required ?? []
        o["required_targets"] = m?.targets ?? []
        o["user_id"] = m?.userId as Any? ?? NSNull()
        o["token_app_id"] = m?.appId as Any? ?? NSNull()
        o["issued_at"] = m?.issuedAt as Any? ?? NSNull()
        o["app_mismatch"] = m?.appMismatch ?? false
        o["last_success_at"] = m?.lastSuccessAt as Any? ?? NSNull()
        o["refreshed_at"] = m?.refreshedAt as Any? ?? NSNull()
        o["refresh_error"] = m?.refreshError as Any? ?? NSNull()
        return o
    }

    static func jsonLine(_ object: [String: Any]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func valid(_ v: Bool?) -> String { v.map { $0 ? "yes" : "NO" } ?? "unchecked" }
}

/// Where a token stands against its expiry, as `status` counts it and `doctor` reports it (one rule for
/// both: expired at or before now, expiring within `warnDays`; 0 and nil mean no expiry).
enum TokenExpiry: Equatable {
    case expired(at: Int64)
    case expiring(at: Int64)

    init?(_ r: TokenRecord, now: Int64, warnDays: Int) {
        guard let e = r.expiresAt, e > 0 else { return nil }
        if e <= now { self = .expired(at: e) } else if e <= now + Int64(warnDays) * 86_400 { self = .expiring(at: e) } else { return nil }
    }
}

/// Lines to stdout through one buffer (a query may print millions): `print` per line costs a String each.
final class LineWriter {
    private var buffer: [UInt8] = []

    init() { buffer.reserveCapacity(1 << 17) }

    /// One line, a newline added.
    func write(_ line: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: line)
        buffer.append(0x0a)
        if buffer.count >= 1 << 16 { flush() }
    }

    func flush() {
        guard !buffer.isEmpty else { return }
        fflush(nil)  // whatever `print` buffered goes first
        buffer.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(1, raw.baseAddress! + done, raw.count - done)
                if n < 0 { if errno == EINTR { continue }; break }  // a closed pipe: stop, as `head` expects
                done += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }
}
