//! Partitioned dataframes on clusters of worker processes, checked against one Polars read of
//! the whole data; bad input; a worker killed in the middle of a groupby.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use polars::prelude::{CsvReadOptions, DataFrame as PlFrame, DataType, SerReader};
use rask::client::Client;
use rask::frame::{self, Agg, FrameError, ReadCsvOptions, col, read_csv};

use crate::{eventually, process_cluster};

/// A small seeded generator (the tests need no RNG crate).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Writes `rows` rows of `k,s,x,n` (k and x sometimes empty: null) to `path`.
fn write_csv(path: &Path, rows: u64, keys: u64, rng: &mut Lcg) {
    write_csv_sep(path, rows, keys, b',', rng)
}

/// [`write_csv`] with fields separated by `sep`.
fn write_csv_sep(path: &Path, rows: u64, keys: u64, sep: u8, rng: &mut Lcg) {
    let sep = char::from(sep);
    let mut out = format!("k{sep}s{sep}x{sep}n\n");
    for _ in 0..rows {
        let k = if rng.below(10) == 0 {
            String::new()
        } else {
            rng.below(keys).to_string()
        };
        let s = ["red", "green", "blue"][rng.below(3) as usize];
        let x = if rng.below(8) == 0 {
            String::new()
        } else {
            format!("{}.{:02}", rng.below(200) as i64 - 100, rng.below(100))
        };
        let n = rng.below(1000) as i64 - 500;
        out.push_str(&format!("{k}{sep}{s}{sep}{x}{sep}{n}\n"));
    }
    std::fs::write(path, out).unwrap();
}

/// The whole data read by Polars in one go, files in glob order.
fn reference(files: &[PathBuf]) -> PlFrame {
    reference_sep(files, b',')
}

/// [`reference`] for fields separated by `sep`.
fn reference_sep(files: &[PathBuf], sep: u8) -> PlFrame {
    let mut all: Option<PlFrame> = None;
    for f in files {
        let schema = polars::prelude::Schema::from_iter([
            polars::prelude::Field::new("k".into(), DataType::Int64),
            polars::prelude::Field::new("s".into(), DataType::String),
            polars::prelude::Field::new("x".into(), DataType::Float64),
            polars::prelude::Field::new("n".into(), DataType::Int64),
        ]);
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_schema(Some(Arc::new(schema)))
            .map_parse_options(|p| p.with_separator(sep))
            .try_into_reader_with_file_path(Some(f.clone()))
            .unwrap()
            .finish()
            .unwrap();
        match &mut all {
            None => all = Some(df),
            Some(a) => {
                a.vstack_mut(&df).unwrap();
            }
        }
    }
    all.unwrap()
}

/// Per non-null `k`: (mean x, count x, sum n, min n, max x), computed row by row.
type Expected = BTreeMap<i64, (Option<f64>, i64, i64, i64, Option<f64>)>;

fn expected_groups(df: &PlFrame, x_gt: Option<f64>) -> Expected {
    let k = df.column("k").unwrap().i64().unwrap().clone();
    let x = df.column("x").unwrap().f64().unwrap().clone();
    let n = df.column("n").unwrap().i64().unwrap().clone();
    let mut acc: BTreeMap<i64, (f64, i64, i64, i64, Option<f64>)> = BTreeMap::new();
    for i in 0..df.height() {
        let (Some(k), xv, Some(nv)) = (k.get(i), x.get(i), n.get(i)) else {
            continue;
        };
        if let Some(t) = x_gt
            && !xv.is_some_and(|v| v > t)
        {
            continue;
        }
        let e = acc.entry(k).or_insert((0.0, 0, 0, i64::MAX, None));
        if let Some(v) = xv {
            e.0 += v;
            e.1 += 1;
            e.4 = Some(e.4.map_or(v, |m: f64| m.max(v)));
        }
        e.2 += nv;
        e.3 = e.3.min(nv);
    }
    acc.into_iter()
        .map(|(k, (sx, cx, sn, mn, mx))| {
            let mean = (cx > 0).then(|| sx / cx as f64);
            (k, (mean, cx, sn, mn, mx))
        })
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * (1.0 + b.abs()),
        (None, None) => true,
        _ => false,
    }
}

fn check_groups(got: &PlFrame, want: &Expected, case: &str) {
    let keys: Vec<i64> = got
        .column("k")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(
        keys,
        want.keys().copied().collect::<Vec<_>>(),
        "{case}: keys"
    );
    let f = |name: &str| -> Vec<Option<f64>> {
        got.column(name)
            .unwrap()
            .cast(&DataType::Float64)
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .collect()
    };
    let (mean, count, sum, min, max) = (
        f("x_mean"),
        f("x_count"),
        f("n_sum"),
        f("n_min"),
        f("x_max"),
    );
    for (i, (k, (m, c, s, mn, mx))) in want.iter().enumerate() {
        assert!(
            close(mean[i], *m),
            "{case}: mean of {k}: {:?} vs {m:?}",
            mean[i]
        );
        assert_eq!(count[i], Some(*c as f64), "{case}: count of {k}");
        assert_eq!(sum[i], Some(*s as f64), "{case}: sum of {k}");
        assert_eq!(min[i], Some(*mn as f64), "{case}: min of {k}");
        assert!(close(max[i], *mx), "{case}: max of {k}");
    }
}

async fn groupby_all(df: &frame::DataFrame, client: &Client, split_every: usize) -> PlFrame {
    df.groupby(&["k"])
        .unwrap()
        .split_every(split_every)
        .agg(&[
            ("x", Agg::Mean),
            ("x", Agg::Count),
            ("n", Agg::Sum),
            ("n", Agg::Min),
            ("x", Agg::Max),
        ])
        .unwrap()
        .compute(client)
        .await
        .unwrap()
}

#[tokio::test]
async fn results_match_one_polars_read_for_many_shapes_and_blocksizes() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let mut rng = Lcg(2026);
    for case_no in 0..16 {
        let dir = tempfile::tempdir().unwrap();
        // Dask's `sep`: commas mostly, and the other separators people use.
        let sep = [b',', b',', b'\t', b';', b'|'][rng.below(5) as usize];
        let nfiles = 1 + rng.below(3);
        let mut files = Vec::new();
        for f in 0..nfiles {
            let path = dir.path().join(format!("part{f}.csv"));
            // Later files may be empty (header only): empty partitions.
            let rows = if f > 0 && rng.below(3) == 0 {
                0
            } else {
                // The first file is the type sample: enough rows to show every type.
                20 + rng.below(400)
            };
            write_csv_sep(&path, rows, 1 + rng.below(7), sep, &mut rng);
            files.push(path);
        }
        let size: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        // From blocks smaller than a line (partitions with no line) to one block per file.
        let blocksize = match rng.below(4) {
            0 => None,
            1 => Some(1 + rng.below(24)),
            _ => Some(16 + rng.below(size / nfiles + 16)),
        };
        let case = format!(
            "case {case_no}: {nfiles} files, {size} bytes, blocksize {blocksize:?}, sep {:?}",
            char::from(sep)
        );
        let pattern = format!("{}/part*.csv", dir.path().display());
        let df = read_csv(
            &pattern,
            &ReadCsvOptions {
                blocksize,
                sep,
                ..ReadCsvOptions::default()
            },
        )
        .unwrap();
        let whole = reference_sep(&files, sep);
        assert_eq!(df.columns(), ["k", "s", "x", "n"], "{case}");
        assert_eq!(
            df.len(&client).await.unwrap(),
            whole.height() as u64,
            "{case}"
        );
        let computed = df.compute(&client).await.unwrap();
        assert!(computed.equals_missing(&whole), "{case}: compute()");

        let split_every = 2 + rng.below(7) as usize;
        check_groups(
            &groupby_all(&df, &client, split_every).await,
            &expected_groups(&whole, None),
            &case,
        );
        let filtered = df.filter(col("x").gt(0.5)).unwrap();
        check_groups(
            &groupby_all(&filtered, &client, split_every).await,
            &expected_groups(&whole, Some(0.5)),
            &format!("{case}, x > 0.5"),
        );
        let want_filtered = whole
            .column("x")
            .unwrap()
            .f64()
            .unwrap()
            .iter()
            .filter(|v| v.is_some_and(|v| v > 0.5))
            .count() as u64;
        assert_eq!(
            filtered.len(&client).await.unwrap(),
            want_filtered,
            "{case}"
        );

        let head = df
            .select(&["n", "k"])
            .unwrap()
            .head(5, &client)
            .await
            .unwrap();
        let want_head = whole.select(["n", "k"]).unwrap().head(Some(5));
        assert!(head.equals_missing(&want_head), "{case}: head");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_taxi_job_matches_polars_and_writes_partitions() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taxi.csv");
    frame::taxi::write_taxi_csv(&path, 30_000, 7).unwrap();
    let options = ReadCsvOptions {
        blocksize: Some(200_000),
        ..ReadCsvOptions::default()
    };
    let r = frame::taxi::taxi_groupby(&client, path.to_str().unwrap(), &options)
        .await
        .unwrap();
    let whole = CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.clone()))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(r.rows, 30_000);
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(r.npartitions as u64, size.div_ceil(200_000));
    let key = whole.column("payment_type").unwrap().i64().unwrap().clone();
    let total = whole.column("total_amount").unwrap().f64().unwrap().clone();
    let mut sums: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for i in 0..whole.height() {
        let e = sums.entry(key.get(i).unwrap()).or_default();
        e.0 += total.get(i).unwrap();
        e.1 += 1.0;
    }
    assert_eq!(r.means.len(), sums.len());
    for ((k, mean, _), (rk, (s, c))) in r.means.iter().zip(&sums) {
        assert_eq!(k, rk);
        assert!(close(Some(*mean), Some(s / c)), "{k}: {mean} vs {}", s / c);
    }

    // to_csv / to_parquet: one file per partition, the same rows as the input.
    let df = read_csv(
        path.to_str().unwrap(),
        &ReadCsvOptions {
            blocksize: Some(300_000),
            ..ReadCsvOptions::default()
        },
    )
    .unwrap()
    .filter(col("payment_type").eq(2))
    .unwrap();
    let out = dir.path().join("out");
    let written = df.to_csv(&out, &client).await.unwrap();
    assert_eq!(written.len(), df.npartitions());
    let back = read_csv(
        &format!("{}/part-*.csv", out.display()),
        &ReadCsvOptions::default(),
    )
    .unwrap();
    let want = key.iter().filter(|k| *k == Some(2)).count() as u64;
    assert_eq!(back.len(&client).await.unwrap(), want);
    let pq = df
        .to_parquet(&dir.path().join("pq"), &client)
        .await
        .unwrap();
    let mut rows = 0;
    for p in &pq {
        let f = std::fs::File::open(p).unwrap();
        rows += polars::prelude::ParquetReader::new(f)
            .finish()
            .unwrap()
            .height();
    }
    assert_eq!(rows as u64, want);
    cluster.shutdown().await;
}

#[tokio::test]
async fn read_parquet_gives_what_read_csv_gives() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(11);
    let mut files = Vec::new();
    for f in 0..3 {
        let path = dir.path().join(format!("part{f}.csv"));
        write_csv(&path, 200 + rng.below(300), 5, &mut rng);
        files.push(path);
    }
    let pattern = format!("{}/part*.csv", dir.path().display());
    let from_csv = read_csv(&pattern, &ReadCsvOptions::default()).unwrap();
    let pq = dir.path().join("pq");
    from_csv.to_parquet(&pq, &client).await.unwrap();
    let all = frame::ReadParquetOptions::default();
    let df = frame::read_parquet(&format!("{}/*.parquet", pq.display()), &all).unwrap();
    assert_eq!(df.npartitions(), 3);
    assert_eq!(df.columns(), ["k", "s", "x", "n"]);
    assert_eq!(df.dtypes(), from_csv.dtypes());
    let whole = reference(&files);
    assert_eq!(df.len(&client).await.unwrap(), whole.height() as u64);
    assert!(df.compute(&client).await.unwrap().equals_missing(&whole));
    check_groups(
        &groupby_all(&df, &client, 2).await,
        &expected_groups(&whole, None),
        "parquet",
    );
    let filtered = df.filter(col("x").gt(0.5)).unwrap();
    check_groups(
        &groupby_all(&filtered, &client, 2).await,
        &expected_groups(&whole, Some(0.5)),
        "parquet, x > 0.5",
    );
    // One file of many row groups, split into partitions of a few row groups each.
    let mut one = whole.clone();
    let big = dir.path().join("rowgroups.parquet");
    polars::prelude::ParquetWriter::new(std::fs::File::create(&big).unwrap())
        .with_row_group_size(Some(40))
        .finish(&mut one)
        .unwrap();
    let by_blocksize = |blocksize| {
        let options = frame::ReadParquetOptions {
            blocksize,
            ..frame::ReadParquetOptions::default()
        };
        frame::read_parquet(big.to_str().unwrap(), &options)
    };
    let split = by_blocksize(Some(1_000)).unwrap();
    assert!(
        split.npartitions() > 3,
        "{} partitions",
        split.npartitions()
    );
    assert_eq!(split.len(&client).await.unwrap(), whole.height() as u64);
    assert!(split.compute(&client).await.unwrap().equals_missing(&whole));
    check_groups(
        &groupby_all(&split, &client, 3).await,
        &expected_groups(&whole, None),
        "parquet row groups",
    );
    let unsplit = by_blocksize(None).unwrap();
    assert_eq!(unsplit.npartitions(), 1);

    // Some columns, in the order asked.
    let cols = |c: &[&str]| frame::ReadParquetOptions {
        columns: Some(c.iter().map(|s| s.to_string()).collect()),
        ..frame::ReadParquetOptions::default()
    };
    let some =
        frame::read_parquet(&format!("{}/*.parquet", pq.display()), &cols(&["n", "k"])).unwrap();
    let head = some.head(5, &client).await.unwrap();
    assert!(head.equals_missing(&whole.select(["n", "k"]).unwrap().head(Some(5))));

    // Files whose columns differ; a column that is not there; nothing that matches.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::copy(pq.join("part-00000.parquet"), other.join("a.parquet")).unwrap();
    from_csv
        .select(&["k", "s"])
        .unwrap()
        .to_parquet(&dir.path().join("narrow"), &client)
        .await
        .unwrap();
    std::fs::copy(
        dir.path().join("narrow/part-00000.parquet"),
        other.join("b.parquet"),
    )
    .unwrap();
    let e = frame::read_parquet(&format!("{}/*.parquet", other.display()), &all)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("b.parquet: columns [k: int64, s: string] differ from"),
        "{e}"
    );
    let e = frame::read_parquet(&format!("{}/*.parquet", pq.display()), &cols(&["nope"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no column \"nope\" (columns: k, s, x, n)"),
        "{e}"
    );
    let none = format!("{}/missing-*.parquet", dir.path().display());
    assert!(matches!(
        frame::read_parquet(&none, &all).unwrap_err(),
        FrameError::NoFiles(_)
    ));
    let e = by_blocksize(Some(0)).unwrap_err();
    assert!(e.to_string().contains("bad blocksize"), "{e}");
    // A file that is gone by the time its task runs: the task's error names it.
    let gone = frame::read_parquet(&format!("{}/a.parquet", other.display()), &all).unwrap();
    std::fs::remove_file(other.join("a.parquet")).unwrap();
    let e = gone.compute(&client).await.unwrap_err().to_string();
    assert!(e.contains("a.parquet"), "{e}");
    cluster.shutdown().await;
}

/// `rask run taxi-groupby --path P [args]`: (exit success, stdout, stderr).
fn taxi_groupby_cli(path: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(crate::rask_bin())
        .args(["run", "taxi-groupby", "--json", "--path"])
        .arg(path)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_taxi_job_reads_tab_separated_files_with_sep() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("taxi.csv");
    frame::taxi::write_taxi_csv(&csv, 20_000, 3).unwrap();
    let tsv = dir.path().join("taxi.tsv");
    std::fs::write(
        &tsv,
        std::fs::read_to_string(&csv).unwrap().replace(',', "\t"),
    )
    .unwrap();
    let result = |stdout: &str| -> serde_json::Value {
        let line: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(line["ok"], true, "{line}");
        line["result"].clone()
    };

    let (ok, from_csv, err) = taxi_groupby_cli(&csv, &["--blocksize", "200kB"]);
    assert!(ok, "{err}");
    for sep in ["\\t", "tab", "\t"] {
        let (ok, from_tsv, err) = taxi_groupby_cli(&tsv, &["--blocksize", "200kB", "--sep", sep]);
        assert!(ok, "--sep {sep:?}: {err}");
        assert_eq!(result(&from_tsv), result(&from_csv), "--sep {sep:?}");
    }

    // Without --sep the header is one column: the error says which separator it looks like.
    let (ok, _, err) = taxi_groupby_cli(&tsv, &[]);
    assert!(!ok);
    assert!(err.contains("no column \"payment_type\""), "{err}");
    assert!(err.contains("looks separated by '\\t'"), "{err}");
    // Its workers and client then go away; that is not reported as a protocol error.
    assert!(!err.contains("malformed frame"), "{err}");
    // A separator that cannot be one fails before a cluster starts, naming the flag.
    let (ok, _, err) = taxi_groupby_cli(&tsv, &["--sep", ";;"]);
    assert!(!ok);
    assert!(
        err.contains("--sep: sep \";;\" cannot separate fields"),
        "{err}"
    );
    // A peer that exits is not reported as a protocol error.
    assert!(!err.contains("malformed frame"), "{err}");
}

#[tokio::test]
async fn bad_input_fails_with_errors_that_say_where() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A malformed row deep in the second block: file, line, byte offset and column.
    let mut text = String::from("k,s,x,n\n");
    for i in 0..2000 {
        text.push_str(&format!("{},a,{}.5,{i}\n", i % 3, i));
    }
    let bad_at = text.len();
    text.push_str("1,a,twelve,5\n");
    for i in 0..100 {
        text.push_str(&format!("1,b,{i}.0,{i}\n"));
    }
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, &text).unwrap();
    let df = read_csv(
        path.to_str().unwrap(),
        &ReadCsvOptions {
            blocksize: Some(20_000),
            // Types from the first rows only, as with a large file, so the bad row is data.
            sample: 4_000,
            ..ReadCsvOptions::default()
        },
    )
    .unwrap();
    let err = df
        .groupby(&["k"])
        .unwrap()
        .agg(&[("x", Agg::Mean)])
        .unwrap()
        .compute(&client)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.csv"), "{err}");
    assert!(err.contains("line 2002"), "{err}");
    assert!(err.contains(&format!("byte offset {bad_at}")), "{err}");
    assert!(err.contains("column \"x\""), "{err}");

    // A row with a field missing.
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "k,s,x,n\n1,a,2.5,3\n2,b,4.5\n").unwrap();
    let err = read_csv(short.to_str().unwrap(), &ReadCsvOptions::default())
        .unwrap()
        .compute(&client)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("short.csv") && err.contains("line 3"), "{err}");
    assert!(err.contains("column \"n\" is missing"), "{err}");

    // Nothing matches; a named file that does not exist; a bad pattern; a bad block size.
    let none = format!("{}/*.parquet", dir.path().display());
    let e = read_csv(&none, &ReadCsvOptions::default()).unwrap_err();
    assert!(matches!(e, FrameError::NoFiles(_)), "{e}");
    assert_eq!(e.to_string(), format!("no file matches {none:?}"));
    let missing = dir.path().join("missing.csv");
    let e = read_csv(missing.to_str().unwrap(), &ReadCsvOptions::default()).unwrap_err();
    assert!(e.to_string().contains("missing.csv"), "{e}");
    let e = read_csv("[", &ReadCsvOptions::default()).unwrap_err();
    assert!(e.to_string().starts_with("bad glob pattern"), "{e}");
    let zero = ReadCsvOptions {
        blocksize: Some(0),
        ..ReadCsvOptions::default()
    };
    let e = read_csv(path.to_str().unwrap(), &zero).unwrap_err();
    assert!(e.to_string().contains("bad blocksize"), "{e}");
    for (sep, why) in [
        (b'"', "it quotes fields"),
        (b'\n', "it ends lines"),
        (b'\r', "it ends lines"),
        (0xE9, "it is not an ASCII character"),
    ] {
        let options = ReadCsvOptions {
            sep,
            ..ReadCsvOptions::default()
        };
        let e = read_csv(path.to_str().unwrap(), &options)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot separate fields") && e.contains(why),
            "{e}"
        );
    }
    let e = frame::parse_blocksize("64 parsecs").unwrap_err();
    assert!(
        e.to_string().contains("bad blocksize \"64 parsecs\""),
        "{e}"
    );

    // Columns that do not exist, aggregations that do not fit.
    let e = df.select(&["k", "nope"]).unwrap_err().to_string();
    assert!(e.contains("no column \"nope\""), "{e}");
    let e = df
        .groupby(&["k"])
        .unwrap()
        .agg(&[("s", Agg::Sum)])
        .unwrap_err();
    assert!(e.to_string().contains("sum of column \"s\""), "{e}");
    let e = df.filter(col("s").gt(1)).unwrap_err();
    assert!(e.to_string().contains("column \"s\""), "{e}");

    // Files that change under us: a header that differs, a file gone by the time tasks run.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "k,s,y,n\n1,a,2,3\n").unwrap();
    let e = read_csv(
        &format!("{}/*.csv", dir.path().display()),
        &ReadCsvOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("header") && e.contains("other.csv"), "{e}");
    let gone = dir.path().join("gone.csv");
    std::fs::write(&gone, "k,s,x,n\n1,a,2.5,3\n").unwrap();
    let df = read_csv(gone.to_str().unwrap(), &ReadCsvOptions::default()).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let e = df.len(&client).await.unwrap_err().to_string();
    assert!(e.contains("gone.csv"), "{e}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn sigkill_of_a_worker_mid_groupby_still_gives_the_right_answer() {
    let mut cluster = process_cluster(3).await;
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let mut rng = Lcg(99);
    write_csv(&path, 60_000, 5, &mut rng);
    let df = read_csv(
        path.to_str().unwrap(),
        &ReadCsvOptions {
            blocksize: Some(8_000),
            ..ReadCsvOptions::default()
        },
    )
    .unwrap();
    let parts = df.npartitions();
    assert!(parts > 100, "{parts} partitions");
    let g = df
        .groupby(&["k"])
        .unwrap()
        .agg(&[
            ("x", Agg::Mean),
            ("x", Agg::Count),
            ("n", Agg::Sum),
            ("n", Agg::Min),
            ("x", Agg::Max),
        ])
        .unwrap();
    let futures = client.compute_many(&g.partitions());
    let handle = cluster.handle();
    let started = eventually(Duration::from_secs(60), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.tasks_computed_total >= (parts / 3) as u64)
            .unwrap_or(false)
    })
    .await;
    assert!(started, "the groupby made progress");
    let victim = cluster.worker_names()[1].clone();
    let snap = cluster.snapshot().await.unwrap();
    let held_before = snap
        .workers
        .iter()
        .find(|w| w.name == victim)
        .map(|w| w.keys)
        .unwrap_or(0);
    let computed_at_kill = snap.tasks_computed_total;
    cluster.kill_worker(&victim).await.unwrap();
    let values = tokio::time::timeout(Duration::from_secs(120), client.gather(&futures))
        .await
        .expect("finishes")
        .unwrap();
    let got = values.into_iter().next().expect("one root").into_frame();
    check_groups(
        &got,
        &expected_groups(&reference(&[path]), None),
        "after a kill",
    );
    let snap = cluster.snapshot().await.unwrap();
    assert_eq!(snap.workers.len(), 2);
    let tasks = rask::client::delayed::graph_of(&g.partitions()).len() as u64;
    assert!(
        snap.tasks_computed_total > tasks || held_before == 0,
        "the victim's {held_before} results were recomputed ({} runs of {tasks} tasks)",
        snap.tasks_computed_total
    );
    eprintln!(
        "killed at {computed_at_kill} of {tasks} tasks, holding {held_before}; {} runs in all",
        snap.tasks_computed_total
    );
    cluster.shutdown().await;
}
