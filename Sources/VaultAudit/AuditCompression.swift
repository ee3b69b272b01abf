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

    /// zlib counts in 32-bit `uInt`s: input and output go through it at most this much at a time.
    static let step = 1 << 30
    /// Output a decompression may produce before the data is refused as damaged (or hostile: a small
    /// file that expands without end). Far above any segment the writer makes.
    static let maxOutput = 1 << 36

    static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = 6, step: Int = Gzip.step) throws -> [UInt8] {
        var s = z_stream()
        // 15 + 16: a gzip header and trailer rather than zlib's.
        guard deflateInit2_(&s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure(description: "zlib: deflateInit2 failed")
        }
        defer { deflateEnd(&s) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(&s, uLong(min(input.count, step)))) + 64)
        var consumed = 0
        var status = Z_OK
        while status == Z_OK {
            if s.avail_in == 0 && consumed < input.count {
                let n = min(step, input.count - consumed)
                s.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self)) + consumed
                s.avail_in = uInt(n)
                consumed += n
            }
            let produced = Int(s.total_out)
            if produced == out.count { out.append(contentsOf: repeatElement(0, count: max(out.count, 1 << 16))) }
            status = out.withUnsafeMutableBytes { o -> Int32 in
                s.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self) + produced
                s.avail_out = uInt(min(step, o.count - produced))
                return deflate(&s, consumed == input.count ? Z_FINISH : Z_NO_FLUSH)
            }
            if status == Z_BUF_ERROR { status = Z_OK }  // no room or no input this round: go on
        }
        guard status == Z_STREAM_END else { throw Failure(description: "zlib: deflate did not finish (\(status))") }
        out.removeLast(out.count - Int(s.total_out))
        return out
    }

    static func decompress(_ input: UnsafeRawBufferPointer, limit: Int = maxOutput, step: Int = Gzip.step) throws -> [UInt8] {
        guard input.count >= 18 else { throw Failure(description: "not a gzip file (too short)") }
        // The trailer's ISIZE (the size mod 2^32) is the first guess; the buffer grows if it is short.
        let isize = Int(UInt32(littleEndian: input.loadUnaligned(fromByteOffset: input.count - 4, as: UInt32.self)))
        var s = z_stream()
        // 15 + 32: gzip or zlib, detected from the header.
        guard inflateInit2_(&s, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw Failure(description: "zlib: inflateInit2 failed")
        }
        defer { inflateEnd(&s) }
        // Deflate expands at most about 1032:1: a trailer (or a stream) that says more is not to be believed.
        let limit = min(limit, input.count * 1032 + 65536)
        var out = [UInt8](repeating: 0, count: min(limit, max(isize, 4096)))
        var consumed = 0
        while true {
            if s.avail_in == 0 && consumed < input.count {
                let n = min(step, input.count - consumed)
                s.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self)) + consumed
                s.avail_in = uInt(n)
                consumed += n
            }
            let produced = Int(s.total_out)
            if produced == out.count {
                guard out.count < limit else { throw Failure(description: "the gzip data expands past \(limit) bytes: refused as damaged") }
                out.append(contentsOf: repeatElement(0, count: min(out.count, limit - out.count)))  // more than the trailer said
            }
            let status = out.withUnsafeMutableBytes { o -> Int32 in
                s.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self) + produced
                s.avail_out = uInt(min(step, o.count - produced))
                return inflate(&s, Z_NO_FLUSH)
            }
            if status == Z_STREAM_END { break }
            guard status == Z_OK || status == Z_BUF_ERROR else { throw Failure(description: "damaged gzip data (zlib \(status))") }
            if s.avail_in == 0 && consumed == input.count && s.avail_out > 0 {
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
