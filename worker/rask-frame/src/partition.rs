//! Splitting CSV input into partitions: a glob into files, files into byte blocks of at most
//! `blocksize`, and each block into the whole lines that belong to it.
//!
//! A line belongs to the block that holds its first byte, so the blocks of a file cover each of
//! its lines exactly once wherever the block boundaries fall (Dask's rule). A block's task finds
//! its lines by reading a little before its start and past its end; the client only needs the
//! file sizes. Rows are lines: a newline inside a quoted field is not supported across a block
//! boundary (the task that sees the broken row fails with a parse error naming the file).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::FrameError;

/// One partition's share of one file: the lines starting in `start..end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Block {
    /// UTF-8 (checked by [`expand_glob`]), so it travels in a task.
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    /// The first byte after the file's header line; lines before it are not data.
    pub header_end: u64,
}

/// `data/taxi.csv bytes 0..64000000`, for messages.
impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes {}..{}",
            self.path.display(),
            self.start,
            self.end
        )
    }
}

/// The files a pattern names, sorted; an error if it is malformed, matches no file, or matches
/// one whose path is not UTF-8 (tasks carry paths as text).
pub(crate) fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>, FrameError> {
    let entries = glob::glob(pattern).map_err(|e| FrameError::BadGlob {
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| FrameError::Io {
            path: e.path().to_owned(),
            what: "listing",
            source: io::Error::other(e.error().to_string()),
        })?;
        if path.is_file() {
            utf8(&path)?;
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(FrameError::NoFiles(pattern.to_owned()));
    }
    files.sort();
    Ok(files)
}

/// `path` as text, or an error: tasks carry paths as UTF-8. (The glob crate matches names as
/// text, so it never lists another; a directory given to `to_csv` may be one.)
pub(crate) fn utf8(path: &Path) -> Result<&str, FrameError> {
    path.to_str()
        .ok_or_else(|| FrameError::NonUtf8Path(path.to_owned()))
}

/// A separator the parsers can split fields at: one ASCII byte that is not part of a line
/// ending or of quoting.
pub(crate) fn check_sep(sep: u8) -> Result<(), FrameError> {
    let reason = match sep {
        b'\n' | b'\r' => "it ends lines",
        b'"' => "it quotes fields",
        128.. => "it is not an ASCII character",
        _ => return Ok(()),
    };
    Err(FrameError::BadSep {
        given: char::from(sep).to_string(),
        reason: reason.into(),
    })
}

/// Parses a field separator as a command line gives it: one ASCII character (`;`), or `\t` or
/// `tab` for a tab.
pub fn parse_sep(s: &str) -> Result<u8, FrameError> {
    let sep = match s {
        "\\t" | "tab" => b'\t',
        _ => match s.as_bytes() {
            [b] => *b,
            _ => {
                return Err(FrameError::BadSep {
                    given: s.to_owned(),
                    reason: "give one ASCII character, or \\t for a tab".into(),
                });
            }
        },
    };
    check_sep(sep)?;
    Ok(sep)
}

/// A block size a file can be split by: at least 1 byte, or none.
pub(crate) fn check_blocksize(blocksize: Option<u64>) -> Result<(), FrameError> {
    match blocksize {
        Some(0) => Err(FrameError::BadBlocksize {
            given: "0".into(),
            reason: "a block size must be at least 1 byte".into(),
        }),
        _ => Ok(()),
    }
}

/// Parses a block size: `64MB`, `64MiB`, `1000000`, or `none` (one partition per file).
pub fn parse_blocksize(s: &str) -> Result<Option<u64>, FrameError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = |reason: String| FrameError::BadBlocksize {
        given: s.to_owned(),
        reason,
    };
    let n = rask_core::units::parse_bytes(t).map_err(|e| bad(e.to_string()))?;
    if n == 0 {
        return Err(bad("a block size must be at least 1 byte".into()));
    }
    Ok(Some(n))
}

/// Byte blocks of at most `blocksize` for files of the given sizes (one per file without a
/// block size; one empty block for a file with no data, so every file is a partition).
pub(crate) fn split_blocks(files: &[(PathBuf, u64, u64)], blocksize: Option<u64>) -> Vec<Block> {
    let mut out = Vec::new();
    for (path, size, header_end) in files {
        let bs = blocksize.unwrap_or(u64::MAX).max(1);
        let mut start: u64 = 0;
        loop {
            let end = start.saturating_add(bs).min(*size);
            out.push(Block {
                path: path.clone(),
                start,
                end,
                header_end: *header_end,
            });
            if end >= *size {
                break;
            }
            start = end;
        }
    }
    out
}

/// The first position at or after `pos` where a line starts (0, or just after a `\n`), in a
/// file of `bytes`; `bytes.len()` when no line starts there.
#[cfg(test)]
pub(crate) fn next_line_start(bytes: &[u8], pos: usize) -> usize {
    if pos == 0 {
        return 0;
    }
    match memchr::memchr(b'\n', bytes.get(pos - 1..).unwrap_or(&[])) {
        Some(i) => pos + i,
        None => bytes.len(),
    }
}

/// The range of whole data lines of block `start..end` in a file of `bytes` (pure form of
/// [`read_block`], for tests).
#[cfg(test)]
pub(crate) fn block_lines(
    bytes: &[u8],
    start: usize,
    end: usize,
    header_end: usize,
) -> Range<usize> {
    let a = next_line_start(bytes, start)
        .max(header_end)
        .min(bytes.len());
    let b = if end >= bytes.len() {
        bytes.len()
    } else {
        next_line_start(bytes, end)
    };
    a..b.max(a)
}

/// [`next_line_start`] on an open file of `size` bytes, reading only from `pos - 1` onwards.
fn file_next_line_start(f: &mut File, pos: u64, size: u64) -> io::Result<u64> {
    if pos == 0 {
        return Ok(0);
    }
    if pos >= size {
        return Ok(size);
    }
    let mut at = pos - 1;
    f.seek(SeekFrom::Start(at))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(size);
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            return Ok(at + i as u64 + 1);
        }
        at += n as u64;
    }
}

/// An open block: its file and the byte range of its data lines.
fn open_block(block: &Block) -> Result<(File, Range<u64>), FrameError> {
    let io_err = |what: &'static str| {
        let path = block.path.clone();
        move |source| FrameError::Io { path, what, source }
    };
    let mut f = File::open(&block.path).map_err(io_err("opening"))?;
    let size = f.metadata().map_err(io_err("reading the size of"))?.len();
    let a = file_next_line_start(&mut f, block.start, size)
        .map_err(io_err("reading"))?
        .max(block.header_end)
        .min(size);
    let b = if block.end >= size {
        size
    } else {
        file_next_line_start(&mut f, block.end, size).map_err(io_err("reading"))?
    };
    f.seek(SeekFrom::Start(a)).map_err(io_err("reading"))?;
    Ok((f, a..b.max(a)))
}

fn shrank(block: &Block, r: &Range<u64>) -> FrameError {
    FrameError::Io {
        path: block.path.clone(),
        what: "reading",
        source: io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the file shrank while reading bytes {}..{}", r.start, r.end),
        ),
    }
}

/// The data lines of `block`: their bytes and the file offset of the first.
pub(crate) fn read_block(block: &Block) -> Result<(Vec<u8>, u64), FrameError> {
    let mut buf = Vec::new();
    let at = read_block_into(block, &mut buf)?;
    Ok((buf, at))
}

/// [`read_block`] into `buf` (cleared first), so a caller can reuse its allocation: a fresh
/// 64 MB buffer costs 16,000 page faults per block.
pub(crate) fn read_block_into(block: &Block, buf: &mut Vec<u8>) -> Result<u64, FrameError> {
    let (f, r) = open_block(block)?;
    let len = usize::try_from(r.end - r.start).map_err(|_| FrameError::Io {
        path: block.path.clone(),
        what: "reading",
        source: io::Error::other("block larger than memory"),
    })?;
    buf.clear();
    buf.reserve(len);
    f.take(len as u64)
        .read_to_end(buf)
        .map_err(|source| FrameError::Io {
            path: block.path.clone(),
            what: "reading",
            source,
        })?;
    if buf.len() != len {
        return Err(shrank(block, &r));
    }
    Ok(r.start)
}

/// [`Scan::lines`] of `block`'s data lines, streamed through a small buffer (no copy of the
/// block is kept: this is `len`'s fast path).
pub(crate) fn scan_block_lines(block: &Block) -> Result<Scan, FrameError> {
    let (mut f, r) = open_block(block)?;
    let mut s = Scan::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut remaining = r.end - r.start;
    // The last two bytes before the chunk; a virtual newline before the first line.
    let mut tail: [u8; 2] = [0, b'\n'];
    let mut last = None;
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        let n = f.read(&mut buf[..want]).map_err(|source| FrameError::Io {
            path: block.path.clone(),
            what: "reading",
            source,
        })?;
        if n == 0 {
            return Err(shrank(block, &r));
        }
        let chunk = &buf[..n];
        s.newlines += count_byte(chunk, b'\n');
        s.quotes |= memchr::memchr(b'"', chunk).is_some();
        // A blank line across the seam: tail and the chunk's first two bytes.
        let mut seam = [tail[0], tail[1], 0, 0];
        seam[2..2 + n.min(2)].copy_from_slice(&chunk[..n.min(2)]);
        let seam = &seam[..2 + n.min(2)];
        let has = |hay: &[u8]| {
            memchr::memmem::find(hay, b"\n\n").is_some()
                || memchr::memmem::find(hay, b"\n\r\n").is_some()
        };
        s.blank_lines |= has(seam) || has(chunk);
        tail = if n >= 2 {
            [chunk[n - 2], chunk[n - 1]]
        } else {
            [tail[1], chunk[0]]
        };
        last = Some(chunk[n - 1]);
        remaining -= n as u64;
    }
    s.unterminated = last.is_some_and(|b| b != b'\n');
    Ok(s)
}

/// The header line of a file (without its line ending) and the offset just after it.
pub(crate) fn read_header(path: &Path) -> Result<(String, u64), FrameError> {
    let io_err = |what: &'static str| {
        let path = path.to_owned();
        move |source| FrameError::Io { path, what, source }
    };
    let mut f = File::open(path).map_err(io_err("opening"))?;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_err("reading"))?;
        if n == 0 {
            break;
        }
        if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
            head.extend_from_slice(&buf[..=i]);
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 16 << 20 {
            return Err(FrameError::Csv {
                path: path.to_owned(),
                detail: "the header line is longer than 16 MiB".into(),
            });
        }
    }
    let end = head.len() as u64;
    let text = String::from_utf8(head).map_err(|_| FrameError::Csv {
        path: path.to_owned(),
        detail: "the header line is not UTF-8".into(),
    })?;
    let line = text.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        return Err(FrameError::Csv {
            path: path.to_owned(),
            detail: "the file has no header line (it is empty or starts with a blank line)".into(),
        });
    }
    Ok((line, end))
}

/// What a scan of some CSV bytes found: enough to count rows without parsing when the bytes
/// are plain (no quotes, no blank lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    pub newlines: u64,
    pub quotes: bool,
    pub blank_lines: bool,
    /// The bytes end without a newline (a last line without one still counts as a row).
    pub unterminated: bool,
}

impl Scan {
    /// Scans lines of CSV in memory, starting at a line start (the pure form of
    /// [`scan_block_lines`]).
    #[cfg(test)]
    pub fn lines(bytes: &[u8]) -> Scan {
        Scan {
            newlines: count_byte(bytes, b'\n'),
            quotes: memchr::memchr(b'"', bytes).is_some(),
            blank_lines: has_blank_line(bytes),
            unterminated: bytes.last().is_some_and(|&b| b != b'\n'),
        }
    }

    /// Rows in the scanned bytes when they are plain, `None` when only a parse can tell.
    pub fn plain_rows(&self) -> Option<u64> {
        (!self.quotes && !self.blank_lines).then(|| self.newlines + u64::from(self.unterminated))
    }
}

/// Whether some line of `bytes` (which start at a line start) is empty.
pub(crate) fn has_blank_line(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(b'\n' | b'\r'))
        || memchr::memmem::find(bytes, b"\n\n").is_some()
        || memchr::memmem::find(bytes, b"\n\r\n").is_some()
}

/// Occurrences of `needle` in `hay`. Counts in 16 byte-wide lanes that cannot overflow within
/// 255 rows, a shape the compiler turns into one vector compare and subtract per 16 bytes
/// (several times faster than a filter-count over u64).
pub(crate) fn count_byte(hay: &[u8], needle: u8) -> u64 {
    const LANES: usize = 16;
    let mut total = 0u64;
    for block in hay.chunks(255 * LANES) {
        let mut acc = [0u8; LANES];
        let rows = block.chunks_exact(LANES);
        let rest = rows.remainder();
        for row in rows {
            for (a, &b) in acc.iter_mut().zip(row) {
                *a += u8::from(b == needle);
            }
        }
        total += acc.iter().map(|&a| u64::from(a)).sum::<u64>();
        total += rest.iter().filter(|&&b| b == needle).count() as u64;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the tests need no RNG crate.
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn random_csv(rng: &mut Lcg) -> (Vec<u8>, usize) {
        let header = b"a,b\n";
        let mut out = header.to_vec();
        let rows = rng.below(40);
        for i in 0..rows {
            let width = rng.below(12) as usize;
            out.extend(std::iter::repeat_n(b'x', width));
            out.extend_from_slice(format!(",{i}").as_bytes());
            if i + 1 < rows || rng.below(2) == 0 {
                out.push(b'\n');
            }
        }
        (out, header.len())
    }

    #[test]
    fn blocks_cover_every_line_once_whatever_the_blocksize() {
        let mut rng = Lcg(7);
        for _ in 0..500 {
            let (bytes, header_end) = random_csv(&mut rng);
            let bs = 1 + rng.below(bytes.len() as u64 + 3);
            let blocks = split_blocks(
                &[("f".into(), bytes.len() as u64, header_end as u64)],
                Some(bs),
            );
            let mut joined = Vec::new();
            let mut last_end = header_end;
            for b in &blocks {
                let r = block_lines(&bytes, b.start as usize, b.end as usize, header_end);
                assert!(r.start == r.end || r.start == last_end, "gap or overlap");
                if r.start < r.end {
                    last_end = r.end;
                }
                joined.extend_from_slice(&bytes[r]);
            }
            assert_eq!(joined, &bytes[header_end..], "blocksize {bs}");
        }
    }

    #[test]
    fn file_reads_match_the_pure_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Lcg(11);
        for n in 0..60 {
            let (bytes, header_end) = random_csv(&mut rng);
            let path = dir.path().join(format!("{n}.csv"));
            std::fs::write(&path, &bytes).unwrap();
            let (header, end) = read_header(&path).unwrap();
            assert_eq!((header.as_str(), end), ("a,b", header_end as u64));
            let bs = 1 + rng.below(bytes.len() as u64);
            let files = [(path.clone(), bytes.len() as u64, end)];
            for b in split_blocks(&files, Some(bs)) {
                let (got, at) = read_block(&b).unwrap();
                let r = block_lines(&bytes, b.start as usize, b.end as usize, header_end);
                assert_eq!((got.as_slice(), at), (&bytes[r.clone()], r.start as u64));
            }
        }
    }

    #[test]
    fn streamed_scans_match_in_memory_scans() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        let mut rng = Lcg(5);
        for _ in 0..40 {
            // Lines of 0-3 bytes around 1 MiB seams, some blank, some with \r.
            let mut bytes = b"h\n".to_vec();
            let n = (1 << 20) - 8 + rng.below(16) as usize;
            while bytes.len() < n {
                bytes.push(b"x\r\n\n"[rng.below(4) as usize]);
            }
            std::fs::write(&path, &bytes).unwrap();
            let b = Block {
                path: path.clone(),
                start: 0,
                end: bytes.len() as u64,
                header_end: 2,
            };
            let want = Scan::lines(&bytes[2..]);
            let got = scan_block_lines(&b).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn separators_parse_from_the_command_line_or_say_why_not() {
        assert_eq!(parse_sep(",").unwrap(), b',');
        assert_eq!(parse_sep(";").unwrap(), b';');
        assert_eq!(parse_sep("\t").unwrap(), b'\t');
        assert_eq!(parse_sep("\\t").unwrap(), b'\t');
        assert_eq!(parse_sep("tab").unwrap(), b'\t');
        for (given, why) in [
            ("", "give one ASCII character"),
            (";;", "give one ASCII character"),
            ("é", "give one ASCII character"),
            ("\"", "it quotes fields"),
            ("\n", "it ends lines"),
        ] {
            let e = parse_sep(given).unwrap_err().to_string();
            assert!(
                e.contains("cannot separate fields") && e.contains(why),
                "{given:?}: {e}"
            );
        }
        assert!(
            check_sep(0xE9)
                .unwrap_err()
                .to_string()
                .contains("not an ASCII character")
        );
    }

    #[test]
    fn split_sizes() {
        let f = |size, bs| {
            split_blocks(&[("f".into(), size, 0)], bs)
                .iter()
                .map(|b| (b.start, b.end))
                .collect::<Vec<_>>()
        };
        assert_eq!(f(10, Some(4)), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(f(8, Some(4)), vec![(0, 4), (4, 8)]);
        assert_eq!(f(0, Some(4)), vec![(0, 0)]);
        assert_eq!(f(10, None), vec![(0, 10)]);
    }

    #[test]
    fn blocksizes_parse_or_say_why_not() {
        assert_eq!(parse_blocksize("64MB").unwrap(), Some(64_000_000));
        assert_eq!(parse_blocksize("1KiB").unwrap(), Some(1024));
        assert_eq!(parse_blocksize("None").unwrap(), None);
        for bad in ["0", "-1", "64XB", "", "lots"] {
            let e = parse_blocksize(bad).unwrap_err().to_string();
            assert!(e.contains("blocksize") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn globs_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let pat = format!("{}/*.csv", dir.path().display());
        assert!(matches!(expand_glob(&pat), Err(FrameError::NoFiles(p)) if p == pat));
        assert!(matches!(
            expand_glob("/tmp/[unclosed"),
            Err(FrameError::BadGlob { .. })
        ));
        std::fs::write(dir.path().join("b.csv"), "x\n").unwrap();
        std::fs::write(dir.path().join("a.csv"), "x\n").unwrap();
        std::fs::create_dir(dir.path().join("d.csv")).unwrap();
        let got = expand_glob(&pat).unwrap();
        let names: Vec<_> = got.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.csv", "b.csv"]);
        // A name that is not UTF-8 cannot travel in a task: glob does not match it, and a
        // path given otherwise is refused by name.
        use std::os::unix::ffi::OsStrExt;
        let odd = dir.path().join(std::ffi::OsStr::from_bytes(b"c\xff.csv"));
        std::fs::write(&odd, "x\n").unwrap();
        assert_eq!(expand_glob(&pat).unwrap(), got);
        let e = utf8(&odd).unwrap_err();
        assert!(matches!(&e, FrameError::NonUtf8Path(p) if *p == odd), "{e}");
        assert!(e.to_string().contains("is not UTF-8"), "{e}");
        assert_eq!(utf8(Path::new("a/b.csv")).unwrap(), "a/b.csv");
    }

    #[test]
    fn headers_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e.csv");
        std::fs::write(&empty, "").unwrap();
        assert!(
            read_header(&empty)
                .unwrap_err()
                .to_string()
                .contains("no header")
        );
        let crlf = dir.path().join("c.csv");
        std::fs::write(&crlf, "a,b\r\n1,2\r\n").unwrap();
        assert_eq!(read_header(&crlf).unwrap(), ("a,b".into(), 5));
        let missing = dir.path().join("nope.csv");
        assert!(
            read_header(&missing)
                .unwrap_err()
                .to_string()
                .contains("nope.csv")
        );
    }

    #[test]
    fn scans_count_plain_rows() {
        assert_eq!(Scan::lines(b"1,2\n3,4\n").plain_rows(), Some(2));
        assert_eq!(Scan::lines(b"1,2\n3,4").plain_rows(), Some(2));
        assert_eq!(Scan::lines(b"").plain_rows(), Some(0));
        assert_eq!(Scan::lines(b"1,2\n\n3,4\n").plain_rows(), None);
        assert_eq!(Scan::lines(b"\n3,4\n").plain_rows(), None);
        assert_eq!(Scan::lines(b"\"a\nb\",2\n").plain_rows(), None);
        assert_eq!(Scan::lines(b"1,2\n\"3\",4").plain_rows(), None);
    }

    #[test]
    fn byte_counts_match_a_plain_count() {
        let mut rng = Lcg(3);
        for len in [0usize, 1, 15, 16, 17, 4079, 4080, 4081, 100_000] {
            let hay: Vec<u8> = (0..len).map(|_| b"a\n,"[rng.below(3) as usize]).collect();
            let want = hay.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(count_byte(&hay, b'\n'), want, "{len}");
        }
        let all = vec![b'\n'; 300_000];
        assert_eq!(count_byte(&all, b'\n'), 300_000);
    }
}
