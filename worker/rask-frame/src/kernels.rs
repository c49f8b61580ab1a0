//! The dataframe kernels: one serde enum, [`FrameTask`], whose variants are the `frame.*`
//! functions. The graph builders (`lib.rs`) make the values and the worker runs them, so both
//! sides agree on every argument by type. [`family`] registers them with a worker.
//!
//! | function | task | inputs | result |
//! |---|---|---|---|
//! | `frame.read_csv` | `ReadCsv { block, sep, schema, plan }` | none | the plan's sink |
//! | `frame.read_parquet` | `ReadParquet { path, rows, schema, plan }` | none | the plan's sink |
//! | `frame.apply` | `Apply { part, plan }` | a partition | the plan's sink |
//! | `frame.from_pickle` | `FromPickle { part, index, schema, plan }` | a pickled `bytes` of Arrow IPC | the plan's sink |
//! | `frame.combine` | `Combine { parts, spec, finish }` | partial aggregates | a partition |
//! | `frame.sum` | `Sum { counts }` | counts | their total (`u64`) |
//!
//! A plan is the partition's fused steps (select, filter, head, a groupby's partial aggregate)
//! and its sink: the frame (a [`FramePart`], format tag 2), or a count as a serde `u64` (tag 0):
//! its rows (`len`), or the rows written to a CSV or Parquet file (`to_csv`, `to_parquet`).
//! `rows` is a Parquet file's row range (`None`: all); `finish` makes the groupby's result from
//! the combined states (the root of the tree). A failure is a [`KernelError`] naming the file,
//! block, line, column or value that was wrong.

use std::fmt;
use std::path::{Path, PathBuf};

use polars::prelude::{CsvWriter, DataFrame, IpcStreamReader, ParquetWriter, SerReader, SerWriter};
use rask_core::{Data, Encoded, Family, Input, Inputs, KernelError, KernelTask, Pickled};
use serde::{Deserialize, Serialize};

use crate::FrameError;
use crate::csv::{count_block_rows, read_block_frame};
use crate::groupby::AggSpec;
use crate::parquet::{self, RowRange};
use crate::part::FramePart;
use crate::partition::{Block, check_sep};
use crate::plan::{Plan, Sink};
use crate::schema::{DType, Schema};

/// A dataframe task: built by the graph builders, run by [`run`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum FrameTask {
    /// One CSV block, fields separated by `sep`, read as `schema` and run through `plan`.
    ReadCsv {
        block: Block,
        sep: u8,
        schema: Schema,
        plan: Plan,
    },
    /// A Parquet file's `rows` (all when `None`), checked against `schema`, through `plan`.
    ReadParquet {
        path: PathBuf,
        rows: Option<RowRange>,
        schema: Schema,
        plan: Plan,
    },
    /// A computed partition through `plan`.
    Apply { part: Input<FramePart>, plan: Plan },
    /// One node of a groupby's tree: partial aggregates combined; with `finish`, the result.
    Combine {
        parts: Vec<Input<FramePart>>,
        spec: AggSpec,
        finish: bool,
    },
    /// The total of partitions' counts (`len`).
    Sum { counts: Vec<Input<u64>> },
    /// Partition `index` of `rask.dataframe.from_delayed`: a Python task's `bytes` (kept
    /// pickled) holding an Arrow IPC stream of `schema`, through `plan`. Last, so that the
    /// variants before it keep their numbers in the encoded payloads (postcard numbers them).
    FromPickle {
        part: Input<Pickled>,
        index: usize,
        schema: Schema,
        plan: Plan,
    },
}

impl KernelTask for FrameTask {
    const FUNCTIONS: &'static [&'static str] = &[
        "frame.read_csv",
        "frame.read_parquet",
        "frame.apply",
        "frame.combine",
        "frame.sum",
        "frame.from_pickle",
    ];

    fn func(&self) -> &'static str {
        match self {
            FrameTask::ReadCsv { .. } => "frame.read_csv",
            FrameTask::ReadParquet { .. } => "frame.read_parquet",
            FrameTask::Apply { .. } => "frame.apply",
            FrameTask::Combine { .. } => "frame.combine",
            FrameTask::Sum { .. } => "frame.sum",
            FrameTask::FromPickle { .. } => "frame.from_pickle",
        }
    }
}

/// The dataframe family (`frame`, this crate's version), for the program that builds a worker.
pub fn family() -> Family {
    Family::new("frame", env!("CARGO_PKG_VERSION")).kernels(run)
}

/// Runs one dataframe task on its inputs.
fn run(task: FrameTask, inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
    match task {
        FrameTask::ReadCsv {
            block,
            sep,
            schema,
            plan,
        } => read_csv(&block, sep, &schema, &plan),
        FrameTask::ReadParquet {
            path,
            rows,
            schema,
            plan,
        } => read_parquet(&path, rows, &schema, &plan),
        FrameTask::Apply { part, plan } => {
            let df = inputs.get(part)?.into_frame();
            finish(&plan, df, &"a computed partition")
        }
        FrameTask::Combine {
            parts,
            spec,
            finish,
        } => combine(&parts, &spec, finish, inputs),
        FrameTask::Sum { counts } => sum(&counts, inputs),
        FrameTask::FromPickle {
            part,
            index,
            schema,
            plan,
        } => {
            let what = format!("from_delayed partition {index}");
            let pickle = inputs.get(part)?;
            let ipc = pickle
                .bytes_object()
                .map_err(|e| KernelError::failed(format!("{what}: {e}")))?;
            let df = read_ipc_stream(ipc, &schema)
                .map_err(|e| KernelError::failed(format!("{what}: {e}")))?;
            finish(&plan, df, &what)
        }
    }
}

/// An Arrow IPC stream holding a frame of `schema` (names, order and types); malformed bytes
/// or another schema give an error saying what is wrong, never a panic (the IPC reader is
/// guarded, as for partitions).
fn read_ipc_stream(bytes: &[u8], schema: &Schema) -> Result<DataFrame, String> {
    let read = || IpcStreamReader::new(std::io::Cursor::new(bytes)).finish();
    let df = match std::panic::catch_unwind(read) {
        Ok(Ok(df)) => df,
        Ok(Err(e)) => return Err(format!("{} bytes of Arrow IPC: {e}", bytes.len())),
        Err(_) => {
            return Err(format!(
                "the Arrow IPC reader rejected {} bytes",
                bytes.len()
            ));
        }
    };
    let got: Schema = df
        .schema()
        .iter()
        .map(|(name, dt)| (name.to_string(), DType::of(dt)))
        .collect();
    let exact = df
        .schema()
        .iter()
        .zip(schema)
        .all(|((_, dt), (_, t))| *dt == t.polars());
    if got != *schema || !exact {
        let describe = |s: &Schema| {
            s.iter()
                .map(|(n, t)| format!("{n}: {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let types = df
            .schema()
            .iter()
            .map(|(n, dt)| format!("{n}: {dt}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "its columns ({types}) are not the frame's ({})",
            describe(schema)
        ));
    }
    Ok(df)
}

/// `frame.read_csv`: the len fast path counts lines without parsing; otherwise only the columns
/// the plan reads are parsed.
fn read_csv(block: &Block, sep: u8, schema: &Schema, plan: &Plan) -> Result<Encoded, KernelError> {
    check_sep(sep).map_err(|e| KernelError::failed(format!("{block}: {e}")))?;
    if plan.is_len_only() {
        return Ok(count_block_rows(block, sep, schema)?.encode());
    }
    let columns = plan.needed_columns(schema);
    let df = read_block_frame(block, sep, schema, columns.as_deref())?;
    finish(plan, df, block)
}

/// `frame.read_parquet`: `len` reads only the file's metadata; otherwise only the columns the
/// plan reads.
fn read_parquet(
    path: &Path,
    rows: Option<RowRange>,
    schema: &Schema,
    plan: &Plan,
) -> Result<Encoded, KernelError> {
    if plan.is_len_only() {
        return Ok(parquet::count_rows(path, rows)?.encode());
    }
    let columns = plan.needed_columns(schema);
    let df = parquet::read_file(path, rows, schema, columns.as_deref())?;
    let what = match rows {
        Some(r) => format!("{} {r}", path.display()),
        None => path.display().to_string(),
    };
    finish(plan, df, &what)
}

/// `frame.combine`: partial aggregates into one state, or into the result.
fn combine(
    parts: &[Input<FramePart>],
    spec: &AggSpec,
    finish: bool,
    inputs: &Inputs<'_>,
) -> Result<Encoded, KernelError> {
    let parts = parts
        .iter()
        .map(|&p| inputs.get(p))
        .collect::<Result<Vec<FramePart>, _>>()?;
    let frames: Vec<&DataFrame> = parts.iter().map(FramePart::frame).collect();
    let failed = |e: polars::prelude::PolarsError| FrameError::Compute {
        step: "groupby",
        reason: e.to_string(),
    };
    let state = spec.combine(&frames).map_err(failed)?;
    let out = if finish {
        spec.finish(&state).map_err(failed)?
    } else {
        state
    };
    Ok(FramePart::new(out).encode())
}

/// `frame.sum`: the total of counts.
fn sum(counts: &[Input<u64>], inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
    let mut total = 0u64;
    for &c in counts {
        let n = inputs.get(c)?;
        total = total.checked_add(n).ok_or_else(|| {
            KernelError::failed(format!("the sum of counts overflows at {total} + {n}"))
        })?;
    }
    Ok(total.encode())
}

/// The rest of a partition's pipeline, on the frame read from `what`: its steps, then its sink.
fn finish(plan: &Plan, df: DataFrame, what: &dyn fmt::Display) -> Result<Encoded, KernelError> {
    let mut df = plan
        .apply(df)
        .map_err(|e| KernelError::failed(format!("{what}: {e}")))?;
    let rows = df.height() as u64;
    match &plan.sink {
        Sink::Frame => Ok(FramePart::new(df).encode()),
        Sink::Len => Ok(rows.encode()),
        Sink::Csv(path) => {
            let written = CsvWriter::new(&mut create(path)?)
                .include_header(true)
                .finish(&mut df);
            written.map_err(|e| write_error(path, e))?;
            Ok(rows.encode())
        }
        Sink::Parquet(path) => {
            let written = ParquetWriter::new(create(path)?).finish(&mut df);
            written.map_err(|e| write_error(path, e))?;
            Ok(rows.encode())
        }
    }
}

fn write_error(path: &Path, e: polars::prelude::PolarsError) -> FrameError {
    FrameError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Creates `path` and the directories it needs.
fn create(path: &Path) -> Result<std::fs::File, FrameError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(FrameError::io(dir, "creating"))?;
    }
    std::fs::File::create(path).map_err(FrameError::io(path, "creating"))
}

#[cfg(test)]
mod tests {
    use rask_core::Registry;
    use rask_core::function::encode_payload;

    use super::*;
    use crate::plan::{Op, col};

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(family()).unwrap();
        r
    }

    fn call(task: &FrameTask, inputs: &[Encoded]) -> Result<Encoded, KernelError> {
        registry().call(task.func(), &encode_payload(task).unwrap(), inputs)
    }

    fn part() -> FramePart {
        let df = polars::df!("k" => [1i64, 2, 1], "x" => [0.5f64, 1.5, 2.5]).unwrap();
        FramePart::new(df)
    }

    #[test]
    fn the_family_registers_every_variant_under_its_name() {
        let r = registry();
        let info = &r.families()[0];
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("frame", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(info.functions, FrameTask::FUNCTIONS);
        for f in FrameTask::FUNCTIONS {
            assert!(r.get(f).is_some(), "{f}");
        }
    }

    #[test]
    fn apply_and_sum_read_their_inputs_by_type() {
        let task = FrameTask::Apply {
            part: Input::new(0),
            plan: Plan {
                ops: vec![Op::Filter(col("k").eq(1))],
                sink: Sink::Len,
            },
        };
        let out = call(&task, &[part().encode()]).unwrap();
        assert_eq!(out.decode::<u64>().unwrap(), 2);
        let sum = FrameTask::Sum {
            counts: vec![Input::new(0), Input::new(1), Input::new(0)],
        };
        let out = call(&sum, &[2u64.encode(), 5u64.encode()]).unwrap();
        assert_eq!(out.decode::<u64>().unwrap(), 9);
        let e = call(&sum, &[u64::MAX.encode(), 1u64.encode()]).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    /// What Python's `pickle.dumps(b, protocol=5)` writes for a large `bytes` object `b`.
    fn pickled_bytes(b: &[u8]) -> Encoded {
        let mut p = b"\x80\x05\x8e".to_vec();
        p.extend_from_slice(&(b.len() as u64).to_le_bytes());
        p.extend_from_slice(b);
        p.extend_from_slice(b"\x94.");
        Pickled(bytes::Bytes::from(p)).encode()
    }

    fn ipc_stream(mut df: DataFrame) -> Vec<u8> {
        let mut out = Vec::new();
        polars::prelude::IpcStreamWriter::new(&mut out)
            .finish(&mut df)
            .unwrap();
        out
    }

    #[test]
    fn from_pickle_reads_a_python_tasks_arrow_ipc_and_names_the_partition_when_it_is_wrong() {
        let schema: Schema = vec![("k".into(), DType::Int64), ("x".into(), DType::Float64)];
        let task = |plan: Plan| FrameTask::FromPickle {
            part: Input::new(0),
            index: 3,
            schema: schema.clone(),
            plan,
        };
        let good = pickled_bytes(&ipc_stream(part().into_frame()));
        let out = call(&task(Plan::default()), std::slice::from_ref(&good)).unwrap();
        assert_eq!(FramePart::decode(&out).unwrap(), part());
        let filtered = Plan {
            ops: vec![Op::Filter(col("k").eq(1))],
            sink: Sink::Len,
        };
        let out = call(&task(filtered), &[good]).unwrap();
        assert_eq!(out.decode::<u64>().unwrap(), 2);

        // Another column, another type of a column, bytes that are not IPC, not a bytes pickle.
        let renamed = polars::df!("k" => [1i64], "y" => [0.5f64]).unwrap();
        let retyped = polars::df!("k" => [1i64], "x" => ["a"]).unwrap();
        let int32 = polars::df!("k" => [1i32], "x" => [0.5f64]).unwrap();
        for (input, expected) in [
            (
                pickled_bytes(&ipc_stream(renamed)),
                "its columns (k: i64, y: f64) are not the frame's (k: int64, x: float64)",
            ),
            (
                pickled_bytes(&ipc_stream(retyped)),
                "its columns (k: i64, x: str) are not the frame's",
            ),
            (
                pickled_bytes(&ipc_stream(int32)),
                "its columns (k: i32, x: f64) are not the frame's",
            ),
            (pickled_bytes(b"not arrow"), "9 bytes of Arrow IPC"),
            (
                Pickled(bytes::Bytes::from_static(b"\x80\x05K\x01.")).encode(),
                "not a pickled bytes object",
            ),
        ] {
            let e = call(&task(Plan::default()), &[input])
                .unwrap_err()
                .to_string();
            assert!(e.contains("from_delayed partition 3: "), "{e}");
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn variants_keep_their_numbers_in_payloads() {
        // Workers of an earlier build decode the variants they know: new ones go last.
        let sum = encode_payload(&FrameTask::Sum { counts: vec![] }).unwrap();
        assert_eq!(sum[0], 4, "frame.sum is variant 4");
        let apply = FrameTask::Apply {
            part: Input::new(0),
            plan: Plan::default(),
        };
        assert_eq!(
            encode_payload(&apply).unwrap()[0],
            2,
            "frame.apply is variant 2"
        );
    }

    #[test]
    fn a_payload_of_another_variant_is_refused() {
        let sum = FrameTask::Sum { counts: vec![] };
        let payload = encode_payload(&sum).unwrap();
        let e = registry()
            .call("frame.read_csv", &payload, &[])
            .unwrap_err();
        assert_eq!(
            e,
            KernelError::Arguments {
                func: "frame.read_csv".into(),
                reason: "the payload is a frame.sum task".into()
            }
        );
    }

    #[test]
    fn a_corrupt_payload_is_refused_naming_the_function_and_type() {
        for payload in [&b""[..], b"\xff\xff", b"\x02\x00"] {
            let e = registry().call("frame.apply", payload, &[]).unwrap_err();
            assert!(
                matches!(&e, KernelError::Arguments { func, reason }
                    if func == "frame.apply" && reason.starts_with("as FrameTask: ")),
                "{payload:?}: {e}"
            );
        }
        // A whole task with bytes after it: another type's payload.
        let mut long = encode_payload(&FrameTask::Sum { counts: vec![] })
            .unwrap()
            .to_vec();
        long.extend_from_slice(b"tail");
        let e = registry().call("frame.sum", &long, &[]).unwrap_err();
        assert!(e.to_string().contains("bytes left over"), "{e}");
    }

    #[test]
    fn an_input_of_the_wrong_kind_is_named_by_position() {
        let apply = FrameTask::Apply {
            part: Input::new(0),
            plan: Plan::default(),
        };
        let e = call(&apply, &[7u64.encode()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame.apply: input 0: expected a dataframe partition, got data of another kind \
             (format tag 0)"
        );
        let e = call(&apply, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame.apply: input 0: the task has only 0 inputs"
        );
        let corrupt = Encoded::from_tagged_vec(vec![FramePart::TAG, 1, 2, 3]);
        let e = call(&apply, &[corrupt]).unwrap_err();
        assert!(
            matches!(&e, KernelError::Input { index: 0, reason, .. }
                if reason.contains("dataframe partition")
                    && reason.contains("3 bytes that do not start with the Arrow IPC file magic")),
            "{e}"
        );
        let sum = FrameTask::Sum {
            counts: vec![Input::new(0), Input::new(1)],
        };
        let e = call(&sum, &[1u64.encode(), part().encode()]).unwrap_err();
        assert!(
            matches!(&e, KernelError::Input { func, index: 1, .. } if func == "frame.sum"),
            "{e}"
        );
        let combine = FrameTask::Combine {
            parts: vec![Input::new(0)],
            spec: AggSpec::new(
                &vec![("k".into(), DType::Int64), ("x".into(), DType::Float64)],
                &["k"],
                &[("x", crate::Agg::Mean)],
            )
            .unwrap(),
            finish: true,
        };
        let e = call(&combine, &[3u64.encode()]).unwrap_err();
        assert!(matches!(e, KernelError::Input { index: 0, .. }), "{e}");
        // A partition that is not a partial aggregate: the step and the column are named.
        let e = call(&combine, &[part().encode()]).unwrap_err().to_string();
        assert!(e.starts_with("groupby: ") && e.contains("__0_sum"), "{e}");
    }

    #[test]
    fn bad_task_values_fail_naming_the_block_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "k,x\n1,2.5\n").unwrap();
        let block = Block {
            path: path.clone(),
            start: 0,
            end: 10,
            header_end: 4,
        };
        let schema: Schema = vec![("k".into(), DType::Int64), ("x".into(), DType::Float64)];
        let read = |sep: u8, plan: Plan| {
            call(
                &FrameTask::ReadCsv {
                    block: block.clone(),
                    sep,
                    schema: schema.clone(),
                    plan,
                },
                &[],
            )
        };
        let e = read(b'"', Plan::default()).unwrap_err().to_string();
        assert!(
            e.contains("t.csv bytes 0..10: sep") && e.contains("it quotes fields"),
            "{e}"
        );
        let select_nope = Plan {
            ops: vec![Op::Select(vec!["nope".into()])],
            sink: Sink::Frame,
        };
        let e = read(b',', select_nope.clone()).unwrap_err().to_string();
        assert!(e.contains("t.csv") && e.contains("nope"), "{e}");
        let filter = Plan {
            ops: vec![Op::Filter(col("x").gt(1.0))],
            sink: Sink::Len,
        };
        assert_eq!(read(b',', filter).unwrap().decode::<u64>().unwrap(), 1);

        let e = call(
            &FrameTask::ReadParquet {
                path: dir.path().join("gone.parquet"),
                rows: None,
                schema,
                plan: Plan::default(),
            },
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("opening") && e.contains("gone.parquet"), "{e}");
    }

    #[test]
    fn sinks_write_files_and_return_the_rows_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("deep/er/p.csv");
        let apply = |sink: Sink| FrameTask::Apply {
            part: Input::new(0),
            plan: Plan { ops: vec![], sink },
        };
        let n = call(&apply(Sink::Csv(out.clone())), &[part().encode()]).unwrap();
        assert_eq!(n.decode::<u64>().unwrap(), 3);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "k,x\n1,0.5\n2,1.5\n1,2.5\n"
        );
        // A directory where the file should be: the error names the path.
        let e = call(
            &apply(Sink::Parquet(dir.path().join("deep"))),
            &[part().encode()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("creating") && e.contains("deep"), "{e}");
    }
}
