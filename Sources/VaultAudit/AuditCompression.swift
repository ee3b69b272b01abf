import CZlib
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// gzip (RFC 1952) through zlib, for old audit segments: `audit-000001.jsonl.gz` is the very bytes of
/// `audit-000001.jsonl`, so readers decompress it and go on as if it were never compressed.
enum Gzip {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = 6) throws -> [UInt8] {
        var s = z_stream()
        // 15 + 16: a gzip header and trailer rather than zlib's.
        guard deflateInit2_(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure(description: "zlib: deflateInit2 failed")
        }
        defer { deflateEnd(&s) }
        let bound = Int(deflateBound(&s, uLong(input.count)))
        var out = [UInt8](repeating: 0, count: bound)
        let status = out.withUnsafeMutableBytes { o -> Int32 in
            s.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            s.avail_in = uInt(input.count)
            s.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
            s.avail_out = uInt(o.count)
            return deflate(&s, Z_FINISH)
        }
        guard status == Z_STREAM_END else { throw Failure(description: "zlib: deflate did not finish (\(status))") }
        out.removeLast(out.count - Int(s.total_out))
        return out
    }

    static func decompress(_ input: UnsafeRawBufferPointer) throws -> [UInt8] {
        guard input.count >= 18 else { throw Failure(description: "not a gzip file (too short)") }
        // The trailer's ISIZE (the size mod 2^32) is the first guess; the buffer grows if it is short.
        let isize = Int(UInt32(littleEndian: input.loadUnaligned(fromByteOffset: input.count - 4, as: UInt32.self)))
        var s = z_stream()
        // 15 + 32: gzip or zlib, detected from the header.
        guard inflateInit2_(&s, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure(description: "zlib: inflateInit2 failed")
        }
        defer { inflateEnd(&s) }
        var out = [UInt8](repeating: 0, count: max(isize, input.count * 4, 4096))
        s.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
        s.avail_in = uInt(input.count)
        while true {
            let produced = Int(s.total_out)
            let status = out.withUnsafeMutableBytes { o -> Int32 in
                s.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self) + produced
                s.avail_out = uInt(o.count - produced)
                return inflate(&s, Z_NO_FLUSH)
            }
            if status == Z_STREAM_END { break }
            guard status == Z_OK || status == Z_BUF_ERROR else { throw Failure(description: "damaged gzip data (zlib \(status))") }
            if s.avail_out == 0 {
                out.append(contentsOf: repeatElement(0, count: out.count))  // more output than the trailer said
            } else if s.avail_in == 0 {
                throw Failure(description: "the gzip data ends early (truncated)")
            }
        }
        out.removeLast(out.count - Int(s.total_out))
        return out
    }
}

extension AuditSegments {
    /// `audit-000001.jsonl.gz`: a finished segment compressed by `tokenvault audit compress`.
    public static func compressedPath(_ directory: String, _ index: Int) -> String { path(directory, index) + ".gz" }

    /// The file that holds a segment: the plain one while it exists (a compression that stopped half way
    /// leaves both, and the plain one is the original), else the compressed one.
    public static func file(_ directory: String, _ index: Int) -> String {
        let plain = path(directory, index)
        return access(plain, F_OK) == 0 || access(compressedPath(directory, index), F_OK) != 0 ? plain : compressedPath(directory, index)
    }

    public static func isCompressed(_ directory: String, _ index: Int) -> Bool { file(directory, index).hasSuffix(".gz") }

    /// A segment's bytes: mapped, or decompressed into memory.
    static func open(_ directory: String, _ index: Int, sequential: Bool = false) -> MappedFile? {
        let f = file(directory, index)
        guard f.hasSuffix(".gz") else { return MappedFile(path: f, sequential: sequential) }
        guard let packed = MappedFile(path: f) else { return nil }
        guard let bytes = withExtendedLifetime(packed, { try? Gzip.decompress(packed.bytes) }) else { return nil }
        return MappedFile(owning: bytes)
    }

    /// Compresses a finished segment: the gzip file is written beside it, synced, read back and compared
    /// byte for byte, renamed into place, and only then is the plain file removed. Returns the sizes.
    public static func compress(directory: String, segment: Int) throws -> (plain: Int, compressed: Int) {
        let plainPath = path(directory, segment), gz = compressedPath(directory, segment), tmp = gz + ".tmp"
        guard let plain = MappedFile(path: plainPath, sequential: true) else {
            throw Gzip.Failure(description: "cannot read \(plainPath): \(String(cString: strerror(errno)))")
        }
        return try withExtendedLifetime(plain) {
            let packed = try Gzip.compress(plain.bytes)
            guard try packed.withUnsafeBytes({ try Gzip.decompress($0) }).withUnsafeBytes({ $0.elementsEqual(plain.bytes) }) else {
                throw Gzip.Failure(description: "\(plainPath): the compressed copy does not read back the same; nothing was changed")
            }
            let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw Gzip.Failure(description: "cannot write \(tmp): \(String(cString: strerror(errno)))") }
            var written = 0
            packed.withUnsafeBytes { raw in
                while written < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + written, raw.count - written)
                    if n < 0 { if errno == EINTR { continue }; break }
                    written += n
                }
            }
            let synced = fsync(fd) == 0
            Glibc.close(fd)
            guard written == packed.count, synced, rename(tmp, gz) == 0 else {
                let why = String(cString: strerror(errno))
                unlink(tmp)
                throw Gzip.Failure(description: "cannot write \(gz): \(why); nothing was changed")
            }
            syncDirectory(directory)
            guard unlink(plainPath) == 0 else { throw Gzip.Failure(description: "cannot remove \(plainPath): \(String(cString: strerror(errno)))") }
            syncDirectory(directory)
            return (plain.bytes.count, packed.count)
        }
    }

    static func syncDirectory(_ directory: String) {
        let d = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if d >= 0 {
            fsync(d)
            Glibc.close(d)
        }
    }
}
