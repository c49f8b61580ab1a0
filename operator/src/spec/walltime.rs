//! Job run times as batch systems write them (SLURM's `--time`, SGE's `h_rt`, PBS's `walltime`),
//! parsed once into a [`Duration`] and printed back in each system's form.

use std::fmt;
use std::time::Duration;

/// The longest walltime or lifetime taken, about 317 years: far past any batch system's limit,
/// and short enough that a deadline computed from it (`Instant + Duration`) cannot overflow.
const MAX_SECS: u64 = 10_000_000_000;

/// How long a batch job may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Walltime(pub Duration);

impl Walltime {
    /// `HH:MM:SS`, `MM:SS`, `D-HH[:MM[:SS]]` (SLURM), a number of minutes (SLURM's bare `30`), or
    /// a duration with a unit (`90s`, `45m`, `2h`, `1d`).
    pub fn parse(text: &str) -> Result<Walltime, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a walltime (examples: 01:30:00, 2-00:00:00, 90 (minutes), 45m, 2h)"
            )
        };
        // Each part is a u64 and at most four are summed with factors up to 86,400, so u128
        // cannot overflow; the total is checked against MAX_SECS below.
        let num = |s: &str| s.parse::<u64>().map(u128::from).map_err(|_| bad());
        let secs = if let Some((days, rest)) = t.split_once('-') {
            let d = num(days)?;
            let parts: Vec<&str> = rest.split(':').collect();
            let (h, m, s) = match parts.as_slice() {
                [h] => (num(h)?, 0, 0),
                [h, m] => (num(h)?, num(m)?, 0),
                [h, m, s] => (num(h)?, num(m)?, num(s)?),
                _ => return Err(bad()),
            };
            d * 86_400 + h * 3600 + m * 60 + s
        } else if t.contains(':') {
            let parts: Vec<&str> = t.split(':').collect();
            match parts.as_slice() {
                [m, s] => num(m)? * 60 + num(s)?,
                [h, m, s] => num(h)? * 3600 + num(m)? * 60 + num(s)?,
                _ => return Err(bad()),
            }
        } else if let Some(last) = t.chars().last().filter(char::is_ascii_alphabetic) {
            let n = num(t[..t.len() - 1].trim())?;
            match last {
                's' => n,
                'm' => n * 60,
                'h' => n * 3600,
                'd' => n * 86_400,
                _ => return Err(bad()),
            }
        } else {
            num(t)? * 60
        };
        if secs == 0 {
            return Err(format!("{text:?}: a walltime must be longer than zero"));
        }
        let secs = u64::try_from(secs)
            .ok()
            .filter(|&s| s <= MAX_SECS)
            .ok_or_else(|| format!("{text:?}: a walltime must be at most {MAX_SECS} seconds"))?;
        Ok(Walltime(Duration::from_secs(secs)))
    }

    pub fn duration(self) -> Duration {
        self.0
    }

    /// `HH:MM:SS` (hours may exceed 24), as SGE's `h_rt` and PBS's `walltime` take it; SLURM's
    /// `--time` takes it too.
    pub fn hms(self) -> String {
        let s = self.0.as_secs();
        format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    }
}

impl fmt::Display for Walltime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hms())
    }
}

/// A duration with a unit (`55m`, `90s`, `1h`, `300`: seconds), as Dask's `--lifetime` takes it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (examples: 300, 90s, 55m, 2h)");
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (t[..i].trim(), t[i..].trim()),
        None => (t, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    let secs = n * mult;
    if !secs.is_finite() || !(0.0..=MAX_SECS as f64).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walltimes_in_each_batch_systems_forms() {
        let cases = [
            ("00:30:00", 1800),
            ("30:00", 1800),
            ("30", 1800),
            ("1-00:00:00", 86_400),
            ("2-12", 2 * 86_400 + 12 * 3600),
            ("36:00:00", 36 * 3600),
            ("90s", 90),
            ("45m", 2700),
            ("2h", 7200),
        ];
        for (text, secs) in cases {
            assert_eq!(
                Walltime::parse(text).map(|w| w.0.as_secs()),
                Ok(secs),
                "{text}"
            );
        }
        for bad in ["", "soon", "1:2:3:4", "0", "00:00:00", "-5"] {
            assert!(Walltime::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Walltime::parse("1-12:00:00").unwrap().hms(), "36:00:00");
    }

    #[test]
    fn walltimes_too_long_are_refused_not_wrapped() {
        // Each of these overflowed u64 before (a panic in debug builds, a wrapped and so wrong
        // walltime in release). Fuzzing found it.
        for huge in [
            "18446744073709551615-00:00:00",
            "213503982334601-00",
            "18446744073709551615:00:00",
            "18446744073709551615d",
            "18446744073709551615",
            "307445734561825861m",
        ] {
            let err = Walltime::parse(huge).unwrap_err();
            assert!(err.contains("at most 10000000000 seconds"), "{huge}: {err}");
        }
        // The longest taken is the cap itself; one second more is refused.
        assert_eq!(
            Walltime::parse("10000000000s").map(|w| w.0.as_secs()),
            Ok(MAX_SECS)
        );
        assert!(Walltime::parse("10000000001s").is_err());
        assert!(parse_duration("10000000001").is_err());
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_duration("55m"), Ok(Duration::from_secs(3300)));
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("a while").is_err());
    }
}
