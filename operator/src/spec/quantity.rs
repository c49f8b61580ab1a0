//! Sizes and CPU counts as people write them — Dask's `4GiB`, `16GB`, `512 MB`, Kubernetes'
//! `2Gi`, `500m` — parsed once into numbers, so no backend passes an unchecked string on.

use std::fmt;

/// A number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

impl ByteSize {
    /// Parses Dask's sizes (`4GiB`, `16GB`, `512 MB`, `1.5e9`, `100kB`, `4G`: decimal units are
    /// powers of 1000 as in Dask, `KiB`… powers of 1024) and Kubernetes' binary suffixes (`2Gi`).
    /// A Kubernetes decimal suffix means the same as Dask's (`500M` = 500 MB); `m` (milli) is
    /// refused, since a thousandth of a byte is never meant.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.trim().parse().map_err(|_| {
            format!("{text:?} is not a size (examples: 4GiB, 16GB, 512MiB, 2Gi, 1000000)")
        })?;
        let unit = unit.trim();
        let mult: f64 = match unit {
            "m" => {
                return Err(format!(
                    "{text:?}: `m` is Kubernetes' milli; write M or MB for megabytes, Mi or MiB for mebibytes"
                ));
            }
            "Ki" => KIB as f64,
            "Mi" => MIB as f64,
            "Gi" => GIB as f64,
            "Ti" => TIB as f64,
            _ => match unit.to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "k" | "kb" => 1e3,
                "m" | "mb" => 1e6,
                "g" | "gb" => 1e9,
                "t" | "tb" => 1e12,
                "kib" => KIB as f64,
                "mib" => MIB as f64,
                "gib" => GIB as f64,
                "tib" => TIB as f64,
                _ => {
                    return Err(format!(
                        "{text:?} has an unknown unit {unit:?} (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB or Ki, Mi, Gi, Ti)"
                    ));
                }
            },
        };
        let bytes = n * mult;
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// This size split `n` ways (rounded down), for the workers sharing a job's memory.
    pub fn split(self, n: u32) -> ByteSize {
        ByteSize(self.0 / u64::from(n.max(1)))
    }

    /// SLURM's `--mem`: whole GiB, MiB or KiB rounded up (SLURM writes them `G`, `M`, `K`), the
    /// largest unit the size reaches, at least `1K`: `16GB` → `15G`.
    pub fn slurm(self) -> String {
        for (size, unit) in [(GIB, "G"), (MIB, "M"), (KIB, "K")] {
            if self.0 >= size {
                return format!("{}{unit}", self.0.div_ceil(size));
            }
        }
        "1K".into()
    }

    /// PBS's `mem=`: whole GiB, MiB or KiB rounded up (PBS writes them `GB`, `MB`, `kB`), the
    /// largest unit that keeps the number at least 10, else bytes: `16GB` → `15GB`.
    pub fn pbs(self) -> String {
        for (size, unit) in [(GIB, "GB"), (MIB, "MB"), (KIB, "kB")] {
            if self.0 >= 10 * size {
                return format!("{}{unit}", self.0.div_ceil(size));
            }
        }
        format!("{}B", self.0)
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact form: `4GiB`, `16GB`, `1536MiB`, else plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        let units: [(u64, &str); 8] = [
            (TIB, "TiB"),
            (1_000_000_000_000, "TB"),
            (GIB, "GiB"),
            (1_000_000_000, "GB"),
            (MIB, "MiB"),
            (1_000_000, "MB"),
            (KIB, "KiB"),
            (1_000, "kB"),
        ];
        for (size, unit) in units {
            if b >= size && b.is_multiple_of(size) {
                return write!(f, "{}{unit}", b / size);
            }
        }
        write!(f, "{b}B")
    }
}

/// A worker's `--memory-limit`: where it spills, pauses and is restarted (Dask's memory model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryLimit {
    /// The machine's memory times the worker's share of the cores (Dask's `auto`).
    Auto,
    /// No limit (`0`).
    Unlimited,
    Bytes(ByteSize),
}

impl MemoryLimit {
    /// `auto`, `0`, or a size ([`ByteSize::parse`]).
    pub fn parse(text: &str) -> Result<MemoryLimit, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(MemoryLimit::Auto);
        }
        match ByteSize::parse(t) {
            Ok(ByteSize(0)) => Ok(MemoryLimit::Unlimited),
            Ok(b) => Ok(MemoryLimit::Bytes(b)),
            Err(e) => Err(format!("{e}; or `auto`, or 0 for no limit")),
        }
    }

    /// The value for `rask worker --memory-limit` (and `dask worker`): bytes, `auto` or `0`.
    pub fn arg(self) -> String {
        match self {
            MemoryLimit::Auto => "auto".into(),
            MemoryLimit::Unlimited => "0".into(),
            MemoryLimit::Bytes(b) => b.0.to_string(),
        }
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryLimit::Auto => f.write_str("auto"),
            MemoryLimit::Unlimited => f.write_str("0 (no limit)"),
            MemoryLimit::Bytes(b) => write!(f, "{b}"),
        }
    }
}

/// A Kubernetes quantity (`2Gi`, `500M`, `1.5`, `250m`) as a number: CPU limits and memory
/// limits of pod specs.
pub fn kube_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0f64.powi(2),
        "Gi" => 1024.0f64.powi(3),
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_dask_and_kubernetes_write_them() {
        let cases: [(&str, u64); 10] = [
            ("4GiB", 4 * GIB),
            ("16GB", 16_000_000_000),
            ("512 MiB", 512 * MIB),
            ("2Gi", 2 * GIB),
            ("500M", 500_000_000),
            ("4G", 4_000_000_000),
            ("1.5e9", 1_500_000_000),
            ("100kB", 100_000),
            ("1000", 1000),
            ("0", 0),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["lots", "3 parsecs", "-1", "500m", ""] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert!(ByteSize::parse("500m").unwrap_err().contains("milli"));
    }

    #[test]
    fn sizes_print_in_their_shortest_exact_form() {
        assert_eq!(ByteSize(4 * GIB).to_string(), "4GiB");
        assert_eq!(ByteSize(16_000_000_000).to_string(), "16GB");
        assert_eq!(ByteSize(1536 * MIB).to_string(), "1536MiB");
        assert_eq!(ByteSize(1001).to_string(), "1001B");
    }

    #[test]
    fn batch_systems_get_whole_binary_units_rounded_up() {
        assert_eq!(ByteSize(16_000_000_000).slurm(), "15G");
        assert_eq!(ByteSize(64 * GIB).slurm(), "64G");
        assert_eq!(ByteSize(12_345_678).slurm(), "12M");
        assert_eq!(ByteSize(1234).slurm(), "2K");
        assert_eq!(ByteSize(12).slurm(), "1K");
        assert_eq!(ByteSize(15_000_000_000).pbs(), "14GB");
        assert_eq!(ByteSize(1_234_567_890).pbs(), "1178MB");
        assert_eq!(ByteSize(12_345_678).pbs(), "12MB");
        assert_eq!(ByteSize(1234).pbs(), "1234B");
        assert_eq!(ByteSize(4 * GIB).split(4), ByteSize(GIB));
    }

    #[test]
    fn memory_limits() {
        assert_eq!(MemoryLimit::parse("auto"), Ok(MemoryLimit::Auto));
        assert_eq!(MemoryLimit::parse("0"), Ok(MemoryLimit::Unlimited));
        assert_eq!(
            MemoryLimit::parse("6GiB"),
            Ok(MemoryLimit::Bytes(ByteSize(6 * GIB)))
        );
        assert_eq!(MemoryLimit::parse("6GiB").unwrap().arg(), "6442450944");
        assert!(MemoryLimit::parse("6GiB';reboot;'").is_err());
    }

    #[test]
    fn kubernetes_quantities() {
        assert_eq!(kube_quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(kube_quantity("500M"), Some(5e8));
        assert_eq!(kube_quantity("250m"), Some(0.25));
        assert_eq!(kube_quantity("2 apples"), None);
    }
}
