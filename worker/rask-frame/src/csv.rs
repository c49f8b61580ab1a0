//! Parsing one block of a CSV file with Polars, and saying exactly where a malformed row is.
//!
//! The fast path hands the block's bytes to Polars' CSV reader with the frame's schema and only
//! the columns the pipeline needs. Polars fails on a bad value or an extra field, and fills the
//! missing fields of a short row with nulls; when it fails or a column read holds a null,
//! [`diagnose`] walks the block row by row to name the file, line, byte offset and column of the
//! first bad row (or finds none: the nulls were empty fields).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use polars::prelude::*;

use crate::FrameError;
use crate::partition::{
    Block, count_byte, has_blank_line, read_block, read_block_into, scan_block_lines,
};
use crate::schema::{DType, Schema, to_polars_schema};

/// Parses the data lines of `block`, fields separated by `sep`, into a frame of `schema`,
/// reading only `columns` (all when `None`). Errors name the file and the row.
pub(crate) fn read_block_frame(
    block: &Block,
    sep: u8,
    schema: &Schema,
    columns: Option<&[String]>,
) -> Result<DataFrame, FrameError> {
    thread_local! {
        /// Each executor thread reuses one block buffer (parsed frames copy what they keep).
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let at = read_block_into(block, &mut buf)?;
        let out = parse(&buf, at, &block.path, sep, schema, columns);
        if buf.capacity() > 256 << 20 {
            // Do not keep an unusually large block's memory for good.
            *buf = Vec::new();
        }
        out
    })
}

/// Parses data lines, fields separated by `sep`, that start at byte `at` of `path`.
fn parse(
    bytes: &[u8],
    at: u64,
    path: &Path,
    sep: u8,
    schema: &Schema,
    columns: Option<&[String]>,
) -> Result<DataFrame, FrameError> {
    let csv_error = |detail: String| FrameError::Csv {
        path: path.to_owned(),
        detail,
    };
    let fail = |polars_error: String| -> FrameError {
        csv_error(match diagnose(bytes, at, path, sep, schema) {
            Some(row_error) => row_error,
            None => format!("bytes {}..{}: {polars_error}", at, at + bytes.len() as u64),
        })
    };
    // A block that ends inside a quoted field is refused before Polars sees it: its chunk
    // parser slices such a field as if it were closed, and panicked (polars-io 0.55) on a lone
    // opening quote at the end (found by the csv_block fuzz target).
    if memchr::memchr(b'"', bytes).is_some()
        && let Some(row) = open_quote_at_end(bytes, sep)
    {
        let where_ = line_label(path, at, count_byte(&bytes[..row], b'\n'));
        return Err(csv_error(format!(
            "{where_} (byte offset {}): a quoted field is not closed before the end of the data",
            at + row as u64
        )));
    }
    let df = parse_polars(bytes, sep, schema, columns).map_err(|e| fail(e.to_string()))?;
    // Polars fills the missing fields of a short row with nulls: a null among the columns read
    // is the only trace, and then the row-by-row pass tells a short row from an empty field.
    let suspicious = df.columns().iter().any(|c| c.null_count() > 0);
    if suspicious {
        if let Some(row_error) = diagnose(bytes, at, path, sep, schema) {
            return Err(csv_error(row_error));
        }
        // The chunk parser reads a blank line as a row of nulls; pandas, Dask and `len` skip
        // it. (Only outside quotes: with quotes a blank line may be inside a field.)
        if memchr::memchr(b'"', bytes).is_none() && has_blank_line(bytes) {
            let kept: Vec<u8> = bytes
                .split_inclusive(|&b| b == b'\n')
                .filter(|line| !matches!(*line, b"\n" | b"\r\n"))
                .flatten()
                .copied()
                .collect();
            return parse_polars(&kept, sep, schema, columns).map_err(|e| fail(e.to_string()));
        }
    }
    Ok(df)
}

/// Polars' CSV parser on whole lines, single-threaded, reading the `columns` of `schema`.
///
/// This calls the chunk parser that Polars' `CsvReader` runs per chunk (exported as
/// `_csv_read_internal`, outside Polars' semver promise; pinned by the 0.55 requirement), not
/// the reader itself: the reader first counts the lines of the whole buffer with a quote-aware
/// pass to cut it into chunks for its thread pool, which was a sixth of a worker's time and buys
/// nothing in a task that has one thread. Rows are preallocated from a newline count.
fn parse_polars(
    bytes: &[u8],
    sep: u8,
    schema: &Schema,
    columns: Option<&[String]>,
) -> PolarsResult<DataFrame> {
    let pschema = to_polars_schema(schema);
    let projection: Vec<usize> = match columns {
        None => (0..schema.len()).collect(),
        Some(cols) => {
            let mut idx = cols
                .iter()
                .map(|c| pschema.try_index_of(c))
                .collect::<PolarsResult<Vec<usize>>>()?;
            idx.sort_unstable();
            idx.dedup();
            idx
        }
    };
    // The reader checks UTF-8 once per chunk when it holds strings; so do we, for the string
    // columns actually read.
    if projection.iter().any(|&i| schema[i].1 == DType::Str)
        && !_csv_read_internal::validate_utf8(bytes)
    {
        polars_bail!(ComputeError: "invalid utf-8 sequence");
    }
    let options = CsvParseOptions::default().with_separator(sep);
    let rows = count_byte(bytes, b'\n') as usize + 1;
    _csv_read_internal::read_chunk(
        bytes,
        &options,
        &pschema,
        false,
        &projection,
        0,
        rows,
        None,
        usize::MAX,
        bytes.len(),
        Some(0),
    )
}

/// The number of data rows of `block` (fields separated by `sep`): counted without parsing when
/// its bytes hold no quote and no blank line, parsed (one column) otherwise. Values are not
/// checked.
pub(crate) fn count_block_rows(block: &Block, sep: u8, schema: &Schema) -> Result<u64, FrameError> {
    let scan = scan_block_lines(block)?;
    if let Some(rows) = scan.plain_rows() {
        return Ok(rows);
    }
    let (bytes, at) = read_block(block)?;
    let first: Vec<String> = schema.iter().take(1).map(|(n, _)| n.clone()).collect();
    Ok(parse(&bytes, at, &block.path, sep, schema, Some(&first))?.height() as u64)
}

/// The first malformed row of the data lines at byte `at` of `path`, as `line N (byte offset
/// M): what is wrong`: a row with another number of fields than the header, or a field that is
/// not of its column's type. `None` if every row is well formed.
fn diagnose(bytes: &[u8], at: u64, path: &Path, sep: u8, schema: &Schema) -> Option<String> {
    let mut row_start = 0usize;
    let mut line_in_block = 0u64;
    while row_start < bytes.len() {
        let (fields, row_end, newlines) = split_row(bytes, row_start, sep);
        let row = &bytes[row_start..row_end];
        let blank = row.iter().all(|&b| b == b'\r' || b == b'\n');
        if !blank && let Some(problem) = check_row(&fields, schema) {
            let where_ = line_label(path, at, line_in_block);
            return Some(format!(
                "{where_} (byte offset {}): {problem}",
                at + row_start as u64
            ));
        }
        line_in_block += newlines;
        row_start = row_end;
    }
    None
}

/// Where the row starts whose quoted field `bytes` ends inside, if they do. As Polars reads
/// CSV: a quote opens a quoted field only at the field's start, and inside one `""` is a quote
/// and any other quote closes it.
fn open_quote_at_end(bytes: &[u8], sep: u8) -> Option<usize> {
    let mut row_start = 0;
    let mut field_start = true;
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if b == b'"' && field_start {
            in_quotes = true;
        } else if b == b'\n' {
            row_start = i + 1;
        }
        field_start = !in_quotes && (b == sep || b == b'\n');
        i += 1;
    }
    in_quotes.then_some(row_start)
}

/// The fields of the row starting at `start`, separated by `sep` (quotes honoured, `""` inside
/// quotes is a quote), the offset just past its line ending, and the newlines it spans.
fn split_row(bytes: &[u8], start: usize, sep: u8) -> (Vec<String>, usize, u64) {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut in_quotes = false;
    let mut newlines = 0;
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        match b {
            b'"' if in_quotes && bytes.get(i) == Some(&b'"') => {
                field.push(b'"');
                i += 1;
            }
            b'"' => in_quotes = !in_quotes,
            b'\n' if in_quotes => {
                newlines += 1;
                field.push(b);
            }
            b'\n' => {
                newlines += 1;
                break;
            }
            _ if b == sep && !in_quotes => {
                fields.push(String::from_utf8_lossy(&field).into_owned());
                field.clear();
            }
            _ => field.push(b),
        }
    }
    if field.last() == Some(&b'\r') {
        field.pop();
    }
    fields.push(String::from_utf8_lossy(&field).into_owned());
    (fields, i, newlines)
}

fn check_row(fields: &[String], schema: &Schema) -> Option<String> {
    if fields.len() != schema.len() {
        let detail = if fields.len() < schema.len() {
            format!("column {:?} is missing", schema[fields.len()].0)
        } else {
            format!(
                "field {} is past the last column {:?}",
                schema.len() + 1,
                schema.last().map(|(n, _)| n.as_str()).unwrap_or("")
            )
        };
        return Some(format!(
            "{} fields where the header has {}: {detail}",
            fields.len(),
            schema.len()
        ));
    }
    for (value, (name, t)) in fields.iter().zip(schema) {
        if value.is_empty() {
            continue;
        }
        let ok = match t {
            DType::Int64 => value.parse::<i64>().is_ok(),
            DType::Float64 => value.parse::<f64>().is_ok(),
            DType::Bool => {
                value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
            }
            DType::Str => true,
        };
        if !ok {
            let mut shown = value.clone();
            if shown.len() > 40 {
                let cut = (0..=40)
                    .rev()
                    .find(|&i| shown.is_char_boundary(i))
                    .unwrap_or(0);
                shown.truncate(cut);
                shown.push_str("...");
            }
            return Some(format!("column {name:?}: {shown:?} is not a {t}"));
        }
    }
    None
}

/// The 1-based line number of the line starting at byte `at` of `path` (line 1 is the header).
/// "line N" for the line `in_block` lines past byte `at` of `path` ("line ?" if the file cannot
/// be read again).
fn line_label(path: &Path, at: u64, in_block: u64) -> String {
    match line_of(path, at) {
        Ok(l) => format!("line {}", l + in_block),
        Err(_) => "line ?".into(),
    }
}

fn line_of(path: &Path, at: u64) -> std::io::Result<u64> {
    let mut f = File::open(path)?.take(at);
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 1;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        vec![
            ("id".into(), DType::Int64),
            ("x".into(), DType::Float64),
            ("name".into(), DType::Str),
        ]
    }

    fn write(content: &str) -> (tempfile::TempDir, std::path::PathBuf, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, content).unwrap();
        let header_end = content.find('\n').unwrap() as u64 + 1;
        (dir, path, header_end)
    }

    fn whole(path: &Path, header_end: u64) -> Block {
        let size = std::fs::metadata(path).unwrap().len();
        Block {
            path: path.to_owned(),
            start: 0,
            end: size,
            header_end,
        }
    }

    #[test]
    fn good_blocks_parse_with_projection_quotes_and_nulls() {
        let (_d, path, h) = write("id,x,name\n1,2.5,a\n2,,\"b,c\"\n3,1e3,\"say \"\"hi\"\"\"\n");
        let df = read_block_frame(&whole(&path, h), b',', &schema(), None).unwrap();
        assert_eq!(df.shape(), (3, 3));
        assert_eq!(df.column("x").unwrap().null_count(), 1);
        let names: Vec<_> = df.column("name").unwrap().str().unwrap().iter().collect();
        assert_eq!(names, [Some("a"), Some("b,c"), Some("say \"hi\"")]);
        let only =
            read_block_frame(&whole(&path, h), b',', &schema(), Some(&["x".into()])).unwrap();
        assert_eq!(only.get_column_names(), ["x"]);

        let (_d, path, h) = write("id,x,name\r\n1,2.5,a\r\n2,,b\r\n");
        let df = read_block_frame(&whole(&path, h), b',', &schema(), None).unwrap();
        let names: Vec<_> = df.column("name").unwrap().str().unwrap().iter().collect();
        assert_eq!(names, [Some("a"), Some("b")], "CRLF line endings");
    }

    #[test]
    fn a_quoted_field_left_open_at_the_end_is_an_error_not_a_panic() {
        // The csv_block fuzz target's input (a lone quote ends the data): Polars' chunk parser
        // panicked on it.
        let text = "id,x,name\n1,2.5,x\n6,4,\"q,r\"\n5,\"";
        let (_d, path, h) = write(text);
        let e = read_block_frame(&whole(&path, h), b',', &schema(), None)
            .unwrap_err()
            .to_string();
        let offset = text.rfind("5,").unwrap();
        assert!(e.contains("t.csv"), "{e}");
        assert!(
            e.contains(&format!("line 4 (byte offset {offset})")) && e.contains("not closed"),
            "{e}"
        );
        // Left open further back, the rest of the data inside it.
        let (_d, path, h) = write("id,x,name\n1,2.5,\"abc\n2,3,d\n");
        let e = read_block_frame(&whole(&path, h), b',', &schema(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("not closed"), "{e}");
        // Quotes that are closed, doubled, or inside a field (not at its start) are data.
        assert_eq!(
            open_quote_at_end(b"1,\"a\"\"b\",c\n2,12\" pipe,d\n", b','),
            None
        );
        assert_eq!(open_quote_at_end(b"1,\"a\nb\",c\n", b','), None);
        assert_eq!(open_quote_at_end(b"1;x\n2;\"", b';'), Some(4));
    }

    #[test]
    fn malformed_rows_name_file_line_offset_and_column() {
        let text = "id,x,name\n1,2.5,a\n2,oops,b\n";
        let (_d, path, h) = write(text);
        let e = read_block_frame(&whole(&path, h), b',', &schema(), None)
            .unwrap_err()
            .to_string();
        let offset = text.find("2,oops").unwrap();
        assert!(e.contains("t.csv"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains(&format!("byte offset {offset}")), "{e}");
        assert!(e.contains("column \"x\": \"oops\" is not a float64"), "{e}");

        let (_d, path, h) = write("id,x,name\n1,2.5,a\n2,3.5\n4,1,c\n");
        let e = read_block_frame(&whole(&path, h), b',', &schema(), Some(&["name".into()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("column \"name\" is missing"),
            "{e}"
        );
        // A short row whose missing fields are not read is not seen (as unread values).
        assert!(read_block_frame(&whole(&path, h), b',', &schema(), Some(&["id".into()])).is_ok());

        let (_d, path, h) = write("id,x,name\n1,2.5,a,extra\n");
        let e = read_block_frame(&whole(&path, h), b',', &schema(), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("4 fields where the header has 3"),
            "{e}"
        );

        let (_d, path, h) = write("id,x,name\n1,2.5,a\n1.5,2,b\n");
        let e = read_block_frame(&whole(&path, h), b',', &schema(), Some(&["id".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("column \"id\": \"1.5\" is not a int64"), "{e}");
        // Like Polars' own projection pushdown, columns that are not read are not checked.
        assert!(read_block_frame(&whole(&path, h), b',', &schema(), Some(&["x".into()])).is_ok());
    }

    #[test]
    fn other_separators_split_fields_and_name_bad_columns() {
        for sep in [b'\t', b';', b'|'] {
            let s = char::from(sep);
            // The file and one block of all of it, fields separated by `sep`.
            let block_of = |text: &str| {
                let (dir, path, h) = write(text);
                (dir, whole(&path, h))
            };
            let text = format!("id{s}x{s}name\n1{s}2.5{s}a,b\n2{s}{s}\"c{s}d\"\n");
            let (_d, block) = block_of(&text);
            let df = read_block_frame(&block, sep, &schema(), None).unwrap();
            assert_eq!(df.shape(), (2, 3), "{s:?}");
            let names: Vec<_> = df.column("name").unwrap().str().unwrap().iter().collect();
            // A comma is data under another separator; a quoted separator is data too.
            assert_eq!(
                names,
                [Some("a,b"), Some(format!("c{s}d").as_str())],
                "{s:?}"
            );
            assert_eq!(df.column("x").unwrap().null_count(), 1, "{s:?}");

            let text = format!("id{s}x{s}name\n1{s}2.5{s}a\n2{s}oops{s}b\n");
            let (_d, block) = block_of(&text);
            let e = read_block_frame(&block, sep, &schema(), None)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 3") && e.contains("column \"x\": \"oops\" is not a float64"),
                "{s:?}: {e}"
            );
        }
        // The same tab-separated text read with the default comma is one column per line.
        let (_d, path, h) = write("id\tx\tname\n1\t2.5\ta\n");
        let e = read_block_frame(&whole(&path, h), b',', &schema(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 fields where the header has 3"), "{e}");
    }

    #[test]
    fn a_later_block_reports_the_line_in_the_file() {
        let mut text = String::from("id,x,name\n");
        for i in 0..100 {
            text.push_str(&format!("{i},{i}.5,n{i}\n"));
        }
        text.push_str("100,bad,n\n");
        let (_d, path, h) = write(&text);
        let size = text.len() as u64;
        let block = Block {
            path: path.clone(),
            start: size - 30,
            end: size,
            header_end: h,
        };
        let e = read_block_frame(&block, b',', &schema(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 102"), "{e}");
        assert!(
            e.contains(&format!("byte offset {}", text.find("100,bad").unwrap())),
            "{e}"
        );
    }

    #[test]
    fn counts_agree_with_parsing() {
        for text in [
            "id,x,name\n1,2,a\n2,3,b\n",
            "id,x,name\n1,2,a\n2,3,b",
            "id,x,name\n",
            "id,x,name\n1,2,\"a\nb\"\n2,3,b\n",
            "id,x,name\n1,2,a\n\n2,3,b\n",
            "id,x,name\r\n1,2,a\r\n2,3,b\r\n",
        ] {
            let (_d, path, h) = write(text);
            let b = whole(&path, h);
            let parsed = read_block_frame(&b, b',', &schema(), None)
                .unwrap()
                .height() as u64;
            assert_eq!(
                count_block_rows(&b, b',', &schema()).unwrap(),
                parsed,
                "{text:?}"
            );
            let lines = text
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .count() as u64;
            let quoted_newlines = u64::from(text.contains("\"a\nb\""));
            assert_eq!(parsed, lines - quoted_newlines, "{text:?}");
        }
    }
}
