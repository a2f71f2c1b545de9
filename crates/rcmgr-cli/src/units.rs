//! Amounts people type and read: byte sizes (`8GiB`, `1.5G`, `512MiB`), durations (`10`,
//! `2.5s`, `500ms`) and large counts.

use std::{fmt, str::FromStr, time::Duration};

/// A number of bytes, read from what a person types.
///
/// The number may have a fraction and may be followed, with or without a space, by a unit
/// (any case): `B`; the binary units `KiB`, `MiB`, `GiB`, `TiB` and their one-letter forms `K`,
/// `M`, `G`, `T` (as `ulimit` and container runtimes read them); the decimal units `KB`, `MB`,
/// `GB`, `TB`. Without a unit the number is bytes. Fractions of a byte are dropped.
///
/// ```
/// use rcmgr_cli::units::ByteSize;
/// assert_eq!("8GiB".parse::<ByteSize>()?.bytes(), 8 << 30);
/// assert_eq!("1.5G".parse::<ByteSize>()?.bytes(), 3 << 29);
/// assert_eq!("512 MiB".parse::<ByteSize>()?.bytes(), 512 << 20);
/// assert_eq!("2GB".parse::<ByteSize>()?.bytes(), 2_000_000_000);
/// assert_eq!("1073741824".parse::<ByteSize>()?.bytes(), 1 << 30);
/// assert!("lots".parse::<ByteSize>().is_err());
/// # Ok::<(), rcmgr_cli::units::InvalidAmount>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    /// This many bytes.
    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// The units [`ByteSize`] reads, lowercase, with their size in bytes.
const BYTE_UNITS: [(&str, u64); 14] = [
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("kib", 1 << 10),
    ("kb", 1_000),
    ("m", 1 << 20),
    ("mib", 1 << 20),
    ("mb", 1_000_000),
    ("g", 1 << 30),
    ("gib", 1 << 30),
    ("gb", 1_000_000_000),
    ("t", 1 << 40),
    ("tib", 1 << 40),
    ("tb", 1_000_000_000_000),
];

impl FromStr for ByteSize {
    type Err = InvalidAmount;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| InvalidAmount::new("size", text, why);
        let (number, unit) = split_number(text);
        if number.is_empty() {
            return Err(invalid("no number"));
        }
        let unit_lower = unit.to_ascii_lowercase();
        let Some(&(_, multiplier)) = BYTE_UNITS.iter().find(|(name, _)| *name == unit_lower) else {
            return Err(invalid(
                "unknown unit (use B, KiB, MiB, GiB, TiB, K, M, G, T, KB, MB, GB or TB)",
            ));
        };
        let bytes = scaled(number, multiplier).map_err(invalid)?;
        Ok(ByteSize(bytes))
    }
}

impl fmt::Display for ByteSize {
    /// The size in the largest binary unit that keeps the number at or above 1, with one
    /// decimal (`3.0 GiB`), or in bytes below 1 KiB (`512 B`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A length of time, read from what a person types: a number of seconds, with a fraction if
/// need be, optionally followed by `s`, `ms` or `m` (minutes).
///
/// ```
/// use rcmgr_cli::units::Seconds;
/// use std::time::Duration;
/// assert_eq!("10".parse::<Seconds>()?.duration(), Duration::from_secs(10));
/// assert_eq!("2.5s".parse::<Seconds>()?.duration(), Duration::from_millis(2500));
/// assert_eq!("500ms".parse::<Seconds>()?.duration(), Duration::from_millis(500));
/// assert_eq!("1m".parse::<Seconds>()?.duration(), Duration::from_secs(60));
/// assert!("-1".parse::<Seconds>().is_err());
/// # Ok::<(), rcmgr_cli::units::InvalidAmount>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(Duration);

impl Seconds {
    /// The length of time.
    pub const fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Seconds {
    type Err = InvalidAmount;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |why: &str| InvalidAmount::new("duration", text, why);
        let (number, unit) = split_number(text);
        let nanos_per_unit: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "m" | "min" => 60_000_000_000,
            _ => return Err(invalid("unknown unit (use s, ms or m)")),
        };
        let nanos = scaled(number, nanos_per_unit).map_err(invalid)?;
        Ok(Seconds(Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} s", self.0.as_secs_f64())
    }
}

/// `text` split into its leading number (digits, `.`, signs, exponent) and the unit after
/// it, both trimmed.
fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | '_')))
        .unwrap_or(text.len());
    (text[..end].trim(), text[end..].trim())
}

/// `number × multiplier` as a whole count, rounded down: exact for integers, through `f64`
/// for fractions. Fails for a missing, negative, malformed or too large number.
fn scaled(number: &str, multiplier: u64) -> Result<u64, &'static str> {
    if number.is_empty() {
        return Err("no number");
    }
    if number.starts_with('-') {
        return Err("negative");
    }
    let digits = number.trim_start_matches('+').replace('_', "");
    if let Ok(whole) = digits.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or("too large");
    }
    let value: f64 = digits.parse().map_err(|_| "not a number")?;
    let product = value * multiplier as f64;
    // u64::MAX as f64 rounds up to 2^64, so `<` keeps the conversion below exact range.
    if !product.is_finite() || product >= u64::MAX as f64 {
        return Err("too large");
    }
    Ok(product as u64)
}

/// A size, duration or count that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: {why}")]
pub struct InvalidAmount {
    what: &'static str,
    text: String,
    why: String,
}

impl InvalidAmount {
    fn new(what: &'static str, text: &str, why: &str) -> Self {
        InvalidAmount {
            what,
            text: text.to_owned(),
            why: why.to_owned(),
        }
    }
}

/// A count with thousands separators (`1,234,567`), for reports.
///
/// ```
/// assert_eq!(rcmgr_cli::units::Count(1234567).to_string(), "1,234,567");
/// assert_eq!(rcmgr_cli::units::Count(12).to_string(), "12");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        f.pad(&out)
    }
}

/// `part` of `whole` as a percentage with `decimals` decimals, never rounded across what the
/// counts say: rounded down (so a share below a threshold never shows at it, and a share
/// short of all of it never shows as `100%`), `100%` only when `part` is all of `whole`, `0%`
/// only when it is none of it (a share too small to show is `<0.01%` at two decimals), and
/// `-` when `whole` is 0. Exact: integer arithmetic, whatever the counts.
///
/// ```
/// use rcmgr_cli::units::Percent;
/// assert_eq!(Percent::of(1, 3, 2).to_string(), "33.33%");
/// assert_eq!(Percent::of(3_599_998, 3_600_000, 2).to_string(), "99.99%");
/// assert_eq!(Percent::of(2, 3_600_000, 2).to_string(), "<0.01%");
/// assert_eq!(Percent::of(5, 5, 2).to_string(), "100%");
/// assert_eq!(Percent::of(0, 5, 2).to_string(), "0%");
/// assert_eq!(Percent::of(98_999, 100_000, 3).to_string(), "98.999%");
/// assert_eq!(Percent::of(0, 0, 2).to_string(), "-");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent {
    part: u64,
    whole: u64,
    decimals: u32,
}

impl Percent {
    /// `part` of `whole`, to be shown with `decimals` decimals (at most 6).
    pub fn of(part: u64, whole: u64, decimals: u32) -> Self {
        Percent {
            part: part.min(whole),
            whole,
            decimals: decimals.min(6),
        }
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Percent {
            part,
            whole,
            decimals,
        } = *self;
        let text = if whole == 0 {
            "-".to_owned()
        } else if part == whole {
            "100%".to_owned()
        } else if part == 0 {
            "0%".to_owned()
        } else {
            let scale = 10u128.pow(decimals);
            let floored = u128::from(part) * 100 * scale / u128::from(whole);
            let smallest = format!("{:.*}", decimals as usize, 1.0 / scale as f64);
            if floored == 0 {
                format!("<{smallest}%")
            } else {
                let (whole_part, fraction) = (floored / scale, floored % scale);
                if decimals == 0 {
                    format!("{whole_part}%")
                } else {
                    format!(
                        "{whole_part}.{fraction:0width$}%",
                        width = decimals as usize
                    )
                }
            }
        };
        f.pad(&text)
    }
}

/// A rate in operations per second, in the unit that reads best (`2.51 M/s`, `830 k/s`).
///
/// ```
/// assert_eq!(rcmgr_cli::units::Rate(2_510_000.0).to_string(), "2.51 M/s");
/// assert_eq!(rcmgr_cli::units::Rate(830.0).to_string(), "830 /s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            r if r >= 1e6 => format!("{:.2} M/s", r / 1e6),
            r if r >= 1e3 => format!("{:.1} k/s", r / 1e3),
            r => format!("{r:.0} /s"),
        };
        f.pad(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> Result<u64, InvalidAmount> {
        text.parse::<ByteSize>().map(ByteSize::bytes)
    }

    #[test]
    fn sizes_read_every_unit_in_any_case() {
        assert_eq!(bytes("1kib"), Ok(1024));
        assert_eq!(bytes("1KB"), Ok(1000));
        assert_eq!(bytes("3 mb"), Ok(3_000_000));
        assert_eq!(bytes("2t"), Ok(2 << 40));
        assert_eq!(bytes("0.5KiB"), Ok(512));
        assert_eq!(bytes("7b"), Ok(7));
        assert_eq!(bytes("1_000"), Ok(1000));
        assert_eq!(bytes("  64 MiB "), Ok(64 << 20));
    }

    #[test]
    fn bad_sizes_are_refused_with_a_reason() {
        for text in [
            "", "GiB", "-1GiB", "1.2.3", "1 parsec", "NaN", "inf", "1e30TiB",
        ] {
            let err = bytes(text).unwrap_err();
            assert!(err.to_string().starts_with("invalid size"), "{text}: {err}");
        }
        assert_eq!(bytes("16777216TiB").unwrap_err().why, "too large");
        assert_eq!(
            bytes("18446744073709551615"),
            Ok(u64::MAX),
            "the largest count still fits"
        );
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(ByteSize::new(0).to_string(), "0 B");
        assert_eq!(ByteSize::new(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteSize::new(8 << 30).to_string(), "8.0 GiB");
        assert_eq!(ByteSize::new(u64::MAX).to_string(), "16.0 EiB");
    }

    #[test]
    fn durations_refuse_what_is_not_a_duration() {
        for text in ["", "s", "10 parsecs", "-2", "1e400"] {
            assert!(text.parse::<Seconds>().is_err(), "{text}");
        }
        assert_eq!(
            "0".parse::<Seconds>().map(Seconds::duration),
            Ok(Duration::ZERO)
        );
    }
}
