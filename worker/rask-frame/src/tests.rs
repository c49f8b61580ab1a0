//! Whole graphs of `frame.*` tasks, built by the public API and run in this process through
//! [`Registry::compute_local`] with [`family()`] registered: what a cluster would compute, without
//! one. (Clusters are the `rask` crate's integration tests.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::{
    CsvReadOptions, DataFrame as PlFrame, DataType, Field, ParquetWriter, SerReader,
};
use rask_client::delayed::{Delayed, graph_of};
use rask_core::function::decode_payload;
use rask_core::{Data, KernelError, KernelTask, Key, Registry};

use super::*;

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(family()).unwrap();
    r
}

/// The values of `roots`, their graph run in this thread.
fn run<R: Data>(roots: &[Delayed<R>]) -> Result<Vec<R>, (Key, KernelError)> {
    let done = registry().compute_local(&graph_of(roots), &[])?;
    Ok(roots
        .iter()
        .map(|d| done[d.key()].decode::<R>().unwrap())
        .collect())
}

/// `df.compute(client)` without a client.
fn compute(df: &DataFrame) -> Result<PlFrame, (Key, KernelError)> {
    Ok(concat(run(&df.partitions())?, &df.schema).unwrap())
}

/// `df.len(client)` without a client.
fn len(df: &DataFrame) -> Result<u64, (Key, KernelError)> {
    Ok(run(&[df.len_task()])?[0])
}

/// `rows` rows of `k;s;x;n` (some `k` and `x` empty: nulls), fields separated by `sep`.
fn write_csv(path: &Path, rows: u64, sep: char) {
    let mut out = format!("k{sep}s{sep}x{sep}n\n");
    for i in 0..rows {
        let k = if i % 11 == 3 {
            String::new()
        } else {
            (i * 7 % 5).to_string()
        };
        let s = ["red", "green", "blue"][(i % 3) as usize];
        let x = if i % 9 == 4 {
            String::new()
        } else {
            format!("{}.{:02}", (i * 13 % 200) as i64 - 100, i % 100)
        };
        out.push_str(&format!("{k}{sep}{s}{sep}{x}{sep}{}\n", i as i64 - 50));
    }
    std::fs::write(path, out).unwrap();
}

/// The file read by Polars in one go, with the types `write_csv` means.
fn polars_read(path: &Path, sep: u8) -> PlFrame {
    let schema = polars::prelude::Schema::from_iter([
        Field::new("k".into(), DataType::Int64),
        Field::new("s".into(), DataType::String),
        Field::new("x".into(), DataType::Float64),
        Field::new("n".into(), DataType::Int64),
    ]);
    CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .map_parse_options(|p| p.with_separator(sep))
        .try_into_reader_with_file_path(Some(path.to_owned()))
        .unwrap()
        .finish()
        .unwrap()
}

fn options(blocksize: u64, sep: u8) -> ReadCsvOptions {
    ReadCsvOptions {
        blocksize: Some(blocksize),
        sep,
        ..ReadCsvOptions::default()
    }
}

fn f64s(df: &PlFrame, name: &str) -> Vec<Option<f64>> {
    df.column(name)
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn read_csv_and_a_groupby_mean_match_polars() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    write_csv(&path, 3000, ',');
    let df = read_csv(path.to_str().unwrap(), &options(2_000, b',')).unwrap();
    assert!(df.npartitions() > 20, "{} partitions", df.npartitions());
    let whole = polars_read(&path, b',');
    assert!(compute(&df).unwrap().equals_missing(&whole));
    assert_eq!(len(&df).unwrap(), 3000);

    // A tree of combines three deep, against Polars' own groupby (null keys dropped, as
    // pandas and Dask do).
    let means = df
        .groupby(&["k"])
        .unwrap()
        .split_every(3)
        .agg(&[("x", Agg::Mean)])
        .unwrap();
    let got = compute(&means).unwrap();
    let keyed = whole
        .filter(&whole.column("k").unwrap().is_not_null())
        .unwrap();
    #[allow(deprecated)]
    let want = keyed
        .group_by(["k"])
        .unwrap()
        .select(["x"])
        .mean()
        .unwrap()
        .sort(["k"], Default::default())
        .unwrap();
    assert_eq!(got.column("k").unwrap(), want.column("k").unwrap());
    for (g, w) in f64s(&got, "x").into_iter().zip(f64s(&want, "x_mean")) {
        let (g, w) = (g.unwrap(), w.unwrap());
        assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "{g} vs {w}");
    }
    assert_eq!(means.columns(), ["k", "x"]);
}

#[test]
fn filters_selects_and_separators_run_in_the_partition_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tsv");
    write_csv(&path, 500, '\t');
    let df = read_csv(path.to_str().unwrap(), &options(1_000, b'\t')).unwrap();
    let whole = polars_read(&path, b'\t');
    let kept = df.filter(col("x").gt(10).and(col("s").ne("red"))).unwrap();
    let want = whole
        .column("x")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .zip(whole.column("s").unwrap().str().unwrap().iter())
        .filter(|(x, s)| x.is_some_and(|x| x > 10.0) && *s != Some("red"))
        .count() as u64;
    assert!(want > 50, "{want}");
    assert_eq!(len(&kept).unwrap(), want);
    let picked = compute(&kept.select(&["n", "k"]).unwrap()).unwrap();
    assert_eq!(picked.get_column_names(), ["n", "k"]);
    assert_eq!(picked.height() as u64, want);
    // A computed partition through more steps: `frame.apply` after the groupby's root.
    let sums = df
        .groupby(&["s"])
        .unwrap()
        .agg(&[("n", Agg::Sum)])
        .unwrap()
        .filter(col("s").ne("green"))
        .unwrap();
    let got = compute(&sums).unwrap();
    let names: Vec<_> = got.column("s").unwrap().str().unwrap().iter().collect();
    assert_eq!(names, [Some("blue"), Some("red")]);
    assert_eq!(len(&sums).unwrap(), 2);
}

#[test]
fn tasks_carry_typed_descriptors_that_the_worker_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    write_csv(&path, 100, ';');
    let df = read_csv(path.to_str().unwrap(), &options(1_000, b';')).unwrap();
    let graph = df.len_task().graph();
    let reads = &graph[..graph.len() - 1];
    assert_eq!(reads.len(), df.npartitions());
    let total = &graph[graph.len() - 1];
    assert_eq!(total.func.as_str(), "frame.sum");
    assert_eq!(
        total.inputs,
        reads.iter().map(|t| t.key.clone()).collect::<Vec<_>>()
    );
    for (i, t) in reads.iter().enumerate() {
        assert_eq!(t.func.as_str(), "frame.read_csv");
        assert_eq!(t.key.prefix(), "frame_read_csv");
        assert!(t.inputs.is_empty());
        let task: FrameTask = decode_payload(t.func.as_str(), &t.payload).unwrap();
        let FrameTask::ReadCsv {
            block,
            sep,
            schema,
            plan,
        } = task
        else {
            panic!("{task:?}")
        };
        assert_eq!(
            (block.path.as_path(), block.start),
            (path.as_path(), i as u64 * 1_000)
        );
        assert_eq!(sep, b';');
        assert_eq!(&schema, df.dtypes());
        assert!(plan.is_len_only());
    }
    let FrameTask::Sum { counts } = decode_payload(total.func.as_str(), &total.payload).unwrap()
    else {
        panic!("not a sum")
    };
    assert_eq!(counts.len(), reads.len());
    // Every function a graph names is one the family registers.
    for t in &graph {
        assert!(FrameTask::FUNCTIONS.contains(&t.func.as_str()));
    }
}

#[test]
fn a_malformed_row_fails_its_task_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    let mut text = String::from("k,s,x,n\n");
    for i in 0..300 {
        text.push_str(&format!("{},a,{i}.5,{i}\n", i % 3));
    }
    let bad_at = text.len();
    text.push_str("1,a,twelve,5\n1,b,2.0,6\n");
    std::fs::write(&path, &text).unwrap();
    let df = read_csv(
        path.to_str().unwrap(),
        &ReadCsvOptions {
            blocksize: Some(1_000),
            // Types from the first rows only, so the bad row is data.
            sample: 500,
            ..ReadCsvOptions::default()
        },
    )
    .unwrap();
    let g = df
        .groupby(&["k"])
        .unwrap()
        .agg(&[("x", Agg::Mean)])
        .unwrap();
    let (key, e) = compute(&g).unwrap_err();
    assert_eq!(key.prefix(), "frame_read_csv");
    assert!(matches!(e, KernelError::Failed(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("bad.csv: line 302"), "{e}");
    assert!(e.contains(&format!("byte offset {bad_at}")), "{e}");
    assert!(
        e.contains("column \"x\": \"twelve\" is not a float64"),
        "{e}"
    );
    // `len` does not parse values: it counts the rows.
    assert_eq!(len(&df).unwrap(), 302);

    // A short row; then the file removed before its tasks run.
    let short = dir.path().join("short.csv");
    std::fs::write(&short, "k,s,x,n\n1,a,2.5,3\n2,b,4.5\n").unwrap();
    let df = read_csv(short.to_str().unwrap(), &ReadCsvOptions::default()).unwrap();
    let e = compute(&df).unwrap_err().1.to_string();
    assert!(
        e.contains("short.csv: line 3") && e.contains("column \"n\" is missing"),
        "{e}"
    );
    std::fs::remove_file(&short).unwrap();
    let e = len(&df).unwrap_err().1.to_string();
    assert!(e.starts_with("opening ") && e.contains("short.csv"), "{e}");
}

#[test]
fn head_is_a_step_of_each_partition_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    write_csv(&path, 200, ',');
    let df = read_csv(path.to_str().unwrap(), &options(300, b','))
        .unwrap()
        .select(&["n", "s"])
        .unwrap();
    let whole = polars_read(&path, b',').select(["n", "s"]).unwrap();
    // What `head(n)` computes for each partition in turn: its first rows, after the select.
    let first = df.partition(0).tasks(Some(Op::Head(5)), Sink::Frame);
    let [p0]: [FramePart; 1] = run(&first).unwrap().try_into().unwrap();
    assert!(p0.frame().equals_missing(&whole.head(Some(5))));
    let rows0 = compute(&df.partition(0)).unwrap().height();
    let second = df.partition(1).tasks(Some(Op::Head(3)), Sink::Frame);
    let [p1]: [FramePart; 1] = run(&second).unwrap().try_into().unwrap();
    assert!(p1.frame().equals_missing(&whole.slice(rows0 as i64, 3)));
}

#[test]
fn to_csv_and_read_parquet_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    write_csv(&path, 400, ',');
    let whole = polars_read(&path, b',');
    let df = read_csv(path.to_str().unwrap(), &options(4_000, b',')).unwrap();
    let out = dir.path().join("out");
    let (paths, tasks) = df.write_tasks(&out, "csv", Sink::Csv).unwrap();
    assert_eq!(paths.len(), df.npartitions());
    let rows: u64 = run(&tasks).unwrap().iter().sum();
    assert_eq!(rows, 400);
    let back = read_csv(
        &format!("{}/part-*.csv", out.display()),
        &ReadCsvOptions::default(),
    )
    .unwrap();
    assert!(compute(&back).unwrap().equals_missing(&whole));

    // One Parquet file of many row groups, split into partitions of a few each.
    let pq = dir.path().join("t.parquet");
    let mut one = whole.clone();
    ParquetWriter::new(std::fs::File::create(&pq).unwrap())
        .with_row_group_size(Some(50))
        .finish(&mut one)
        .unwrap();
    let split = read_parquet(
        pq.to_str().unwrap(),
        &ReadParquetOptions {
            blocksize: Some(1_000),
            ..ReadParquetOptions::default()
        },
    )
    .unwrap();
    assert!(
        split.npartitions() > 2,
        "{} partitions",
        split.npartitions()
    );
    assert_eq!(len(&split).unwrap(), 400);
    assert!(compute(&split).unwrap().equals_missing(&whole));
    let some = read_parquet(
        pq.to_str().unwrap(),
        &ReadParquetOptions {
            columns: Some(vec!["n".into(), "k".into()]),
            ..ReadParquetOptions::default()
        },
    )
    .unwrap();
    let got = compute(&some.filter(col("k").eq(2)).unwrap()).unwrap();
    assert_eq!(got.get_column_names(), ["n", "k"]);
    assert!(
        got.column("k")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .all(|k| k == Some(2))
    );

    // A directory that cannot travel in a task is refused before any task is built.
    use std::os::unix::ffi::OsStrExt;
    let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"out\xff"));
    let e = df.write_tasks(&odd, "csv", Sink::Csv).unwrap_err();
    assert!(matches!(e, FrameError::NonUtf8Path(_)), "{e}");
}
