/// Errors from a store, each saying what to do about it. Every backend maps its failures to these.
public enum StoreError: Error, Equatable, Sendable {
    case notInitialised(path: String)
    /// The vault is there, but this user may not open it (it is another user's: the daemon's, say).
    case permissionDenied(path: String)
    case alreadyExists(what: String, name: String)
    case notFound(what: String, name: String)
    case inUse(what: String, name: String, by: String)
    case busy(path: String)
    case diskFull(path: String)
    case damaged(path: String, detail: String)
    case io(path: String, detail: String)
    /// A shared store that cannot be reached now (the database is down, or the network to it).
    case unavailable(store: String, detail: String)
    /// The store's own rules refused a change (a reference to a row that is not there); nothing changed.
    case rejected(store: String, detail: String)
    /// A lock another process (maybe on another host) holds, and the caller chose not to wait.
    case locked(what: String, holder: String)
}

extension StoreError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .permissionDenied(let path):
            return "permission denied: \(path) is another user's (the vault's owner, or its daemon's). "
                + "To read a token as this user, ask the daemon: `tokenvault get NAME --socket /run/tokenvault/tokenvault.sock` "
                + "(or $TOKENVAULT_SOCKET); to administer the vault, run as its owner (sudo -u OWNER tokenvault …)"
        case .notInitialised(let path):
            return "no vault at \(path): run `tokenvault init` first, or point --home / $TOKENVAULT_HOME at an existing vault"
        case .alreadyExists(let what, let name):
            return "\(what) \(name) already exists (use --force to replace it)"
        case .notFound(let what, let name):
            return "no \(what) named \(name) (`tokenvault list` shows what is stored)"
        case .inUse(let what, let name, let by):
            return "\(what) \(name) is still used by \(by)"
        case .busy(let path):
            return "the vault at \(path) is locked by another process; try again"
        case .diskFull(let path):
            return "the disk holding \(path) is full: nothing was changed; free space and try again"
        case .damaged(let path, let detail):
            return "\(path) is damaged or not a TokenVault database (\(detail)); restore it from a backup"
        case .io(let path, let detail):
            return "cannot use \(path): \(detail)"
        case .unavailable(let store, let detail):
            return "the store \(store) is unavailable (\(detail)); nothing was changed, try again when it is back"
        case .rejected(let store, let detail):
            return "the store \(store) refused the change (\(detail)); nothing was changed"
        case .locked(let what, let holder):
            return "\(what) is held by \(holder); wait for it to finish, or run again with --wait"
        }
    }
}

