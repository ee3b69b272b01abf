import Foundation
import VaultCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Supplies a passphrase when a passphrase-protected master key must be unlocked.
/// The argument says what it is for ("master key 20261129-1a2b3c4d"), for a prompt.
public typealias PassphraseProvider = @Sendable (_ purpose: String) throws -> SecretBytes

/// The keyring: a directory holding one file per master key, named by key id.
///
/// - `<id>`: 32 random bytes, mode 0600 or 0400.
/// - `<id>.argon2id`: a passphrase-derived key; the file holds only the Argon2id salt and limits (JSON).
///
/// Ids look like `20261129-1a2b3c4d` (creation date, then 32 random bits), so they sort by age.
/// Anything else in the directory (a README, a .gitignore) is ignored.
public struct Keyring: Sendable {
    public enum Source: String, Sendable, Codable { case file, passphrase }

    public struct Entry: Sendable, Equatable {
        public let id: String
        public let source: Source
        public let path: String
    }

    public let directory: String
    /// The audit anchor's file name: `audit.anchor`, or `audit-HOST.anchor` for a host of a shared store
    /// (every host's keyring is a copy of one, and each host's chain has an anchor of its own).
    public let anchorName: String

    public init(directory: String, anchorName: String = "audit.anchor") {
        self.directory = directory
        self.anchorName = anchorName
    }

    public static func isKeyId(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard b.count == 17, b[8] == UInt8(ascii: "-") else { return false }
        let digits = b[0..<8].allSatisfy { (0x30...0x39).contains($0) }
        let hex = b[9...].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        return digits && hex
    }

    static func newKeyId(now: Date = Date()) -> String {
        var tm = tm()
        var t = time_t(now.timeIntervalSince1970)
        gmtime_r(&t, &tm)
        let date = String(format: "%04d%02d%02d", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday))
        return date + "-" + hexString(randomBytes(4))
    }

    /// Whether a file or directory owned by `uid` may hold this process's keys: its own, or root's.
    static func trustedOwner(_ uid: uid_t) -> Bool { uid == geteuid() || uid == 0 }

    /// Refuses a missing keyring, one owned by another user, or one other users can read, naming the fix.
    public func checkDirectory() throws {
        var st = stat()
        guard stat(directory, &st) == 0 else { throw VaultError.keyringMissing(path: directory) }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw VaultError.badKeyFile(path: directory, why: "the keyring must be a directory")
        }
        guard Self.trustedOwner(st.st_uid) else {
            throw VaultError.badKeyFile(path: directory, why: "the keyring is owned by uid \(st.st_uid), not by this user (uid \(geteuid())) "
                + "or root, so its owner could swap the keys; fix it with `chown \(geteuid()) \(directory)`")
        }
        if st.st_mode & 0o077 != 0 {
            throw VaultError.insecurePermissions(path: directory, mode: st.st_mode & 0o7777, fix: "chmod 700 \(directory)")
        }
    }

    /// Creates the keyring directory (mode 0700) if it does not exist.
    public func create() throws {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw VaultError.io(path: directory, why: "cannot create the keyring: \(String(cString: strerror(errno)))")
        }
        try checkDirectory()
    }

    /// The keys in the keyring, oldest first.
    public func entries() throws -> [Entry] {
        try checkDirectory()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var out: [Entry] = []
        for name in names {
            if Self.isKeyId(name) {
                out.append(Entry(id: name, source: .file, path: path(name)))
            } else if name.hasSuffix(".argon2id"), Self.isKeyId(String(name.dropLast(".argon2id".count))) {
                out.append(Entry(id: String(name.dropLast(".argon2id".count)), source: .passphrase, path: path(name)))
            }
        }
        return out.sorted { $0.id < $1.id }
    }

    public func entry(id: String) throws -> Entry? {
        try checkDirectory()
        if access(path(id), F_OK) == 0 { return Entry(id: id, source: .file, path: path(id)) }
        let p = path(id + ".argon2id")
        if access(p, F_OK) == 0 { return Entry(id: id, source: .passphrase, path: p) }
        return nil
    }

    /// Loads master key `id`, asking `passphrase` when it is passphrase-protected.
    public func load(id: String, passphrase: PassphraseProvider?) throws -> SecureKey {
        guard let entry = try entry(id: id) else { throw VaultError.missingMasterKey(id: id, keyring: directory) }
        switch entry.source {
        case .file:
            let fd = try openChecked(entry.path)
            defer { close(fd) }
            do {
                return try SecureKey.read(from: fd, path: entry.path)
            } catch let e as CryptoError {
                throw VaultError.badKeyFile(path: entry.path, why: "\(e)")
            }
        case .passphrase:
            let params = try readParams(entry.path)
            guard let passphrase else { throw VaultError.passphraseRequired(id: id) }
            let secret = try passphrase("master key \(id)")
            do {
                return try params.deriveKey(from: secret)
            } catch {
                throw VaultError.badKeyFile(path: entry.path, why: "\(error)")
            }
        }
    }

    /// Writes a new random master key: temp file, fsync, rename, fsync of the directory, so a crash
    /// leaves either no key or the whole key, never a torn one.
    public func createRandomKey() throws -> (id: String, key: SecureKey) {
        try create()
        let id = Self.newKeyId()
        let key = SecureKey.random()
        try writeAtomically(name: id) { fd, tmp in try key.write(to: fd, path: tmp) }
        return (id, key)
    }

    /// Makes a passphrase-derived master key; only its salt and limits are written.
    public func createPassphraseKey(passphrase: SecretBytes, strength: PassphraseKDF.Strength) throws -> (id: String, key: SecureKey) {
        try create()
        let id = Self.newKeyId()
        let params = PassphraseKDF(strength: strength)
        let key = try params.deriveKey(from: passphrase)
        let json = try JSONEncoder.sorted.encode(params) + Data("\n".utf8)
        try writeAtomically(name: id + ".argon2id") { fd, tmp in try writeAll(fd, Array(json), path: tmp) }
        return (id, key)
    }

    /// Wipes and removes a key file.
    public func destroy(id: String) throws {
        guard let entry = try entry(id: id) else { throw VaultError.missingMasterKey(id: id, keyring: directory) }
        if entry.source == .file {
            let fd = open(entry.path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW)
            if fd >= 0 {
                try? writeAll(fd, randomBytes(SecureKey.byteCount), path: entry.path)
                fsync(fd)
                close(fd)
            }
        }
        guard unlink(entry.path) == 0 else {
            throw VaultError.io(path: entry.path, why: "cannot remove: \(String(cString: strerror(errno)))")
        }
        syncDirectory()
    }

    // MARK: - files

    public func path(_ name: String) -> String { directory + "/" + name }

    /// Opens a key file and refuses it when it is a symlink, not a regular file (a FIFO must not hang the
    /// command: `O_NONBLOCK`), owned by another user, or readable by other users.
    private func openChecked(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ELOOP { throw VaultError.badKeyFile(path: path, why: "it is a symbolic link; put the key file itself in the keyring") }
            throw VaultError.io(path: path, why: "cannot open: \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw VaultError.badKeyFile(path: path, why: "not a regular file")
        }
        guard Self.trustedOwner(st.st_uid) else {
            close(fd)
            throw VaultError.badKeyFile(path: path, why: "owned by uid \(st.st_uid), not by this user (uid \(geteuid())) or root; "
                + "fix it with `chown \(geteuid()) \(path)`")
        }
        if st.st_mode & 0o077 != 0 {
            close(fd)
            throw VaultError.insecurePermissions(path: path, mode: st.st_mode & 0o7777, fix: "chmod 600 \(path)")
        }
        // Reads block from here on (the descriptor is a regular file, so this is only tidiness).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return fd
    }

    /// A checked file's whole contents (at most 64 KiB), read from the descriptor that was checked.
    private func readChecked(_ path: String) throws -> [UInt8] {
        let fd = try openChecked(path)
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count <= 65_536 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw VaultError.io(path: path, why: "read failed: \(String(cString: strerror(errno)))") }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
        throw VaultError.badKeyFile(path: path, why: "larger than 64 KiB")
    }

    private func readParams(_ path: String) throws -> PassphraseKDF {
        guard let params = try? JSONDecoder().decode(PassphraseKDF.self, from: Data(try readChecked(path))) else {
            throw VaultError.badKeyFile(path: path, why: "not a TokenVault passphrase key description")
        }
        return params
    }

    // MARK: - the audit anchor

    /// `audit.anchor`: the audit log's freshness anchor, kept here because whoever can rewrite the vault
    /// home but holds no key cannot write the keyring (see VaultAudit's `AuditAnchor`).
    public var anchorPath: String { path(anchorName) }

    /// The anchor's bytes, or nil when there is none. A file that fails the key-file checks is an error.
    public func readAnchor() throws -> [UInt8]? {
        var st = stat()
        guard lstat(anchorPath, &st) == 0 else { return nil }
        return try readChecked(anchorPath)
    }

    /// Whether this process may write the keyring (a systemd credential directory is read-only).
    public var isWritable: Bool { access(directory, W_OK) == 0 }

    /// Replaces the anchor with what `next` makes of the current one (nil: leave it), under an exclusive
    /// lock (`.audit.anchor.lock`), so concurrent writers (the daemon, CLI commands) never move it back,
    /// and atomically (a temp file of this process's own, fsync, rename, fsync of the directory).
    public func updateAnchor(_ next: (_ current: [UInt8]?) throws -> [UInt8]?) throws {
        try checkDirectory()
        let lockPath = path(".\(anchorName).lock")
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard lock >= 0 else { throw VaultError.io(path: lockPath, why: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        while flock(lock, LOCK_EX) != 0 {
            guard errno == EINTR else { throw VaultError.io(path: lockPath, why: "cannot lock: \(String(cString: strerror(errno)))") }
        }
        guard let bytes = try next(try readAnchor()) else { return }
        try writeAtomically(name: anchorName, tempName: ".\(anchorName).\(getpid()).\(hexString(randomBytes(4))).tmp") { fd, tmp in
            try writeAll(fd, bytes, path: tmp)
        }
    }

    private func writeAtomically(name: String, tempName: String? = nil, _ write: (Int32, String) throws -> Void) throws {
        let tmp = path(tempName ?? ".\(name).tmp")
        let fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VaultError.io(path: tmp, why: "cannot create: \(String(cString: strerror(errno)))") }
        do {
            try write(fd, tmp)
            guard fsync(fd) == 0 else { throw VaultError.io(path: tmp, why: "fsync failed: \(String(cString: strerror(errno)))") }
            close(fd)
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
        guard rename(tmp, path(name)) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmp)
            throw VaultError.io(path: path(name), why: "cannot rename into place: \(why)")
        }
        syncDirectory()
    }

    private func syncDirectory() {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}

func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
    var done = 0
    try bytes.withUnsafeBytes { raw in
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw VaultError.io(path: path, why: "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
