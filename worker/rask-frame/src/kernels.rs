//! The dataframe task functions, registered as one [`Table`] of the engine's registry.
//!
//! | function | arguments | result |
//! |---|---|---|
//! | `frame_read_csv` | path, start, end, header_end, schema (JSON), plan (JSON), separator (optional, `,`) | the plan's sink |
//! | `frame_read_parquet` | path, schema (JSON), plan (JSON), first row and row count (optional: all) | the plan's sink |
//! | `frame_apply` | frame, plan (JSON) | the plan's sink |
//! | `frame_combine` | list of partial-aggregate frames, spec (JSON), finish (bool) | frame |

use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::csv::{count_block_rows, read_block_frame};
use super::groupby::AggSpec;
use super::parquet;
use super::part::{FramePart, frame_arg};
use super::partition::Block;
use super::plan::{Plan, Schema, Sink};
use crate::registry::Table;
use crate::value::Value;

pub const FRAME: Table = &[
    ("frame_read_csv", read_csv),
    ("frame_read_parquet", read_parquet),
    ("frame_apply", apply),
    ("frame_combine", combine),
];

fn arg<'a>(args: &'a [Value], i: usize, func: &str) -> Result<&'a Value, String> {
    args.get(i).ok_or_else(|| {
        format!(
            "{func}() takes at least {} argument(s), got {}",
            i + 1,
            args.len()
        )
    })
}

fn str_arg<'a>(args: &'a [Value], i: usize, func: &str) -> Result<&'a str, String> {
    arg(args, i, func)?
        .as_str()
        .map_err(|e| format!("{func}(): argument {}: {e}", i + 1))
}

fn u64_arg(args: &[Value], i: usize, func: &str) -> Result<u64, String> {
    let v = arg(args, i, func)?
        .as_int()
        .map_err(|e| format!("{func}(): argument {}: {e}", i + 1))?;
    u64::try_from(v).map_err(|_| format!("{func}(): argument {} is negative: {v}", i + 1))
}

fn schema_arg(args: &[Value], i: usize, func: &str) -> Result<Schema, String> {
    serde_json::from_str(str_arg(args, i, func)?)
        .map_err(|e| format!("{func}(): malformed schema: {e}"))
}

/// `frame_read_csv(path, start, end, header_end, schema, plan[, sep])`: one CSV block through a
/// plan.
fn read_csv(args: &[Value]) -> Result<Value, String> {
    const F: &str = "frame_read_csv";
    let sep = match args.get(6) {
        None => b',',
        Some(_) => match str_arg(args, 6, F)?.as_bytes() {
            [b] if b.is_ascii() => *b,
            other => {
                return Err(format!(
                    "{F}(): argument 7: the separator must be one ASCII character, got {:?}",
                    String::from_utf8_lossy(other)
                ));
            }
        },
    };
    let block = Block {
        path: PathBuf::from(str_arg(args, 0, F)?),
        start: u64_arg(args, 1, F)?,
        end: u64_arg(args, 2, F)?,
        header_end: u64_arg(args, 3, F)?,
        sep,
    };
    let schema = schema_arg(args, 4, F)?;
    let plan = Plan::from_json(str_arg(args, 5, F)?)?;
    if plan.ops.is_empty() && plan.sink == Some(Sink::Len) {
        return count_block_rows(&block, &schema).map(|n| Value::Int(n as i64));
    }
    let columns = plan.needed_columns(&schema);
    let df = read_block_frame(&block, &schema, columns.as_deref())?;
    finish(plan.apply(df)?, plan.sink.as_ref())
}

/// `frame_read_parquet(path, schema, plan[, start, count])`: a Parquet file's rows (all, or
/// `count` from `start`) through a plan.
fn read_parquet(args: &[Value]) -> Result<Value, String> {
    const F: &str = "frame_read_parquet";
    let path = PathBuf::from(str_arg(args, 0, F)?);
    let schema = schema_arg(args, 1, F)?;
    let plan = Plan::from_json(str_arg(args, 2, F)?)?;
    let rows = match args.len() {
        3 => None,
        _ => Some((u64_arg(args, 3, F)?, u64_arg(args, 4, F)?)),
    };
    if plan.ops.is_empty() && plan.sink == Some(Sink::Len) {
        return parquet::count_rows(&path, rows).map(|n| Value::Int(n as i64));
    }
    let columns = plan.needed_columns(&schema);
    let df = parquet::read_file(&path, rows, &schema, columns.as_deref())?;
    finish(plan.apply(df)?, plan.sink.as_ref())
}

/// `frame_apply(frame, plan)`: a plan over a computed partition.
fn apply(args: &[Value]) -> Result<Value, String> {
    const F: &str = "frame_apply";
    let df = frame_arg(args, 0, F)?.clone();
    let plan = Plan::from_json(str_arg(args, 1, F)?)?;
    finish(plan.apply(df)?, plan.sink.as_ref())
}

/// `frame_combine([partials], spec, finish)`: one node of the groupby tree.
fn combine(args: &[Value]) -> Result<Value, String> {
    const F: &str = "frame_combine";
    let items = arg(args, 0, F)?
        .as_list()
        .map_err(|e| format!("{F}(): argument 1: {e}"))?;
    let parts = (0..items.len())
        .map(|i| frame_arg(items, i, F))
        .collect::<Result<Vec<_>, _>>()?;
    let spec: AggSpec = serde_json::from_str(str_arg(args, 1, F)?)
        .map_err(|e| format!("{F}(): malformed aggregation: {e}"))?;
    let last = arg(args, 2, F)? == &Value::Bool(true);
    let state = spec.combine(&parts).map_err(|e| format!("groupby: {e}"))?;
    let out = if last {
        spec.finish(&state).map_err(|e| format!("groupby: {e}"))?
    } else {
        state
    };
    Ok(Value::Frame(FramePart::new(out)))
}

/// The end of a partition's pipeline.
fn finish(mut df: DataFrame, sink: Option<&Sink>) -> Result<Value, String> {
    let rows = df.height() as i64;
    match sink {
        None | Some(Sink::Frame) => Ok(Value::Frame(FramePart::new(df))),
        Some(Sink::Len) => Ok(Value::Int(rows)),
        Some(Sink::Csv(path)) => {
            let mut f = create(path)?;
            CsvWriter::new(&mut f)
                .include_header(true)
                .finish(&mut df)
                .map_err(|e| format!("writing {path}: {e}"))?;
            Ok(Value::Int(rows))
        }
        Some(Sink::Parquet(path)) => {
            let f = create(path)?;
            ParquetWriter::new(f)
                .finish(&mut df)
                .map_err(|e| format!("writing {path}: {e}"))?;
            Ok(Value::Int(rows))
        }
    }
}

fn create(path: &str) -> Result<std::fs::File, String> {
    let p = Path::new(path);
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::File::create(p).map_err(|e| format!("creating {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_errors_naming_the_function() {
        let e = read_csv(&[]).unwrap_err();
        assert_eq!(e, "frame_read_csv() takes at least 1 argument(s), got 0");
        let args: Vec<Value> = vec![
            "/nowhere.csv".into(),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(0),
            "[]".into(),
            "{}".into(),
        ];
        assert!(
            read_csv(&args)
                .unwrap_err()
                .contains("argument 2 is negative")
        );
        let mut args = args;
        args[1] = Value::Int(0);
        args[4] = "not json".into();
        assert!(read_csv(&args).unwrap_err().contains("malformed schema"));
        args[4] = "[]".into();
        args[5] = "{\"ops\": 3}".into();
        assert!(
            read_csv(&args)
                .unwrap_err()
                .contains("malformed partition plan")
        );
        args[5] = Plan::default().to_json().into();
        let e = read_csv(&args).unwrap_err();
        assert!(e.contains("/nowhere.csv"), "{e}");
        for bad in [";;", "", "é"] {
            let mut with_sep = args.clone();
            with_sep.push(bad.into());
            let e = read_csv(&with_sep).unwrap_err();
            assert!(
                e.contains("argument 7: the separator must be one ASCII character"),
                "{bad:?}: {e}"
            );
        }
        let mut with_sep = args.clone();
        with_sep.push(Value::Int(9));
        assert!(read_csv(&with_sep).unwrap_err().contains("argument 7"));
        let e = apply(&[Value::Int(1), "{}".into()]).unwrap_err();
        assert_eq!(e, "frame_apply(): argument 1 must be a frame, got int");
        let e = combine(&[Value::List(vec![]), "{}".into(), true.into()]).unwrap_err();
        assert!(e.contains("malformed aggregation"), "{e}");
    }
}
