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
    let paths = part_paths(&out, "csv", df.npartitions());
    let tasks = df.write_tasks(&paths, Sink::Csv).unwrap();
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
    let e = df
        .write_tasks(&part_paths(&odd, "csv", df.npartitions()), Sink::Csv)
        .unwrap_err();
    assert!(matches!(e, FrameError::NonUtf8Path(_)), "{e}");
    // One path per partition, or none is written.
    let e = df.write_tasks(&paths[1..], Sink::Csv).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "{} paths given for {} partitions",
            paths.len() - 1,
            paths.len()
        )),
        "{e}"
    );
}

#[test]
fn assign_runs_in_the_partition_tasks_and_feeds_filters_and_groupbys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    write_csv(&path, 500, ',');
    let whole = polars_read(&path, b',');
    let df = read_csv(path.to_str().unwrap(), &options(3_000, b',')).unwrap();
    assert!(df.npartitions() > 2);
    let y = NumExpr::col("x") * NumExpr::lit(2) + NumExpr::col("n");
    let with_y = df.assign(&[("y", y), ("n", -NumExpr::col("n"))]).unwrap();
    assert_eq!(with_y.columns(), ["k", "s", "x", "n", "y"]);
    assert_eq!(with_y.dtypes()[3].1, DType::Int64);
    assert_eq!(with_y.dtypes()[4].1, DType::Float64);

    let got = compute(
        &with_y
            .filter(col("y").gt(0.0))
            .unwrap()
            .select(&["n", "y"])
            .unwrap(),
    )
    .unwrap();
    let x = f64s(&whole, "x");
    let n: Vec<i64> = whole
        .column("n")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let expected: Vec<(i64, f64)> = x
        .iter()
        .zip(&n)
        .filter_map(|(x, n)| x.map(|x| (-n, x * 2.0 + *n as f64)))
        .filter(|(_, y)| *y > 0.0)
        .collect();
    let got_n: Vec<i64> = got
        .column("n")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let got_y: Vec<f64> = f64s(&got, "y").into_iter().map(|v| v.unwrap()).collect();
    assert_eq!(got_n, expected.iter().map(|e| e.0).collect::<Vec<_>>());
    assert_eq!(got_y, expected.iter().map(|e| e.1).collect::<Vec<_>>());

    // A groupby of a computed column: the sum of 1s per key is the group's size.
    let sizes = with_y
        .assign(&[("one", NumExpr::lit(1))])
        .unwrap()
        .groupby(&["s"])
        .unwrap()
        .agg(&[("one", Agg::Sum)])
        .unwrap();
    let got = compute(&sizes).unwrap();
    let counts: Vec<i64> = got
        .column("one")
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    // s cycles red, green, blue: sorted blue, green, red.
    assert_eq!(counts, [166, 167, 167]);

    // Refused by name before any task: a string in arithmetic, a missing column, a repeat.
    let e = df
        .assign(&[("z", NumExpr::col("s") * NumExpr::lit(2))])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("assign \"z\" = (s * 2): cannot compute with column \"s\" of type string"),
        "{e}"
    );
    let e = df.assign(&[("z", NumExpr::col("nope"))]).unwrap_err();
    assert!(e.to_string().contains("no column \"nope\""), "{e}");
    let e = df
        .assign(&[("z", NumExpr::lit(1)), ("z", NumExpr::lit(2))])
        .unwrap_err();
    assert!(e.to_string().contains("names column \"z\" twice"), "{e}");
    assert!(df.assign(&[]).is_err());
}

#[test]
fn a_computed_frame_encodes_as_an_arrow_ipc_stream() {
    let df = polars::prelude::df!(
        "k" => [Some(1i64), None, Some(3)],
        "s" => ["a", "b", "c"],
        "x" => [0.5f64, 1.5, -2.5],
        "b" => [true, false, true],
    )
    .unwrap();
    let bytes = arrow_ipc_stream(&df).unwrap();
    // A stream starts with a message (continuation marker), not the file format's magic.
    assert_eq!(&bytes[..4], &[0xff, 0xff, 0xff, 0xff]);
    let back = polars::prelude::IpcStreamReader::new(std::io::Cursor::new(bytes))
        .finish()
        .unwrap();
    assert!(back.equals_missing(&df), "{back}");
}

/// `from_pickled`: Python tasks' Arrow IPC, given here as their results (what `pickle.dumps` of
/// the `bytes` writes), run through filters, a groupby and `len` as any other partitions.
#[test]
fn from_pickled_partitions_run_the_same_steps() {
    use bytes::Bytes;
    use polars::prelude::{IpcStreamWriter, SerWriter};
    use rask_client::delayed::Deps;
    use rask_core::{Encoded, FuncName, Pickled};

    let source = |i: usize| -> Delayed<Pickled> {
        Delayed::from_parts(
            Key::new(format!("frame_part-{i}")),
            FuncName::new("python.call"),
            Bytes::new(),
            Deps::new(),
        )
    };
    let pickle_of = |mut df: PlFrame| -> Encoded {
        let mut ipc = Vec::new();
        IpcStreamWriter::new(&mut ipc).finish(&mut df).unwrap();
        let mut p = vec![0x80, 5, 0x8e];
        p.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
        p.extend_from_slice(&ipc);
        p.extend_from_slice(b"\x94.");
        Pickled(Bytes::from(p)).encode()
    };
    let parts = [source(0), source(1)];
    let given = vec![
        (
            parts[0].key().clone(),
            pickle_of(polars::df!("k" => ["a", "b"], "x" => [1.0f64, 2.0]).unwrap()),
        ),
        (
            parts[1].key().clone(),
            pickle_of(polars::df!("k" => ["a", "c"], "x" => [3.0f64, -1.0]).unwrap()),
        ),
    ];
    let schema: Schema = vec![("k".into(), DType::Str), ("x".into(), DType::Float64)];
    let df = from_pickled(&parts, schema.clone()).unwrap();
    assert_eq!(df.npartitions(), 2);
    let run_given = |roots: &[Delayed<FramePart>]| -> Result<Vec<FramePart>, (Key, KernelError)> {
        let graph: Vec<_> = graph_of(roots)
            .into_iter()
            .filter(|t| !given.iter().any(|(k, _)| *k == t.key))
            .collect();
        let done = registry().compute_local(&graph, &given)?;
        Ok(roots
            .iter()
            .map(|d| FramePart::decode(&done[d.key()]).unwrap())
            .collect())
    };
    let means = df
        .filter(col("x").gt(0.0))
        .unwrap()
        .groupby(&["k"])
        .unwrap()
        .agg(&[("x", Agg::Mean)])
        .unwrap();
    let got = concat(run_given(&means.partitions()).unwrap(), &means.schema).unwrap();
    assert_eq!(
        got,
        polars::df!("k" => ["a", "b"], "x" => [2.0f64, 2.0]).unwrap()
    );
    let all = concat(run_given(&df.partitions()).unwrap(), &df.schema).unwrap();
    assert_eq!(all.height(), 4);

    // A partition whose columns differ is named; an empty list or a doubled column is refused.
    let wrong = vec![(
        parts[0].key().clone(),
        pickle_of(polars::df!("k" => ["a"], "y" => [1.0f64]).unwrap()),
    )];
    let graph: Vec<_> = graph_of(&df.partition(0).partitions())
        .into_iter()
        .filter(|t| t.key != *parts[0].key())
        .collect();
    let (_, e) = registry().compute_local(&graph, &wrong).unwrap_err();
    assert!(e.to_string().contains("from_delayed partition 0: its columns (k: str, y: f64) are not the frame's (k: string, x: float64)"), "{e}");
    assert!(from_pickled(&[], schema.clone()).is_err());
    let doubled = vec![("k".into(), DType::Str), ("k".into(), DType::Float64)];
    let e = from_pickled(&parts, doubled).unwrap_err();
    assert_eq!(e.to_string(), "from_delayed: column \"k\" appears twice");
}
