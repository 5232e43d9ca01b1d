/// Arithmetic on values that come from the network, from disk or from an operator (publish
/// times, sequence ids, policy limits): it saturates at the type's bounds instead of trapping,
/// so no such value can crash the broker. Pure functions.
extension Int64 {
    /// `self + other`, or the bound it would pass.
    @inlinable
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other > 0 ? .max : .min
    }

    /// `self - other`, or the bound it would pass.
    @inlinable
    public func saturatingSubtract(_ other: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        guard overflow else { return difference }
        return other < 0 ? .max : .min
    }

    /// `self * other`, or the bound it would pass.
    @inlinable
    public func saturatingMultiply(_ other: Int64) -> Int64 {
        let (product, overflow) = multipliedReportingOverflow(by: other)
        guard overflow else { return product }
        return (self < 0) == (other < 0) ? .max : .min
    }
}
