//! Partitioned dataframes: `read_csv` over a glob split into byte blocks and `read_parquet` into
//! runs of row groups, column selection, boolean filters, `groupby().agg()` as partial
//! aggregates combined in a tree, `len`, `head`, `compute`, and `to_csv`/`to_parquet` per
//! partition.
//!
//! A [`DataFrame`] is lazy: a list of partition inputs (a CSV block, Parquet rows or a task)
//! and the steps to apply to each. Building one does no work beyond reading the files' headers
//! (or metadata) and a sample; calls that need data (`len`, `compute`, `head`, `to_csv`, ...)
//! build a task graph whose partition tasks run the whole pipeline at once (see [`plan`]) and
//! run it on a cluster.
//! Partitions are Polars frames and travel between processes as Arrow IPC.
//!
//! ```no_run
//! # async fn demo(client: &rask::client::Client) -> Result<(), rask::frame::FrameError> {
//! use rask::frame::{read_csv, ReadCsvOptions, Agg, col};
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

mod csv;
mod groupby;
pub mod kernels;
mod parquet;
mod part;
pub mod partition;
mod plan;
pub mod taxi;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use polars::prelude::{CsvReadOptions, SerReader};

use crate::client::delayed::{DArg, Delayed, delayed};
use crate::client::{Client, ClientError};
use crate::value::Value;

pub use groupby::{Agg, AggSpec};
pub use part::FramePart;
pub use partition::Block;
pub use plan::{CmpOp, Col, DType, Expr, Lit, Schema, col};
use plan::{Op, Plan, Sink};

/// Why a dataframe could not be built or computed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad glob pattern {pattern:?}: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("no file matches {0:?}")]
    NoFiles(String),
    #[error("bad blocksize {given:?}: {reason}")]
    BadBlocksize { given: String, reason: String },
    #[error("sep {given:?} cannot separate fields: {reason}")]
    BadSep { given: String, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Csv { path: PathBuf, detail: String },
    /// A Parquet file that cannot be read, or whose columns do not fit a frame.
    #[error("{0}")]
    Parquet(String),
    /// A column, filter or aggregation that does not fit the frame.
    #[error("{0}")]
    Invalid(String),
    /// A task failed (a malformed row, a missing file, ...): the cluster's message.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unexpected task result: {0}")]
    Result(String),
}

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
enum Input {
    Csv(Block),
    /// A Parquet file's rows: some of its row groups, or all.
    Parquet(PathBuf, parquet::Rows),
    Task(Delayed),
}

/// A lazy partitioned dataframe.
#[derive(Clone)]
pub struct DataFrame {
    /// The schema of every partition's input.
    input_schema: Schema,
    /// The schema after `ops`.
    schema: Schema,
    inputs: Vec<Input>,
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
    let inputs = partition::split_blocks(&sized, options.blocksize, options.sep)
        .into_iter()
        .map(Input::Csv)
        .collect();
    Ok(DataFrame {
        input_schema: schema.clone(),
        schema,
        inputs,
        ops: Vec::new(),
    })
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
    let mut inputs = Vec::new();
    let mut first: Option<(&Path, Schema)> = None;
    for path in &files {
        let (schema, groups) =
            parquet::file_layout(path, options.columns.as_deref()).map_err(FrameError::Parquet)?;
        inputs.extend(
            parquet::split_row_groups(&groups, options.blocksize)
                .into_iter()
                .map(|rows| Input::Parquet(path.clone(), rows)),
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
    Ok(DataFrame {
        input_schema: schema.clone(),
        schema,
        inputs,
        ops: Vec::new(),
    })
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
    pub fn columns(&self) -> Vec<&str> {
        self.schema.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn dtypes(&self) -> &Schema {
        &self.schema
    }

    pub fn npartitions(&self) -> usize {
        self.inputs.len()
    }

    /// The CSV blocks behind the partitions (empty for computed frames).
    pub fn blocks(&self) -> Vec<&Block> {
        self.inputs
            .iter()
            .filter_map(|i| match i {
                Input::Csv(b) => Some(b),
                Input::Parquet(..) | Input::Task(_) => None,
            })
            .collect()
    }

    fn with_op(&self, op: Op) -> DataFrame {
        let mut out = self.clone();
        out.ops.push(op);
        out.schema = plan::output_schema(&self.input_schema, &out.ops);
        out
    }

    /// `df[cols]`: these columns, in this order.
    pub fn select(&self, cols: &[&str]) -> Result<DataFrame, FrameError> {
        for c in cols {
            plan::lookup(&self.schema, c).map_err(FrameError::Invalid)?;
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

    /// `df.groupby(keys)`; aggregate with [`GroupBy::agg`].
    pub fn groupby(&self, keys: &[&str]) -> Result<GroupBy, FrameError> {
        for k in keys {
            plan::lookup(&self.schema, k).map_err(FrameError::Invalid)?;
        }
        Ok(GroupBy {
            df: self.clone(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            split_every: 8,
        })
    }

    /// One task per partition, running the pipeline into `sink`.
    fn tasks(&self, extra: Option<Op>, sink: Option<Sink>) -> Vec<Delayed> {
        let mut ops = self.ops.clone();
        ops.extend(extra);
        let plan = Plan { ops, sink };
        let plan_json = plan.to_json();
        let schema_json = serde_json::to_string(&self.input_schema)
            .unwrap_or_else(|e| unreachable!("a schema is plain data: {e}"));
        self.inputs
            .iter()
            .map(|input| match input {
                Input::Csv(b) => delayed(
                    "frame_read_csv",
                    vec![
                        b.path.to_string_lossy().into_owned().into(),
                        (b.start as i64).into(),
                        (b.end as i64).into(),
                        (b.header_end as i64).into(),
                        schema_json.clone().into(),
                        plan_json.clone().into(),
                        char::from(b.sep).to_string().into(),
                    ],
                ),
                Input::Parquet(path, rows) => {
                    let mut args: Vec<DArg> = vec![
                        path.to_string_lossy().into_owned().into(),
                        schema_json.clone().into(),
                        plan_json.clone().into(),
                    ];
                    if let Some((start, count)) = rows {
                        args.extend([(*start as i64).into(), (*count as i64).into()]);
                    }
                    delayed("frame_read_parquet", args)
                }
                Input::Task(d) if plan == Plan::default() => d.clone(),
                Input::Task(d) => delayed("frame_apply", vec![d.into(), plan_json.clone().into()]),
            })
            .collect()
    }

    /// The partitions as delayed values (each a [`Value::Frame`]).
    pub fn partitions(&self) -> Vec<Delayed> {
        self.tasks(None, None)
    }

    /// The number of rows. A CSV partition with no filter counts its lines without parsing.
    pub async fn len(&self, client: &Client) -> Result<u64, FrameError> {
        let counts = self.tasks(None, Some(Sink::Len));
        let total = delayed("sum", vec![counts.into()]);
        let v = client.compute(&total).result().await?;
        let n = v.as_int().map_err(|e| FrameError::Result(e.to_string()))?;
        u64::try_from(n).map_err(|_| FrameError::Result(format!("negative length {n}")))
    }

    /// The whole frame, partitions concatenated in order, on this process.
    pub async fn compute(&self, client: &Client) -> Result<polars::prelude::DataFrame, FrameError> {
        let futures = client.compute_many(&self.partitions());
        let values = client.gather(&futures).await?;
        concat(values, &self.schema)
    }

    /// The first `n` rows, computing partitions in order until there are enough.
    pub async fn head(
        &self,
        n: usize,
        client: &Client,
    ) -> Result<polars::prelude::DataFrame, FrameError> {
        let mut got: Vec<Value> = Vec::new();
        let mut have = 0;
        for i in 0..self.inputs.len() {
            if have >= n {
                break;
            }
            let mut one = self.clone();
            one.inputs = vec![self.inputs[i].clone()];
            let task = one.tasks(Some(Op::Head(n - have)), None);
            let v = client.compute_many(&task);
            let part = client.gather(&v).await?;
            for p in &part {
                if let Value::Frame(f) = p {
                    have += f.frame().height();
                }
            }
            got.extend(part);
        }
        concat(got, &self.schema)
    }

    /// Writes each partition to `dir/part-NNNNN.csv` (with a header); returns the paths.
    pub async fn to_csv(&self, dir: &Path, client: &Client) -> Result<Vec<PathBuf>, FrameError> {
        self.write(dir, "csv", client).await
    }

    /// Writes each partition to `dir/part-NNNNN.parquet`; returns the paths.
    pub async fn to_parquet(
        &self,
        dir: &Path,
        client: &Client,
    ) -> Result<Vec<PathBuf>, FrameError> {
        self.write(dir, "parquet", client).await
    }

    async fn write(
        &self,
        dir: &Path,
        ext: &str,
        client: &Client,
    ) -> Result<Vec<PathBuf>, FrameError> {
        let paths: Vec<PathBuf> = (0..self.inputs.len())
            .map(|i| dir.join(format!("part-{i:05}.{ext}")))
            .collect();
        let mut tasks = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let path = p.to_string_lossy().into_owned();
            let sink = if ext == "csv" {
                Sink::Csv(path)
            } else {
                Sink::Parquet(path)
            };
            let mut one = self.clone();
            one.inputs = vec![self.inputs[i].clone()];
            tasks.extend(one.tasks(None, Some(sink)));
        }
        let futures = client.compute_many(&tasks);
        client.gather(&futures).await?;
        Ok(paths)
    }
}

impl std::fmt::Debug for DataFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DataFrame({} partitions, {:?})",
            self.inputs.len(),
            self.schema
        )
    }
}

/// Concatenates computed partitions (an empty frame of `schema` when there are none).
fn concat(values: Vec<Value>, schema: &Schema) -> Result<polars::prelude::DataFrame, FrameError> {
    let mut out: Option<polars::prelude::DataFrame> = None;
    for v in values {
        let df = match v {
            Value::Frame(f) => f.into_frame(),
            other => {
                return Err(FrameError::Result(format!(
                    "expected a frame, got {}",
                    other.kind()
                )));
            }
        };
        match &mut out {
            None => out = Some(df),
            Some(acc) => {
                acc.vstack_mut(&df)
                    .map_err(|e| FrameError::Result(format!("concatenating partitions: {e}")))?;
            }
        }
    }
    let mut df = out.unwrap_or_else(|| {
        polars::prelude::DataFrame::empty_with_schema(&plan::to_polars_schema(schema))
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
        let spec_json = serde_json::to_string(&spec)
            .unwrap_or_else(|e| unreachable!("an aggregation is plain data: {e}"));
        let mut level = self.df.tasks(Some(Op::Partial(spec.clone())), None);
        while level.len() > self.split_every {
            level = level
                .chunks(self.split_every)
                .map(|c| {
                    delayed(
                        "frame_combine",
                        vec![c.to_vec().into(), spec_json.clone().into(), false.into()],
                    )
                })
                .collect();
        }
        let root = delayed(
            "frame_combine",
            vec![DArg::from(level), spec_json.into(), true.into()],
        );
        let schema = spec.result_schema(&self.df.schema);
        Ok(DataFrame {
            input_schema: schema.clone(),
            schema,
            inputs: vec![Input::Task(root)],
            ops: Vec::new(),
        })
    }
}
