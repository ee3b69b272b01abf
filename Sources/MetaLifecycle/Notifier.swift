import Foundation
import VaultCore

/// Runs the admin's notify command (`/bin/sh -c COMMAND`) with one JSON document on stdin. Exit status 0
/// means delivered. The command is the admin's own (sendmail, a chat webhook, a pager).
public struct Notifier: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public let command: String
    public var timeout: TimeInterval = 30

    public init(command: String) {
        self.command = command
    }

    public func send(_ json: String) async -> Result<Void, Failure> {
        let command = self.command
        let timeout = self.timeout
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Self.run(command, json, timeout: timeout))
            }
        }
    }

    static func run(_ command: String, _ json: String, timeout: TimeInterval) -> Result<Void, Failure> {
        AdminCommand.run(command, input: json, timeout: timeout, what: "the notify command").map { .failure(Failure(description: $0)) } ?? .success(())
    }
}
