//! The seed's taxi workload: a seeded synthetic NYC-yellow-taxi-like CSV, and the job that reads
//! it with a block size, counts it and takes per-`payment_type` means.
//!
//! The generator draws from the distributions of the reference script
//! `shared/peer-bench/gen_taxi_csv.py` (same columns, same formats, two decimals on every
//! float), so 5,000,000 rows make a file of the same size (about 234 MB) and the same groups.
//! It uses its own generator (xoshiro256**), so values are not numpy's, only alike.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use rask_client::Client;

use crate::{Agg, FrameError, ReadCsvOptions, read_csv};

/// The reference file's header.
pub const HEADER: &str = "VendorID,tpep_pickup_datetime,passenger_count,trip_distance,payment_type,fare_amount,tip_amount,total_amount";

/// xoshiro256** seeded through splitmix64: small, fast and good enough for synthetic data.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn exponential(&mut self, scale: f64) -> f64 {
        -(1.0 - self.uniform()).ln() * scale
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// An index drawn with the given probabilities (which sum to 1).
    fn choice(&mut self, p: &[f64]) -> usize {
        let u = self.uniform();
        let mut acc = 0.0;
        for (i, pi) in p.iter().enumerate() {
            acc += pi;
            if u < acc {
                return i;
            }
        }
        p.len() - 1
    }
}

const PASSENGER_P: [f64; 6] = [0.70, 0.14, 0.05, 0.03, 0.05, 0.03];
const PAYMENT_P: [f64; 5] = [0.62, 0.36, 0.012, 0.006, 0.002];

/// Appends `cents` as a decimal with two places (`-0.50`, `12.30`).
fn push_cents(out: &mut Vec<u8>, cents: i64) {
    if cents < 0 {
        out.push(b'-');
    }
    let c = cents.unsigned_abs();
    push_u64(out, c / 100);
    out.push(b'.');
    out.push(b'0' + (c % 100 / 10) as u8);
    out.push(b'0' + (c % 10) as u8);
}

fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn push_2(out: &mut Vec<u8>, v: u64) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Appends one synthetic trip as a CSV line.
fn push_row(rng: &mut Rng, out: &mut Vec<u8>) {
    let vendor = 1 + rng.below(2);
    let secs = rng.below(31 * 86_400);
    let passenger = 1 + rng.choice(&PASSENGER_P) as u64;
    let dist_c = (rng.exponential(2.9) * 100.0).round() as i64;
    let payment = 1 + rng.choice(&PAYMENT_P) as u64;
    let noise = rng.normal().clamp(-2.0, 5.0);
    let fare_c = ((2.5 + 2.5 * dist_c as f64 / 100.0 + noise) * 100.0)
        .round()
        .max(250.0) as i64;
    let tip_u = rng.uniform() * 0.3;
    let tip_c = if payment == 1 {
        (fare_c as f64 * tip_u).round() as i64
    } else {
        0
    };
    let total_c = fare_c + tip_c + 80;

    push_u64(out, vendor);
    out.extend_from_slice(b",2015-01-");
    push_2(out, secs / 86_400 + 1);
    out.push(b' ');
    push_2(out, secs % 86_400 / 3600);
    out.push(b':');
    push_2(out, secs % 3600 / 60);
    out.push(b':');
    push_2(out, secs % 60);
    out.push(b',');
    push_u64(out, passenger);
    out.push(b',');
    push_cents(out, dist_c);
    out.push(b',');
    push_u64(out, payment);
    out.push(b',');
    push_cents(out, fare_c);
    out.push(b',');
    push_cents(out, tip_c);
    out.push(b',');
    push_cents(out, total_c);
    out.push(b'\n');
}

/// Writes `rows` synthetic trips drawn with `seed` to `path`; returns the bytes written.
pub fn write_taxi_csv(path: &Path, rows: u64, seed: u64) -> Result<u64, FrameError> {
    let io_err = |source| FrameError::Io {
        path: path.to_owned(),
        what: "writing",
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let file = std::fs::File::create(path).map_err(io_err)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng::new(seed);
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(HEADER.as_bytes());
    buf.push(b'\n');
    let mut written = 0u64;
    for _ in 0..rows {
        push_row(&mut rng, &mut buf);
        if buf.len() > (1 << 20) - 128 {
            w.write_all(&buf).map_err(io_err)?;
            written += buf.len() as u64;
            buf.clear();
        }
    }
    w.write_all(&buf).map_err(io_err)?;
    written += buf.len() as u64;
    w.flush().map_err(io_err)?;
    Ok(written)
}

/// What the taxi job measured.
#[derive(Debug)]
pub struct TaxiOutcome {
    pub npartitions: usize,
    pub rows: u64,
    /// `read_csv` itself: the glob, the headers and the type sample.
    pub read_s: f64,
    pub len_s: f64,
    pub groupby_s: f64,
    /// Per `payment_type`: (key, mean `total_amount`, mean `trip_distance`), sorted by key.
    pub means: Vec<(i64, f64, f64)>,
}

/// The seed's dataframe workload: `read_csv(pattern, blocksize=..., sep=...)`, `len`, then
/// `groupby("payment_type").agg({"total_amount": "mean", "trip_distance": "mean"})`.
pub async fn taxi_groupby(
    client: &Client,
    pattern: &str,
    options: &ReadCsvOptions,
) -> Result<TaxiOutcome, FrameError> {
    let t0 = Instant::now();
    let df = read_csv(pattern, options)?;
    let t1 = Instant::now();
    let rows = df.len(client).await?;
    let t2 = Instant::now();
    let g = df
        .groupby(&["payment_type"])?
        .agg(&[("total_amount", Agg::Mean), ("trip_distance", Agg::Mean)])?
        .compute(client)
        .await?;
    let t3 = Instant::now();
    let col = |name: &str| -> Result<Vec<Option<f64>>, FrameError> {
        let c = g
            .column(name)
            .and_then(|c| c.cast(&polars::prelude::DataType::Float64))
            .map_err(|e| FrameError::Result(e.to_string()))?;
        let v = c
            .f64()
            .map_err(|e| FrameError::Result(e.to_string()))?
            .iter()
            .collect();
        Ok(v)
    };
    let keys = col("payment_type")?;
    let total = col("total_amount")?;
    let dist = col("trip_distance")?;
    let means = keys
        .iter()
        .zip(total.iter().zip(&dist))
        .map(|(k, (t, d))| {
            (
                k.unwrap_or(f64::NAN) as i64,
                t.unwrap_or(f64::NAN),
                d.unwrap_or(f64::NAN),
            )
        })
        .collect();
    Ok(TaxiOutcome {
        npartitions: df.npartitions(),
        rows,
        read_s: (t1 - t0).as_secs_f64(),
        len_s: (t2 - t1).as_secs_f64(),
        groupby_s: (t3 - t2).as_secs_f64(),
        means,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_look_like_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taxi.csv");
        let bytes = write_taxi_csv(&path, 20_000, 42).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len() as u64, bytes);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 20_000);
        // The reference's 5,000,000 rows are 234,189,629 bytes: 46.8 bytes a row.
        let per_row = bytes as f64 / 20_000.0;
        assert!((45.5..48.0).contains(&per_row), "{per_row} bytes per row");
        let card = rows.iter().filter(|r| r[4] == "1").count() as f64 / 20_000.0;
        assert!(
            (0.60..0.64).contains(&card),
            "share of card payments {card}"
        );
        for r in &rows {
            assert_eq!(r.len(), 8);
            assert!(r[1].starts_with("2015-01-") && r[1].len() == 19, "{}", r[1]);
            for f in [3, 5, 6, 7] {
                assert_eq!(r[f].split('.').nth(1).map(str::len), Some(2), "{}", r[f]);
            }
            if r[4] != "1" {
                assert_eq!(r[6], "0.00");
            }
        }
        // Seeded: the same seed gives the same file.
        let again = dir.path().join("again.csv");
        write_taxi_csv(&again, 20_000, 42).unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), text.as_bytes());
    }
}
