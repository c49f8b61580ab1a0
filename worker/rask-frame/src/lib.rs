//! Partitioned dataframes (Dask's `dask.dataframe`) on Polars: `read_csv` over a glob split
//! into byte blocks and `read_parquet` into runs of row groups, column selection, boolean
//! filters, `groupby().agg()` as partial aggregates combined in a tree, `len`, `head`,
//! `compute`, and `to_csv`/`to_parquet` per partition.
//!
//! A [`DataFrame`] is lazy: a list of partition sources (a CSV block, Parquet rows, a task, or
//! a Python task's Arrow IPC: [`from_pickled`]) and the steps to apply to each. Building one does no work beyond reading the files' headers
//! (or metadata) and a sample; calls that need data (`len`, `compute`, `head`, `to_csv`, ...)
//! build a graph of `frame.*` tasks, whose partition tasks run the whole pipeline at once, and
//! run it on a cluster. Partitions are Polars frames ([`FramePart`]) and travel between
//! processes as Arrow IPC (format tag [`FramePart::TAG`]).
//!
//! Two sides share this crate:
//! - the client builds tasks: each is a `FrameTask` value (one serde enum, one variant per
//!   function, typed fields: the block, the schema, the plan, the aggregation);
//! - a worker runs them: the program that builds it registers [`family()`] (the `frame`
//!   functions, at this crate's version).
//!
//! ```no_run
//! # async fn demo(client: &rask_client::Client) -> Result<(), rask_frame::FrameError> {
//! use rask_frame::{Agg, ReadCsvOptions, col, read_csv};
//! let df = read_csv("data/taxi_*.csv", &ReadCsvOptions::default())?;
//! let n = df.len(client).await?;
//! let means = df
//!     .filter(col("trip_distance").gt(0.0))?
//!     .groupby(&["payment_type"])?
//!     .agg(&[("total_amount", Agg::Mean), ("trip_distance", Agg::Mean)])?
//!     .compute(client)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A worker that runs them:
//!
//! ```
//! let mut registry = rask_core::Registry::new();
//! registry.register(rask_frame::family()).unwrap();
//! assert!(registry.get("frame.read_csv").is_some());
//! ```

mod csv;
mod error;
mod groupby;
mod kernels;
mod parquet;
mod part;
mod partition;
mod plan;
mod schema;
pub mod taxi;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use polars::prelude::{CsvReadOptions, SerReader};
use rask_client::delayed::Delayed;
use rask_client::{Client, kernel};
use rask_core::Pickled;

pub use error::FrameError;

/// Entry points for the fuzz targets under `fuzz/` (built only with `--cfg fuzzing`, which
/// `cargo fuzz` sets): what a worker does with a CSV file a user pointed it at.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Reads `path` as `read_csv` does (header, schema from a sample, blocks of `blocksize`
    /// bytes), then parses and counts every block as the workers would. Errors are fine; a panic
    /// is a bug.
    pub fn read_csv_blocks(path: &str, blocksize: u64, sep: u8) -> Result<u64, FrameError> {
        let options = ReadCsvOptions {
            blocksize: Some(blocksize),
            sep,
            ..ReadCsvOptions::default()
        };
        let df = read_csv(path, &options)?;
        let mut rows = 0;
        for source in &df.sources {
            if let Source::Csv { block, sep } = source {
                let frame = csv::read_block_frame(block, *sep, &df.schema, None)?;
                rows += frame.height() as u64;
                csv::count_block_rows(block, *sep, &df.schema)?;
            }
        }
        Ok(rows)
    }
}
pub use groupby::Agg;
pub use kernels::family;
pub use part::FramePart;
pub use partition::{parse_blocksize, parse_sep};
pub use plan::{ArithOp, CmpOp, Col, Expr, Lit, NumExpr, col};
pub use schema::{DType, Schema};

use groupby::AggSpec;
use kernels::FrameTask;
use parquet::RowRange;
use partition::Block;
use plan::{Op, Plan, Sink};

#[cfg(test)]
mod tests;

/// Options of [`read_csv`].
#[derive(Clone, Debug)]
pub struct ReadCsvOptions {
    /// Bytes per partition, split at line boundaries; `None`: one partition per file.
    pub blocksize: Option<u64>,
    /// Bytes of the first file read to infer the column types (Dask reads 256,000).
    pub sample: usize,
    /// Column types to use instead of the inferred ones.
    pub dtypes: Vec<(String, DType)>,
    /// The field separator, an ASCII character: `b','` (the default), `b'\t'`, `b';'`, ...
    /// (Dask's and pandas' `sep`). Not a quote, a line ending or a character above 127.
    pub sep: u8,
}

impl Default for ReadCsvOptions {
    fn default() -> Self {
        ReadCsvOptions {
            blocksize: Some(64_000_000),
            sample: 256_000,
            dtypes: Vec::new(),
            sep: b',',
        }
    }
}

/// Where a partition's frame comes from.
#[derive(Clone)]
enum Source {
    /// A block of a CSV file, fields separated by `sep`.
    Csv { block: Block, sep: u8 },
    /// A Parquet file's rows: a run of its row groups, or all.
    Parquet {
        path: PathBuf,
        rows: Option<RowRange>,
    },
    /// A partition computed by another task (a groupby's result).
    Task(Delayed<FramePart>),
    /// Partition `index` of [`from_pickled`]: a Python task's `bytes` of Arrow IPC.
    Pickled {
        part: Delayed<Pickled>,
        index: usize,
    },
}

/// A lazy partitioned dataframe.
#[derive(Clone)]
pub struct DataFrame {
    /// The schema of every partition's source.
    input_schema: Schema,
    /// The schema after `ops`.
    schema: Schema,
    sources: Vec<Source>,
    /// Applied to every partition, in the partition's own task.
    ops: Vec<Op>,
}

/// Reads every file `pattern` matches, split into blocks of `options.blocksize` bytes at line
/// boundaries. Every file needs the same header line; column types come from a sample of the
/// first file (integers, floats, booleans, else strings) unless `options.dtypes` names them.
pub fn read_csv(pattern: &str, options: &ReadCsvOptions) -> Result<DataFrame, FrameError> {
    partition::check_blocksize(options.blocksize)?;
    partition::check_sep(options.sep)?;
    let files = partition::expand_glob(pattern)?;
    let mut sized = Vec::with_capacity(files.len());
    let mut first_header: Option<(PathBuf, String)> = None;
    for path in &files {
        let (header, header_end) = partition::read_header(path)?;
        let size = std::fs::metadata(path)
            .map_err(|source| FrameError::Io {
                path: path.clone(),
                what: "reading the size of",
                source,
            })?
            .len();
        match &first_header {
            None => first_header = Some((path.clone(), header)),
            Some((first, h)) if *h != header => {
                return Err(FrameError::Csv {
                    path: path.clone(),
                    detail: format!(
                        "header {header:?} differs from {:?} of {}",
                        h,
                        first.display()
                    ),
                });
            }
            Some(_) => {}
        }
        sized.push((path.clone(), size, header_end));
    }
    let schema = infer_schema(&files[0], options)?;
    let sources = partition::split_blocks(&sized, options.blocksize)
        .into_iter()
        .map(|block| Source::Csv {
            block,
            sep: options.sep,
        })
        .collect();
    Ok(DataFrame::from_sources(schema, sources))
}

/// Options of [`read_parquet`].
#[derive(Clone, Debug)]
pub struct ReadParquetOptions {
    /// The columns to read, in this order; `None`: all.
    pub columns: Option<Vec<String>>,
    /// Uncompressed bytes per partition: a file's consecutive row groups are joined until they
    /// reach it (a larger row group is a partition of its own); `None`: one partition per file.
    pub blocksize: Option<u64>,
}

impl Default for ReadParquetOptions {
    fn default() -> Self {
        ReadParquetOptions {
            columns: None,
            // Dask's default for Parquet.
            blocksize: Some(256 << 20),
        }
    }
}

/// Reads every Parquet file `pattern` matches (Dask's `read_parquet`): `options.columns` of
/// them, or all; one partition per `options.blocksize` of row groups. Every file needs the same
/// columns. Integer columns become `int64`, floats `float64`, booleans `bool`, strings
/// `string`; a column of another type (dates, decimals, lists, ...) is refused by name unless
/// `columns` leaves it out. Only the columns a pipeline uses are read.
pub fn read_parquet(pattern: &str, options: &ReadParquetOptions) -> Result<DataFrame, FrameError> {
    partition::check_blocksize(options.blocksize)?;
    let files = partition::expand_glob(pattern)?;
    let mut sources = Vec::new();
    let mut first: Option<(&Path, Schema)> = None;
    for path in &files {
        let (schema, groups) = parquet::file_layout(path, options.columns.as_deref())?;
        sources.extend(
            parquet::split_row_groups(&groups, options.blocksize)
                .into_iter()
                .map(|rows| Source::Parquet {
                    path: path.clone(),
                    rows,
                }),
        );
        match &first {
            None => first = Some((path, schema)),
            Some((first_path, s)) if *s != schema => {
                return Err(FrameError::Parquet(format!(
                    "{}: columns {} differ from {} of {}",
                    path.display(),
                    parquet::describe(&schema),
                    parquet::describe(s),
                    first_path.display()
                )));
            }
            Some(_) => {}
        }
    }
    let schema = first.map(|(_, s)| s).unwrap_or_default();
    Ok(DataFrame::from_sources(schema, sources))
}

/// A frame whose partition `i` is what Python task `parts[i]` returned: `bytes` holding an Arrow
/// IPC stream of `schema` (Dask's `from_delayed`, as the Python package's
/// `rask.dataframe.from_delayed` makes them from pandas frames). Each partition's task checks
/// its columns against `schema` and fails naming the partition when they differ.
pub fn from_pickled(parts: &[Delayed<Pickled>], schema: Schema) -> Result<DataFrame, FrameError> {
    if parts.is_empty() {
        return Err(FrameError::Invalid(
            "from_delayed needs at least one partition".into(),
        ));
    }
    if schema.is_empty() {
        return Err(FrameError::Invalid(
            "from_delayed needs at least one column".into(),
        ));
    }
    for (i, (name, _)) in schema.iter().enumerate() {
        if schema[..i].iter().any(|(n, _)| n == name) {
            return Err(FrameError::Invalid(format!(
                "from_delayed: column {name:?} appears twice"
            )));
        }
    }
    let sources = parts
        .iter()
        .enumerate()
        .map(|(index, part)| Source::Pickled {
            part: part.clone(),
            index,
        })
        .collect();
    Ok(DataFrame::from_sources(schema, sources))
}

/// Column names from the header and types from the first `options.sample` bytes of `path`.
fn infer_schema(path: &Path, options: &ReadCsvOptions) -> Result<Schema, FrameError> {
    let csv_err = |detail: String| FrameError::Csv {
        path: path.to_owned(),
        detail,
    };
    let mut sample = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(options.sample.max(1) as u64)
                .read_to_end(&mut sample)
        })
        .map_err(|source| FrameError::Io {
            path: path.to_owned(),
            what: "reading",
            source,
        })?;
    // Whole lines only (the header is always whole: read_header checked it has an end or is
    // the whole file).
    let (header, _) = partition::read_header(path)?;
    let whole = match memchr::memrchr(b'\n', &sample) {
        Some(i) if i + 1 > header.len() => i + 1,
        _ => sample.len(),
    };
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(None)
        .with_raise_if_empty(false)
        .map_parse_options(|p| p.with_separator(options.sep))
        .into_reader_with_file_handle(Cursor::new(&sample[..whole]))
        .finish()
        .map_err(|e| csv_err(format!("cannot infer the column types from a sample: {e}")))?;
    let mut schema: Schema = df
        .schema()
        .iter()
        .map(|(name, dt)| (name.to_string(), DType::of(dt)))
        .collect();
    let names: Vec<&str> = header.split(char::from(options.sep)).collect();
    if names.len() != schema.len() {
        return Err(csv_err(format!(
            "the header has {} names but the sample {} columns",
            names.len(),
            schema.len()
        )));
    }
    for (name, t) in &options.dtypes {
        match schema.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = *t,
            None => {
                return Err(FrameError::Invalid(format!(
                    "dtypes names column {name:?}, which {} does not have",
                    path.display()
                )));
            }
        }
    }
    Ok(schema)
}

impl DataFrame {
    fn from_sources(schema: Schema, sources: Vec<Source>) -> DataFrame {
        DataFrame {
            input_schema: schema.clone(),
            schema,
            sources,
            ops: Vec::new(),
        }
    }

    pub fn columns(&self) -> Vec<&str> {
        self.schema.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn dtypes(&self) -> &Schema {
        &self.schema
    }

    pub fn npartitions(&self) -> usize {
        self.sources.len()
    }

    fn with_op(&self, op: Op) -> DataFrame {
        let mut out = self.clone();
        out.ops.push(op);
        out.schema = plan::output_schema(&self.input_schema, &out.ops);
        out
    }

    /// The same frame of only partition `i`.
    fn partition(&self, i: usize) -> DataFrame {
        DataFrame {
            sources: self.sources[i..=i].to_vec(),
            ..self.clone()
        }
    }

    /// `df[cols]`: these columns, in this order.
    pub fn select(&self, cols: &[&str]) -> Result<DataFrame, FrameError> {
        for c in cols {
            schema::lookup(&self.schema, c).map_err(FrameError::Invalid)?;
        }
        if cols.is_empty() {
            return Err(FrameError::Invalid(
                "select needs at least one column".into(),
            ));
        }
        Ok(self.with_op(Op::Select(cols.iter().map(|c| c.to_string()).collect())))
    }

    /// `df[expr]`: the rows where `expr` holds.
    pub fn filter(&self, expr: Expr) -> Result<DataFrame, FrameError> {
        expr.check(&self.schema).map_err(FrameError::Invalid)?;
        Ok(self.with_op(Op::Filter(expr)))
    }

    /// `df.assign(name=expr, ...)`: computed columns, each replacing the column of its name or
    /// added at the end. Every expression reads the frame as it was before this step.
    pub fn assign(&self, columns: &[(&str, NumExpr)]) -> Result<DataFrame, FrameError> {
        if columns.is_empty() {
            return Err(FrameError::Invalid(
                "assign needs at least one column".into(),
            ));
        }
        for (i, (name, e)) in columns.iter().enumerate() {
            if name.is_empty() {
                return Err(FrameError::Invalid(
                    "assign: a column name must not be empty".into(),
                ));
            }
            if columns[..i].iter().any(|(n, _)| n == name) {
                return Err(FrameError::Invalid(format!(
                    "assign names column {name:?} twice"
                )));
            }
            e.dtype(&self.schema).map_err(|reason| {
                FrameError::Invalid(format!("assign {name:?} = {e}: {reason}"))
            })?;
        }
        Ok(self.with_op(Op::Assign(
            columns
                .iter()
                .map(|(n, e)| (n.to_string(), e.clone()))
                .collect(),
        )))
    }

    /// `df.groupby(keys)`; aggregate with [`GroupBy::agg`].
    pub fn groupby(&self, keys: &[&str]) -> Result<GroupBy, FrameError> {
        for k in keys {
            schema::lookup(&self.schema, k).map_err(FrameError::Invalid)?;
        }
        Ok(GroupBy {
            df: self.clone(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            split_every: 8,
        })
    }

    /// One task per partition, running the pipeline (and `extra`) into `sink`. The caller names
    /// the result type the sink gives: [`FramePart`] for [`Sink::Frame`], `u64` for the others.
    fn tasks<R>(&self, extra: Option<Op>, sink: Sink) -> Vec<Delayed<R>> {
        let mut ops = self.ops.clone();
        ops.extend(extra);
        let plan = Plan { ops, sink };
        let schema = &self.input_schema;
        self.sources
            .iter()
            .map(|source| match source {
                Source::Csv { block, sep } => kernel(|_| FrameTask::ReadCsv {
                    block: block.clone(),
                    sep: *sep,
                    schema: schema.clone(),
                    plan: plan.clone(),
                }),
                Source::Parquet { path, rows } => kernel(|_| FrameTask::ReadParquet {
                    path: path.clone(),
                    rows: *rows,
                    schema: schema.clone(),
                    plan: plan.clone(),
                }),
                Source::Task(d) if plan == Plan::default() => d.clone().cast(),
                Source::Task(d) => kernel(|deps| FrameTask::Apply {
                    part: deps.input(d),
                    plan: plan.clone(),
                }),
                Source::Pickled { part, index } => kernel(|deps| FrameTask::FromPickle {
                    part: deps.input(part),
                    index: *index,
                    schema: schema.clone(),
                    plan: plan.clone(),
                }),
            })
            .collect()
    }

    /// The partitions as delayed values, each a [`FramePart`] (one task per partition, running
    /// the frame's steps).
    pub fn partitions(&self) -> Vec<Delayed<FramePart>> {
        self.tasks(None, Sink::Frame)
    }

    /// The number of rows, as one task summing one count per partition.
    fn len_task(&self) -> Delayed<u64> {
        let counts: Vec<Delayed<u64>> = self.tasks(None, Sink::Len);
        kernel(|deps| FrameTask::Sum {
            counts: counts.iter().map(|c| deps.input(c)).collect(),
        })
    }

    /// The number of rows. A CSV partition with no filter counts its lines without parsing; a
    /// Parquet partition reads its file's metadata.
    pub async fn len(&self, client: &Client) -> Result<u64, FrameError> {
        Ok(client.compute(&self.len_task()).result().await?)
    }

    /// The whole frame, partitions concatenated in order, on this process.
    pub async fn compute(&self, client: &Client) -> Result<polars::prelude::DataFrame, FrameError> {
        let futures = client.compute_many(&self.partitions());
        let parts = client.gather(&futures).await?;
        concat(parts, &self.schema)
    }

    /// The first `n` rows, computing partitions in order until there are enough.
    pub async fn head(
        &self,
        n: usize,
        client: &Client,
    ) -> Result<polars::prelude::DataFrame, FrameError> {
        let mut got: Vec<FramePart> = Vec::new();
        let mut have = 0;
        for i in 0..self.sources.len() {
            if have >= n {
                break;
            }
            let task = self
                .partition(i)
                .tasks(Some(Op::Head(n - have)), Sink::Frame);
            let parts: Vec<FramePart> = client.gather(&client.compute_many(&task)).await?;
            have += parts.iter().map(|p| p.frame().height()).sum::<usize>();
            got.extend(parts);
        }
        concat(got, &self.schema)
    }

    /// Writes each partition to `dir/part-NNNNN.csv` (with a header); returns the paths.
    pub async fn to_csv(&self, dir: &Path, client: &Client) -> Result<Vec<PathBuf>, FrameError> {
        self.write(dir, "csv", Sink::Csv, client).await
    }

    /// Writes each partition to `dir/part-NNNNN.parquet`; returns the paths.
    pub async fn to_parquet(
        &self,
        dir: &Path,
        client: &Client,
    ) -> Result<Vec<PathBuf>, FrameError> {
        self.write(dir, "parquet", Sink::Parquet, client).await
    }

    /// Writes partition `i` to `paths[i]` as CSV (with a header; Dask's `to_csv` with a name
    /// per partition); one path per partition.
    pub async fn to_csv_files(&self, paths: &[PathBuf], client: &Client) -> Result<(), FrameError> {
        let tasks = self.write_tasks(paths, Sink::Csv)?;
        client.gather(&client.compute_many(&tasks)).await?;
        Ok(())
    }

    /// Writes partition `i` to `paths[i]` as Parquet; one path per partition.
    pub async fn to_parquet_files(
        &self,
        paths: &[PathBuf],
        client: &Client,
    ) -> Result<(), FrameError> {
        let tasks = self.write_tasks(paths, Sink::Parquet)?;
        client.gather(&client.compute_many(&tasks)).await?;
        Ok(())
    }

    /// One writing task per partition, each returning the rows it wrote.
    fn write_tasks(
        &self,
        paths: &[PathBuf],
        sink: fn(PathBuf) -> Sink,
    ) -> Result<Vec<Delayed<u64>>, FrameError> {
        if paths.len() != self.sources.len() {
            return Err(FrameError::Invalid(format!(
                "{} paths given for {} partitions: one path per partition",
                paths.len(),
                self.sources.len()
            )));
        }
        for p in paths {
            partition::utf8(p)?;
        }
        Ok(paths
            .iter()
            .enumerate()
            .flat_map(|(i, p)| self.partition(i).tasks(None, sink(p.clone())))
            .collect())
    }

    async fn write(
        &self,
        dir: &Path,
        ext: &str,
        sink: fn(PathBuf) -> Sink,
        client: &Client,
    ) -> Result<Vec<PathBuf>, FrameError> {
        partition::utf8(dir)?;
        let paths = part_paths(dir, ext, self.sources.len());
        let tasks = self.write_tasks(&paths, sink)?;
        client.gather(&client.compute_many(&tasks)).await?;
        Ok(paths)
    }
}

/// `dir/part-00000.ext`, ...: the files [`DataFrame::to_csv`] and [`DataFrame::to_parquet`] write.
fn part_paths(dir: &Path, ext: &str, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| dir.join(format!("part-{i:05}.{ext}")))
        .collect()
}

/// `df` as an Arrow IPC stream (schema, record batches, end of stream): what Python's
/// `pyarrow.ipc.open_stream` reads, so a computed frame reaches pandas without a value per row.
/// Strings are written as Arrow's `large_string` (Polars' oldest compatibility level), which every
/// pyarrow reads, rather than the newer string views.
pub fn arrow_ipc_stream(df: &polars::prelude::DataFrame) -> Result<Vec<u8>, FrameError> {
    use polars::prelude::{CompatLevel, IpcStreamWriter, SerWriter};
    let mut out = Vec::new();
    let mut df = df.clone();
    IpcStreamWriter::new(&mut out)
        .with_compat_level(CompatLevel::oldest())
        .finish(&mut df)
        .map_err(|e| FrameError::Result(format!("encoding the frame as Arrow IPC: {e}")))?;
    Ok(out)
}

impl std::fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataFrame({} partitions, {:?})",
            self.sources.len(),
            self.schema
        )
    }
}

/// Concatenates computed partitions (an empty frame of `schema` when there are none).
fn concat(
    parts: Vec<FramePart>,
    schema: &Schema,
) -> Result<polars::prelude::DataFrame, FrameError> {
    let mut out: Option<polars::prelude::DataFrame> = None;
    for part in parts {
        let df = part.into_frame();
        match &mut out {
            None => out = Some(df),
            Some(acc) => {
                acc.vstack_mut(&df)
                    .map_err(|e| FrameError::Result(format!("concatenating partitions: {e}")))?;
            }
        }
    }
    let mut df = out.unwrap_or_else(|| {
        polars::prelude::DataFrame::empty_with_schema(&schema::to_polars_schema(schema))
    });
    df.rechunk_mut();
    Ok(df)
}

/// `df.groupby(keys)`, waiting for its aggregation.
pub struct GroupBy {
    df: DataFrame,
    keys: Vec<String>,
    split_every: usize,
}

impl GroupBy {
    /// Partial aggregates combined this many at a time (Dask's `split_every`, default 8).
    pub fn split_every(mut self, n: usize) -> GroupBy {
        self.split_every = n.max(2);
        self
    }

    /// `agg({column: aggregation})`: one row per key, sorted by the keys; an output column is
    /// named after its input (or `column_agg` when a column is aggregated twice).
    pub fn agg(&self, aggs: &[(&str, Agg)]) -> Result<DataFrame, FrameError> {
        let keys: Vec<&str> = self.keys.iter().map(|k| k.as_str()).collect();
        let spec = AggSpec::new(&self.df.schema, &keys, aggs).map_err(FrameError::Invalid)?;
        let mut level = self.df.tasks(Some(Op::Partial(spec.clone())), Sink::Frame);
        while level.len() > self.split_every {
            level = level
                .chunks(self.split_every)
                .map(|parts| combine(parts, &spec, false))
                .collect();
        }
        let root = combine(&level, &spec, true);
        let schema = spec.result_schema(&self.df.schema);
        Ok(DataFrame::from_sources(schema, vec![Source::Task(root)]))
    }
}

/// A node of the groupby tree: `parts` combined (and, at the root, finished).
fn combine(parts: &[Delayed<FramePart>], spec: &AggSpec, finish: bool) -> Delayed<FramePart> {
    kernel(|deps| FrameTask::Combine {
        parts: parts.iter().map(|p| deps.input(p)).collect(),
        spec: spec.clone(),
        finish,
    })
}
