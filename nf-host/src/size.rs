//! Memory sizes on the command line: parsing `64MiB`, `1.5G`, `4096` and printing `64.0 MiB`.
//!
//! Every unit is binary (1024-based), whatever its spelling: `K`, `KB` and `KiB` all mean
//! 1024 bytes; likewise `M`/`MB`/`MiB` (1024²), `G`/`GB`/`GiB` (1024³) and `T`/`TB`/`TiB`
//! (1024⁴). Units are case-insensitive, may be separated from the number by spaces, and the
//! number may have a decimal fraction (`1.5GiB`); the result is rounded down to whole bytes. A
//! plain number (optionally followed by `B`) is a count of bytes and must be an integer. Zero,
//! negative numbers, exponents and sizes above `u64::MAX` bytes are rejected.

/// The accepted unit spellings, for help texts and error messages.
pub const SIZE_SYNTAX: &str = "bytes, or a number with a binary unit K/KiB/KB, M/MiB/MB, \
     G/GiB/GB or T/TiB/TB (all 1024-based, case-insensitive; decimals allowed, e.g. 1.5GiB)";

/// Most fractional digits accepted (more cannot change the result by a whole byte below 1 TiB
/// anyway, and the bound keeps the arithmetic exact).
const MAX_FRACTION_DIGITS: usize = 18;

/// Multiplier of a unit suffix (already lower-cased), or `None` if it is not a unit.
fn unit_multiplier(unit: &str) -> Option<u64> {
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// `s` for an error message: control characters (line breaks, tabs, ...) escaped as `\n`,
/// `\r`, `\u{1b}`, so that a message quoting user input stays one line.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parse a memory size: plain bytes, or a (possibly fractional) number with a binary unit.
///
/// See the [module documentation](self) for the syntax. The error is a short message naming
/// the problem, meant to follow the flag name.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty size; expected {SIZE_SYNTAX}"));
    }
    let shown = printable(t);
    if t.starts_with('-') {
        return Err(format!("'{shown}' is negative; a size must be positive"));
    }
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let unit = unit.trim_start().to_ascii_lowercase();
    let Some(mult) = unit_multiplier(&unit) else {
        return Err(format!("'{shown}' is not a size; expected {SIZE_SYNTAX}"));
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let frac_ok = match frac_part {
        None => true,
        Some(f) => !f.is_empty() && digits_ok(f),
    };
    if int_part.is_empty() || !digits_ok(int_part) || !frac_ok {
        return Err(format!("'{shown}' is not a size; expected {SIZE_SYNTAX}"));
    }
    let frac = frac_part.unwrap_or("");
    if !frac.is_empty() && mult == 1 {
        return Err(format!(
            "'{shown}' is a fractional number of bytes; use a unit (e.g. 1.5MiB) or whole bytes"
        ));
    }
    let too_large = || format!("'{shown}' is too large (the limit is {} bytes)", u64::MAX);
    // Integer part: any number of leading zeros, but the value must fit.
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > 20 {
        return Err(too_large());
    }
    let int: u128 = if int_digits.is_empty() {
        0
    } else {
        int_digits.parse().map_err(|_| too_large())?
    };
    // Fraction: floor(frac / 10^k * mult), exact in u128 (10^18 * 2^40 < 2^100).
    let frac = frac.trim_end_matches('0');
    let frac = &frac[..frac.len().min(MAX_FRACTION_DIGITS)];
    let frac_bytes: u128 = if frac.is_empty() {
        0
    } else {
        let f: u128 = frac.parse().map_err(|_| too_large())?;
        f * u128::from(mult) / 10u128.pow(frac.len() as u32)
    };
    let total = int * u128::from(mult) + frac_bytes;
    if total == 0 {
        return Err(format!("'{shown}' is zero bytes; a size must be positive"));
    }
    u64::try_from(total).map_err(|_| too_large())
}

/// [`parse_size`], with zero allowed (`0`, `0MiB`): for limits where zero means "none".
pub fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    match parse_size(s) {
        Err(e) if e.contains("is zero bytes") => Ok(0),
        other => other,
    }
}

/// A size for people: `512 B` below 1 KiB, otherwise one decimal in the largest binary unit
/// that keeps the number at least 1 (`64.0 MiB`, `3.4 MiB`, `1.5 GiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut i = 0;
    // Move up while the value, as printed, would reach 1024.0.
    while i + 1 < UNITS.len() && value >= 1023.95 {
        value /= 1024.0;
        i += 1;
    }
    format!("{value:.1} {}", UNITS[i])
}

/// A size for a narrow table column: `0`, `512B`, `7.5K`, `123K`, `64M`, `1.2G` (binary units,
/// one decimal below 10, none from 10 up).
pub fn format_size_short(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes == 0 {
        return "0".to_string();
    }
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut i = 0;
    while i + 1 < UNITS.len() && value >= 1023.5 {
        value /= 1024.0;
        i += 1;
    }
    if value < 9.95 {
        format!("{value:.1}{}", UNITS[i])
    } else {
        format!("{value:.0}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("1"), Ok(1));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 4096 "), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("4096 b"), Ok(4096));
        assert_eq!(parse_size("007"), Ok(7));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn binary_units_in_every_spelling() {
        for (unit, mult) in [("k", KIB), ("m", MIB), ("g", GIB), ("t", 1024 * GIB)] {
            for spelling in [
                unit.to_string(),
                unit.to_uppercase(),
                format!("{unit}b"),
                format!("{}B", unit.to_uppercase()),
                format!("{}iB", unit.to_uppercase()),
                format!("{unit}IB"),
                format!(" {unit}ib"),
            ] {
                assert_eq!(
                    parse_size(&format!("3{spelling}")),
                    Ok(3 * mult),
                    "{spelling}"
                );
            }
        }
        assert_eq!(parse_size("64MiB"), Ok(64 * MIB));
        assert_eq!(parse_size("256 MiB"), Ok(256 * MIB));
        assert_eq!(parse_size("1GiB"), Ok(GIB));
        assert_eq!(parse_size("1GB"), Ok(GIB));
    }

    #[test]
    fn decimals_round_down_to_whole_bytes() {
        assert_eq!(parse_size("1.5GiB"), Ok(GIB + GIB / 2));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("1.0M"), Ok(MIB));
        assert_eq!(parse_size("1.00000000000000000000000000001M"), Ok(MIB));
        assert_eq!(parse_size("0.001K"), Ok(1)); // 1.024 bytes
        assert_eq!(parse_size("2.75 MiB"), Ok(2 * MIB + 3 * MIB / 4));
        assert!(parse_size(".5K").is_err());
    }

    #[test]
    fn rejects_garbage_negative_zero_and_overflow() {
        for bad in [
            "", " ", "abc", "MiB", "12 34", "1.2.3M", "1.M", ".5K", "1e6", "0x10", "+5", "5 MiBs",
            "5 KiKiB", "5 XB", "1,5GiB", "NaN", "inf",
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(!e.is_empty() && !e.contains('\n'), "{bad}: {e}");
        }
        assert!(parse_size("-1").unwrap_err().contains("negative"));
        assert!(parse_size("-1GiB").unwrap_err().contains("negative"));
        assert!(parse_size("0").unwrap_err().contains("zero"));
        assert!(parse_size("0.0GiB").unwrap_err().contains("zero"));
        assert!(parse_size("0.0000000001K").unwrap_err().contains("zero"));
        assert!(parse_size("1.5").unwrap_err().contains("fractional"));
        assert!(parse_size("18446744073709551616")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("99999999999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert!(parse_size("16777215.99999T").is_ok());
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(64 * MIB), "64.0 MiB");
        assert_eq!(format_size(3_565_158), "3.4 MiB");
        assert_eq!(format_size(GIB), "1.0 GiB");
        assert_eq!(format_size(GIB - 1), "1.0 GiB");
        assert_eq!(format_size(1000 * MIB), "1000.0 MiB");
        assert_eq!(format_size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn formats_for_columns() {
        assert_eq!(format_size_short(0), "0");
        assert_eq!(format_size_short(40), "40B");
        assert_eq!(format_size_short(1024), "1.0K");
        assert_eq!(format_size_short(7 * KIB + KIB / 2), "7.5K");
        assert_eq!(format_size_short(123 * KIB), "123K");
        assert_eq!(format_size_short(64 * MIB), "64M");
        assert_eq!(format_size_short(GIB + GIB / 5), "1.2G");
        assert_eq!(format_size_short(MIB - 1), "1.0M");
    }

    #[test]
    fn round_trips_whole_units() {
        for b in [1, 1000, KIB, 5 * MIB, 3 * GIB] {
            let shown = format_size(b).replace(' ', "");
            assert_eq!(parse_size(&shown), Ok(b), "{shown}");
        }
    }
}
