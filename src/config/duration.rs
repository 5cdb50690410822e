//! Go `time.Duration` text ("30s", "1m0s", "1h2m3.5s", "300ms"), as metav1.Duration reads and prints it.

use std::time::Duration;

/// Parses a Go duration. Signs are accepted so "-1s" is reported as negative
/// rather than malformed; the caller decides whether negatives are allowed.
/// Returns (negative, magnitude).
pub fn parse_signed(s: &str) -> Result<(bool, Duration), String> {
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a Go duration such as \"30s\", \"1m0s\", \"1h30m\" or \"500ms\" (units ns, us, ms, s, m, h)"
        )
    };
    let t = s.trim();
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    // Go accepts a bare "0" (and only 0) without a unit.
    if body == "0" {
        return Ok((neg, Duration::ZERO));
    }
    if body.is_empty() {
        return Err(bad());
    }
    // Go durations are int64 nanoseconds; every step is checked against that
    // bound (Go's time.ParseDuration refuses overflow too), so no input can
    // overflow the arithmetic, whatever its digits.
    const MAX: u128 = i64::MAX as u128;
    let out_of_range = || {
        format!(
            "invalid duration {s:?}: duration out of range (the largest is 2562047h47m16.854775807s); give a smaller value"
        )
    };
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_end];
        rest = &rest[int_end..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..frac_end];
            rest = &r[frac_end..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_end..];
        // Digit by digit, so an integer part of any length is "out of range",
        // not a parse failure.
        let mut int: u128 = 0;
        for d in int_part.bytes() {
            int = int
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(d - b'0')))
                .filter(|&v| v <= MAX)
                .ok_or_else(out_of_range)?;
        }
        let mut nanos = int
            .checked_mul(unit)
            .filter(|&v| v <= MAX)
            .ok_or_else(out_of_range)?;
        // Fractions: Go keeps the digits that still matter at nanosecond precision.
        let mut scale = unit;
        for d in frac_part.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos = nanos
                .checked_add(u128::from(d - b'0') * scale)
                .filter(|&v| v <= MAX)
                .ok_or_else(out_of_range)?;
        }
        total = total
            .checked_add(nanos)
            .filter(|&v| v <= MAX)
            .ok_or_else(out_of_range)?;
    }
    let secs = (total / 1_000_000_000) as u64;
    let sub = (total % 1_000_000_000) as u32;
    Ok((neg && total > 0, Duration::new(secs, sub)))
}

/// Parses a Go duration that must not be negative (every kube-proxy duration
/// is validated ">= 0" upstream).
pub fn parse(s: &str) -> Result<Duration, String> {
    match parse_signed(s)? {
        (true, _) => Err(format!(
            "invalid duration {s:?}: must be greater than or equal to 0"
        )),
        (false, d) => Ok(d),
    }
}

/// Formats like Go's `Duration.String()`: "0s", "1.5s", "300ms", "1m0s", "24h0m0s".
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (v, unit, div) = if nanos < 1_000 {
            (nanos, "ns", 1)
        } else if nanos < 1_000_000 {
            (nanos, "µs", 1_000)
        } else {
            (nanos, "ms", 1_000_000)
        };
        return format!("{}{unit}", frac(v, div));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs / 60) % 60);
    let s = frac(
        u128::from(secs % 60) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
    );
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

fn frac(v: u128, div: u128) -> String {
    let (i, f) = (v / div, v % div);
    if f == 0 {
        return i.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{f:0width$}");
    format!("{i}.{}", digits.trim_end_matches('0'))
}
