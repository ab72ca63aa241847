/// `1.5 GiB`-style sizes for people.
func humanBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(n), unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(n) B" : "\(fixed(value, 1)) \(units[unit])"
}

/// `x` rounded to `digits` decimals (no Foundation here).
func fixed(_ x: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let n = Int((x * scale).rounded())
    if digits == 0 { return "\(n)" }
    let whole = n / Int(scale), frac = n % Int(scale)
    let fracText = String(frac)
    return "\(whole)." + String(repeating: "0", count: digits - fracText.count) + fracText
}
