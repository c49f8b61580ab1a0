//! Parquet input: a file's schema from its metadata, mapped onto the frame's four column types;
//! its row groups joined into partitions of about a block size; and one partition's columns
//! read.
//!
//! Integer columns (signed, and unsigned up to 64 bits) become `int64`, floats `float64`,
//! booleans `bool`, strings `string`. A 64-bit unsigned value above `i64::MAX` fails its
//! partition naming the column. Other columns (dates, timestamps, decimals, lists, ...) are
//! refused by name when the frame is built; leave them out with `read_parquet`'s `columns`.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::FrameError;
use crate::schema::{DType, Schema, to_polars_schema};

/// The frame type for a Parquet column stored as `dt`, or `None`.
fn frame_type(dt: &ArrowDataType) -> Option<DType> {
    match dt {
        ArrowDataType::Int8
        | ArrowDataType::Int16
        | ArrowDataType::Int32
        | ArrowDataType::Int64
        | ArrowDataType::UInt8
        | ArrowDataType::UInt16
        | ArrowDataType::UInt32
        | ArrowDataType::UInt64 => Some(DType::Int64),
        ArrowDataType::Float32 | ArrowDataType::Float64 => Some(DType::Float64),
        ArrowDataType::Boolean => Some(DType::Bool),
        ArrowDataType::Utf8 | ArrowDataType::LargeUtf8 | ArrowDataType::Utf8View => {
            Some(DType::Str)
        }
        _ => None,
    }
}

fn open(path: &Path) -> Result<ParquetReader<File>, FrameError> {
    File::open(path)
        .map(ParquetReader::new)
        .map_err(|source| FrameError::Io {
            path: path.to_owned(),
            what: "opening",
            source,
        })
}

/// Why the Parquet file at `path` could not be read.
fn unreadable(path: &Path) -> impl Fn(PolarsError) -> FrameError + '_ {
    move |e| {
        FrameError::Parquet(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    }
}

/// The frame schema of the Parquet file at `path` (its `columns` in that order, or all of
/// them) and its row groups, (rows, uncompressed bytes) each: all from its metadata, read once.
pub(crate) fn file_layout(
    path: &Path,
    columns: Option<&[String]>,
) -> Result<(Schema, Vec<(u64, u64)>), FrameError> {
    let mut reader = open(path)?;
    let schema = schema_of(&mut reader, path, columns)?;
    let groups = reader
        .get_metadata()
        .map_err(unreadable(path))?
        .row_groups
        .iter()
        .map(|rg| (rg.num_rows() as u64, rg.total_byte_size() as u64))
        .collect();
    Ok((schema, groups))
}

fn schema_of(
    reader: &mut ParquetReader<File>,
    path: &Path,
    columns: Option<&[String]>,
) -> Result<Schema, FrameError> {
    let arrow = reader.schema().map_err(unreadable(path))?;
    let names: Vec<String> = match columns {
        Some(cols) => cols.to_vec(),
        None => arrow.iter().map(|(n, _)| n.to_string()).collect(),
    };
    names
        .into_iter()
        .map(|name| {
            let field = arrow.get(name.as_str()).ok_or_else(|| {
                let have: Vec<&str> = arrow.iter().map(|(n, _)| n.as_str()).collect();
                FrameError::Parquet(format!(
                    "{}: no column {name:?} (columns: {})",
                    path.display(),
                    have.join(", ")
                ))
            })?;
            let t = frame_type(&field.dtype).ok_or_else(|| {
                FrameError::Parquet(format!(
                    "{}: column {name:?} holds {:?} values, which frames do not (int64, float64, \
                     bool and string); leave it out with read_parquet's columns",
                    path.display(),
                    field.dtype
                ))
            })?;
            Ok((name, t))
        })
        .collect()
}

/// Consecutive rows of a Parquet file: `start..start + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RowRange {
    pub start: u64,
    pub count: u64,
}

impl RowRange {
    pub fn end(self) -> u64 {
        self.start.saturating_add(self.count)
    }
}

/// `rows 300..500`, for messages.
impl std::fmt::Display for RowRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rows {}..{}", self.start, self.end())
    }
}

/// Consecutive row groups joined into partitions of at least `blocksize` uncompressed bytes
/// (the last may be smaller; a row group larger than that is a partition of its own). One
/// partition for the whole file (`None`) when it has at most one row group or no block size is
/// given.
pub(crate) fn split_row_groups(
    groups: &[(u64, u64)],
    blocksize: Option<u64>,
) -> Vec<Option<RowRange>> {
    let Some(blocksize) = blocksize.filter(|_| groups.len() > 1) else {
        return vec![None];
    };
    let mut out = Vec::new();
    let (mut start, mut rows, mut bytes) = (0u64, 0u64, 0u64);
    for (n, b) in groups {
        rows += n;
        bytes += b;
        if bytes >= blocksize {
            out.push(Some(RowRange { start, count: rows }));
            start += rows;
            (rows, bytes) = (0, 0);
        }
    }
    if rows > 0 || out.is_empty() {
        out.push(Some(RowRange { start, count: rows }));
    }
    out
}

fn check_rows(path: &Path, total: u64, rows: Option<RowRange>) -> Result<(), FrameError> {
    match rows {
        Some(r) if r.end() > total => Err(FrameError::Parquet(format!(
            "{}: {r} asked, the file has {total}: it changed since the frame was built",
            path.display(),
        ))),
        _ => Ok(()),
    }
}

/// The number of `rows` of the file at `path` (all when `None`), from its metadata.
pub(crate) fn count_rows(path: &Path, rows: Option<RowRange>) -> Result<u64, FrameError> {
    let total = open(path)?
        .num_rows()
        .map(|n| n as u64)
        .map_err(unreadable(path))?;
    check_rows(path, total, rows)?;
    Ok(rows.map_or(total, |r| r.count))
}

/// The `columns` (all of `schema`'s when `None`) of the `rows` of the file at `path`, cast to
/// the frame's types. Fails if the file no longer has `schema`'s columns and types, or those
/// rows (it changed after the frame was built).
pub(crate) fn read_file(
    path: &Path,
    rows: Option<RowRange>,
    schema: &Schema,
    columns: Option<&[String]>,
) -> Result<DataFrame, FrameError> {
    let mut reader = open(path)?;
    let total = reader.num_rows().map_err(unreadable(path))?;
    check_rows(path, total as u64, rows)?;
    let names: Vec<String> = schema.iter().map(|(n, _)| n.clone()).collect();
    let found = schema_of(&mut reader, path, Some(&names))?;
    if found != *schema {
        return Err(FrameError::Parquet(format!(
            "{}: its columns changed since the frame was built: {} where it had {}",
            path.display(),
            describe(&found),
            describe(schema)
        )));
    }
    let failed = |e: PolarsError| FrameError::Parquet(format!("{}: {e}", path.display()));
    let wanted: Vec<String> = columns.map_or(names, <[String]>::to_vec);
    let df = reader
        .with_columns(Some(wanted.clone()))
        .with_slice(rows.map(|r| (r.start as usize, r.count as usize)))
        // One task, one thread: the cluster runs partitions in parallel.
        .read_parallel(ParallelStrategy::None)
        .finish()
        .map_err(failed)?;
    let types = to_polars_schema(schema);
    // In the frame's column order, whatever order the reader returns them in.
    let cast = wanted
        .iter()
        .map(|name| {
            let c = df.column(name).map_err(failed)?;
            let to = types
                .get(name.as_str())
                .cloned()
                .unwrap_or(DataType::String);
            if c.dtype() == &to {
                return Ok(c.clone());
            }
            c.strict_cast(&to).map_err(|e| {
                FrameError::Parquet(format!(
                    "{}: column {name:?}: cannot read its {} values as {to}: {e}",
                    path.display(),
                    c.dtype()
                ))
            })
        })
        .collect::<Result<Vec<Column>, FrameError>>()?;
    DataFrame::new(df.height(), cast).map_err(failed)
}

/// `[name: type, ...]`, for messages.
pub(crate) fn describe(schema: &Schema) -> String {
    let cols: Vec<String> = schema.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    format!("[{}]", cols.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_schema(path: &Path, columns: Option<&[String]>) -> Result<Schema, String> {
        file_layout(path, columns)
            .map(|(schema, _)| schema)
            .map_err(|e| e.to_string())
    }

    fn rows(start: u64, count: u64) -> Option<RowRange> {
        Some(RowRange { start, count })
    }

    fn write(dir: &Path, name: &str, mut df: DataFrame) -> std::path::PathBuf {
        let path = dir.join(name);
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut df)
            .unwrap();
        path
    }

    #[test]
    fn types_map_onto_the_frame_types_and_values_are_cast() {
        let dir = tempfile::tempdir().unwrap();
        let df = df!(
            "i32" => [1i32, -2],
            "u64" => [3u64, 4],
            "f32" => [0.5f32, 1.5],
            "b" => [true, false],
            "s" => ["x", "y"],
        )
        .unwrap();
        let path = write(dir.path(), "t.parquet", df);
        let schema = file_schema(&path, None).unwrap();
        let names: Vec<(&str, DType)> = schema.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        assert_eq!(
            names,
            [
                ("i32", DType::Int64),
                ("u64", DType::Int64),
                ("f32", DType::Float64),
                ("b", DType::Bool),
                ("s", DType::Str),
            ]
        );
        assert_eq!(count_rows(&path, None).unwrap(), 2);
        let got = read_file(&path, None, &schema, None).unwrap();
        assert_eq!(got.column("i32").unwrap().dtype(), &DataType::Int64);
        assert_eq!(got.column("u64").unwrap().i64().unwrap().get(1), Some(4));
        assert_eq!(got.column("f32").unwrap().f64().unwrap().get(1), Some(1.5));
        let only = read_file(&path, None, &schema, Some(&["s".into(), "b".into()])).unwrap();
        assert_eq!(only.width(), 2);
        // Some columns, in the order asked.
        let some = file_schema(&path, Some(&["s".into(), "i32".into()])).unwrap();
        assert_eq!(
            some,
            [
                ("s".to_string(), DType::Str),
                ("i32".to_string(), DType::Int64)
            ]
        );
        let got = read_file(&path, None, &some, None).unwrap();
        assert_eq!(got.get_column_names(), ["s", "i32"]);
    }

    #[test]
    fn row_groups_join_into_partitions_of_a_block_size() {
        let groups = [(10, 40), (10, 40), (10, 40), (5, 100), (3, 10)];
        assert_eq!(split_row_groups(&groups, None), [None]);
        assert_eq!(split_row_groups(&groups[..1], Some(1)), [None]);
        assert_eq!(split_row_groups(&[], Some(1)), [None]);
        assert_eq!(
            split_row_groups(&groups, Some(80)),
            [rows(0, 20), rows(20, 15), rows(35, 3)]
        );
        assert_eq!(
            split_row_groups(&groups, Some(1)),
            [
                rows(0, 10),
                rows(10, 10),
                rows(20, 10),
                rows(30, 5),
                rows(35, 3)
            ]
        );
        assert_eq!(split_row_groups(&groups, Some(10_000)), [rows(0, 38)]);
    }

    #[test]
    fn a_partition_reads_its_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        let n: Vec<i64> = (0..1000).collect();
        let mut df = df!("n" => n).unwrap();
        let path = dir.path().join("rg.parquet");
        ParquetWriter::new(File::create(&path).unwrap())
            .with_row_group_size(Some(100))
            .finish(&mut df)
            .unwrap();
        let (_, groups) = file_layout(&path, None).unwrap();
        assert_eq!(groups.len(), 10);
        assert!(groups.iter().all(|(rows, _)| *rows == 100));
        let schema = file_schema(&path, None).unwrap();
        let got = read_file(&path, rows(300, 200), &schema, None).unwrap();
        let values: Vec<i64> = got
            .column("n")
            .unwrap()
            .i64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert_eq!(values, (300..500).collect::<Vec<_>>());
        assert_eq!(count_rows(&path, rows(300, 200)).unwrap(), 200);
        let e = count_rows(&path, rows(900, 200)).unwrap_err().to_string();
        assert!(e.contains("rows 900..1100 asked, the file has 1000"), "{e}");
        assert!(read_file(&path, rows(900, 200), &schema, None).is_err());
    }

    #[test]
    fn bad_files_and_columns_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_parquet = dir.path().join("x.parquet");
        std::fs::write(&not_parquet, "a,b\n1,2\n").unwrap();
        let e = file_schema(&not_parquet, None).unwrap_err().to_string();
        assert!(e.contains("x.parquet: not a readable Parquet file"), "{e}");
        let e = count_rows(&dir.path().join("gone.parquet"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone.parquet"), "{e}");

        let list = Series::new("l".into(), [1i64, 2])
            .implode()
            .unwrap()
            .into_column();
        let n = Column::new("n".into(), [7i64]);
        let path = write(
            dir.path(),
            "nested.parquet",
            DataFrame::new(1, vec![list, n]).unwrap(),
        );
        let e = file_schema(&path, None).unwrap_err().to_string();
        assert!(
            e.contains("column \"l\" holds")
                && e.contains("leave it out with read_parquet's columns"),
            "{e}"
        );
        // Leaving it out works.
        let schema = file_schema(&path, Some(&["n".into()])).unwrap();
        let got = read_file(&path, None, &schema, None).unwrap();
        assert_eq!(got.column("n").unwrap().i64().unwrap().get(0), Some(7));
        let e = file_schema(&path, Some(&["nope".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no column \"nope\" (columns: l, n)"), "{e}");

        let big = df!("u" => [u64::MAX]).unwrap();
        let path = write(dir.path(), "big.parquet", big);
        let schema = file_schema(&path, None).unwrap();
        let e = read_file(&path, None, &schema, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column \"u\": cannot read its u64 values as i64"),
            "{e}"
        );

        // A file rewritten with other columns after the frame was built.
        let path = write(dir.path(), "changed.parquet", df!("a" => [1i64]).unwrap());
        let before = file_schema(&path, None).unwrap();
        write(
            dir.path(),
            "changed.parquet",
            df!("a" => ["now text"]).unwrap(),
        );
        let e = read_file(&path, None, &before, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("its columns changed since the frame was built"),
            "{e}"
        );
    }
}
