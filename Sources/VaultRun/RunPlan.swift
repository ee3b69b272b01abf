/// What `tokenvault run` is asked to do: which tokens go where, the command, and what a change does.
public struct RunPlan: Sendable, Equatable {
    public enum Delivery: String, Sendable, Equatable {
        /// The token in the variable.
        case env
        /// The token in a RAM file only the command can open; its path in the variable.
        case file
        /// The token's legacy `appsecret_proof` (HMAC over the token alone, stable for the token's life) in
        /// the variable. A timed proof lasts five minutes, too short for an environment.
        case proofEnv = "proof-env"
    }

    public struct Binding: Sendable, Equatable {
        public var variable: String
        public var token: String
        public var delivery: Delivery

        public init(variable: String, token: String, delivery: Delivery) {
            self.variable = variable
            self.token = token
            self.delivery = delivery
        }
    }

    public enum OnChange: Sendable, Equatable {
        /// Not watching: the values are read once.
        case nothing
        /// Re-read, rewrite the files in place, then send this signal.
        case signal(Int32)
        /// Re-read, stop the command (SIGTERM, then SIGKILL after the grace period) and start it again.
        case restart
    }

    public var bindings: [Binding]
    public var command: [String]
    public var onChange: OnChange

    public init(bindings: [Binding], command: [String], onChange: OnChange = .nothing) {
        self.bindings = bindings
        self.command = command
        self.onChange = onChange
    }

    /// Why the plan cannot run, in words for the admin, or nil.
    public var problem: String? {
        if command.isEmpty { return "no command: put it after --, as in: tokenvault run --env META_TOKEN=acme/ads -- ./sync" }
        if bindings.isEmpty { return "nothing to hand over: give at least one --env, --file or --proof-env VAR=NAME" }
        var seen = Set<String>()
        for b in bindings {
            if !Self.isVariableName(b.variable) {
                return "\(b.variable) is not an environment variable name (letters, digits and _, not starting with a digit)"
            }
            if !seen.insert(b.variable).inserted { return "\(b.variable) is given twice" }
        }
        if case .signal = onChange, bindings.contains(where: { $0.delivery != .file }) {
            return "a signal cannot change a running command's environment: with --signal, hand every token over with --file, or use --restart"
        }
        return nil
    }

    /// Parses `VAR=NAME`.
    public static func binding(_ text: String, _ delivery: Delivery) -> Binding? {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex, text.index(after: eq) != text.endIndex else { return nil }
        return Binding(variable: String(text[..<eq]), token: String(text[text.index(after: eq)...]), delivery: delivery)
    }

    static func isVariableName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(0x30...0x39).contains(first) else { return false }
        return s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x5f }
    }

    /// The token names the plan reads, each once.
    var tokens: [String] {
        var seen = Set<String>()
        return bindings.map(\.token).filter { seen.insert($0).inserted }
    }
}
