import Foundation

/// Graph API versions and the dates Meta retires them, so a configured version that is gone or about to
/// go is caught at start and by `doctor`, before calls start failing.
///
/// Source: Meta's Graph API changelog, "Available Graph API versions"
/// (developers.facebook.com/docs/graph-api/changelog/versions), read on 2026-12-03. Meta keeps a version
/// for at least two years after its release; a version whose end is not announced yet has none here.
/// When Meta releases a version, add it here and move ``GraphConfiguration/defaultVersion`` to it.
public enum GraphVersions {
    public struct Version: Sendable, Equatable {
        public let name: String
        /// `YYYY-MM-DD` (UTC).
        public let released: String
        /// The last day it answers, when announced.
        public let availableUntil: String?
    }

    public static let table: [Version] = [
        .init(name: "v26.0", released: "2026-07-29", availableUntil: nil),
        .init(name: "v25.0", released: "2026-02-18", availableUntil: "2028-07-29"),
        .init(name: "v24.0", released: "2025-10-08", availableUntil: "2028-02-18"),
        .init(name: "v23.0", released: "2025-05-29", availableUntil: "2027-10-08"),
        .init(name: "v22.0", released: "2025-01-21", availableUntil: "2027-05-20"),
        .init(name: "v21.0", released: "2024-10-02", availableUntil: "2027-01-21"),
        .init(name: "v20.0", released: "2024-05-21", availableUntil: "2026-09-24"),
        .init(name: "v19.0", released: "2024-01-23", availableUntil: "2026-05-21"),
        .init(name: "v18.0", released: "2023-09-12", availableUntil: "2026-01-26"),
        .init(name: "v17.0", released: "2023-05-23", availableUntil: "2025-09-12"),
        .init(name: "v16.0", released: "2023-02-02", availableUntil: "2025-05-14"),
        .init(name: "v15.0", released: "2022-09-15", availableUntil: "2024-11-20"),
        .init(name: "v14.0", released: "2022-05-25", availableUntil: "2024-09-17"),
        .init(name: "v13.0", released: "2022-02-08", availableUntil: "2024-05-28"),
        .init(name: "v12.0", released: "2021-09-14", availableUntil: "2024-02-08"),
        .init(name: "v11.0", released: "2021-06-08", availableUntil: "2023-09-14"),
        .init(name: "v10.0", released: "2021-02-23", availableUntil: "2023-06-08"),
    ]

    /// Warn this long before a version's end.
    public static let warnDays = 90

    /// The newest version in the table: the default.
    public static var current: String { table[0].name }

    public static func version(_ name: String) -> Version? { table.first { $0.name == name } }

    /// Why `name` should not be used on `today` (`YYYY-MM-DD`), or nil when it is fine: retired, retiring
    /// within ``warnDays``, or an old version this release does not know. A version newer than the table's
    /// newest is fine (Meta released it after this release).
    public static func warning(for name: String, today: String = GraphVersions.today()) -> String? {
        guard let v = version(name) else {
            guard let asked = number(name) else { return "\"\(name)\" is not a Graph API version like \(current)" }
            if let newest = number(current), newest.lexicographicallyPrecedes(asked) { return nil }
            return "\(name) is not in this release's table of Graph API versions (newest known: \(current)); check Meta's changelog"
        }
        guard let end = v.availableUntil else { return nil }
        if end < today { return "Graph API \(name) was retired on \(end): calls fail; use \(current)" }
        if end <= plusDays(today, warnDays) {
            return "Graph API \(name) is retired on \(end) (in \(daysBetween(today, end)) days): move to \(current)"
        }
        return nil
    }

    public static func today(_ now: Date = Date()) -> String { day(now) }

    /// `v25.0` as (25, 0), for ordering.
    static func number(_ name: String) -> [Int]? {
        guard let m = name.wholeMatch(of: #/v(\d+)\.(\d+)/#), let major = Int(m.1), let minor = Int(m.2) else { return nil }
        return [major, minor]
    }

    /// `YYYY-MM-DD` in UTC, both ways.
    static func dayFormatter() -> DateFormatter {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd"
        return f
    }

    static func day(_ date: Date) -> String { dayFormatter().string(from: date) }

    static func date(_ day: String) -> Date? { dayFormatter().date(from: day) }

    static func plusDays(_ day: String, _ n: Int) -> String {
        date(day).map { Self.day($0.addingTimeInterval(Double(n) * 86_400)) } ?? day
    }

    static func daysBetween(_ a: String, _ b: String) -> Int {
        guard let x = date(a), let y = date(b) else { return 0 }
        return Int((y.timeIntervalSince(x) / 86_400).rounded())
    }
}
