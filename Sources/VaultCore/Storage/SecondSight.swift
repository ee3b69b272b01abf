/// Admission for a read path's memory of rows: a row is worth remembering once it has been asked for
/// twice, and not before.
///
/// A vault of a million tokens read in no order almost never reads a row twice before the memory fills:
/// remembering every row read there costs an insert, and later a mass release of cold rows, for no hit.
/// This remembers only a hash of each name asked for, in a fixed table (one slot per hash, a newer name
/// taking an older one's slot), so a name seen again while its slot still holds it is admitted. Hot names
/// are admitted at their second read and stay admitted; a name that misses by a collision costs one more
/// read from the store, never a wrong answer: the filter says only whether to remember, never what.
public struct SecondSight: Sendable {
    private var slots: [Int]
    private let mask: Int

    /// `capacity` is rounded up to a power of two (at least 2).
    public init(capacity: Int = 16_384) {
        var n = 2
        while n < capacity { n <<= 1 }
        slots = Array(repeating: 0, count: n)
        mask = n - 1
    }

    /// Whether `name` was asked for before (and still holds its slot); notes it either way.
    public mutating func seenBefore(_ name: String) -> Bool {
        var h = name.hashValue
        if h == 0 { h = 1 }  // 0 marks an empty slot
        let i = h & mask
        if slots[i] == h { return true }
        slots[i] = h
        return false
    }
}
