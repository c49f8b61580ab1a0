//! One Python process running `runner.py`: started, spoken to over a socket on its fd 0, its
//! stdout and stderr drained into the worker's log by a thread each, and described when it dies.

use std::collections::VecDeque;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rask_core::data::TAG_PICKLE;
use rask_core::{Encoded, PythonException};

use crate::config::{Output, OutputLine, PythonConfig, Stream, Versions};
use crate::error::PythonError;

const RUNNER: &str = include_str!("runner.py");

/// How long a new process may take to say it is ready (imports on a cold disk can be slow).
const HELLO_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait on a process's socket looks whether the process is still alive: a process
/// that forked (`multiprocessing`) and died leaves its socket open in its children, so its end
/// is not always an EOF.
const POLL: Duration = Duration::from_secs(1);
/// How long a process that broke the protocol or closed its socket has to exit on its own.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Frames smaller than this are written with their header in one call.
const SMALL_FRAME: usize = 64 << 10;
/// Bytes of the stderr tail quoted when a process dies.
const TAIL_BYTES: usize = 4 << 10;
/// A line of user output longer than this is logged in pieces of this size.
const MAX_LINE: usize = 16 << 10;

/// What a task gave back.
pub(crate) enum Reply {
    /// The result, encoded with [`TAG_PICKLE`].
    Value(Encoded),
    /// The user's function (or the unpickling of its call) raised.
    Exception(PythonException),
}

/// A running runner.
pub(crate) struct Process {
    child: Child,
    interpreter: String,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    stderr: Arc<Mutex<Tail>>,
    /// Closed when the stderr thread ends (the pipe's EOF: the process is gone).
    stderr_done: mpsc::Receiver<()>,
}

impl Process {
    /// Starts a runner and waits for it to be ready. `probe`: it only says its versions and exits.
    pub(crate) fn start(
        config: &PythonConfig,
        probe: bool,
    ) -> Result<(Process, Versions), PythonError> {
        let interpreter = config.interpreter.display().to_string();
        let (ours, theirs) = UnixStream::pair().map_err(|source| PythonError::Spawn {
            interpreter: interpreter.clone(),
            source,
        })?;
        let mut cmd = Command::new(&config.interpreter);
        cmd.arg("-u").arg("-c").arg(RUNNER);
        if probe {
            cmd.arg("probe");
        }
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = cmd.spawn();
        // The command holds our copy of the child's end of the socket: closed now, so the
        // child's exit is an EOF here.
        drop(cmd);
        let mut child = spawned.map_err(|source| {
            if source.kind() == ErrorKind::NotFound {
                PythonError::NotFound {
                    interpreter: interpreter.clone(),
                }
            } else {
                PythonError::Spawn {
                    interpreter: interpreter.clone(),
                    source,
                }
            }
        })?;
        let pid = child.id();
        let writer = match ours.try_clone() {
            Ok(w) => w,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PythonError::Spawn {
                    interpreter,
                    source,
                });
            }
        };
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let (done_tx, stderr_done) = mpsc::channel();
        let spawned = drain(
            child.stdout.take(),
            child.stderr.take(),
            pid,
            &config.output,
            stderr.clone(),
            done_tx,
        );
        let mut process = Process {
            child,
            interpreter,
            reader: BufReader::with_capacity(SMALL_FRAME, ours),
            writer,
            stderr,
            stderr_done,
        };
        if let Err(source) = spawned {
            return Err(process.broken(format!("cannot start its output threads: {source}")));
        }
        let versions = process.hello()?;
        tracing::debug!(pid, interpreter = %process.interpreter, python = %versions.python, cloudpickle = %versions.cloudpickle, "Python process started");
        Ok((process, versions))
    }

    fn hello(&mut self) -> Result<Versions, PythonError> {
        let sock = self.reader.get_ref();
        let timeouts = sock
            .set_read_timeout(Some(POLL))
            .and_then(|()| sock.set_write_timeout(Some(POLL)));
        if let Err(e) = timeouts {
            return Err(self.broken(format!("cannot set timeouts on its socket: {e}")));
        }
        let started = Instant::now();
        let child = &mut self.child;
        let frame = read_frame(&mut self.reader, || {
            if started.elapsed() > HELLO_TIMEOUT {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("it was not ready after {} s", HELLO_TIMEOUT.as_secs()),
                ));
            }
            alive(child)
        });
        let (kind, body) = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return Err(self.broken("it closed its socket before it was ready".into())),
            Err(e) => return Err(self.broken(format!("waiting for its first message: {e}"))),
        };
        // `body[0]` is the tag `read_frame` puts first.
        let text = String::from_utf8_lossy(&body[1..]).into_owned();
        match kind {
            b'H' => {}
            b'E' => {
                return Err(PythonError::Unusable {
                    interpreter: self.interpreter.clone(),
                    reason: text,
                });
            }
            other => {
                return Err(
                    self.broken(format!("its first message is a {:?} frame", other as char))
                );
            }
        }
        let mut fields = text.splitn(3, ' ');
        let versions = match (fields.next(), fields.next(), fields.next()) {
            (Some(python), Some(cloudpickle), Some(rask)) => Ok(Versions {
                python: python.to_owned(),
                cloudpickle: cloudpickle.to_owned(),
                rask: (rask != "-").then(|| rask.to_owned()),
            }),
            _ => Err(format!(
                "its first message {text:?} is not `PYTHON CLOUDPICKLE RASK`"
            )),
        };
        let versions = match versions {
            Ok(v) => v,
            Err(reason) => return Err(self.broken(reason)),
        };
        Ok(versions)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (killed while idle, say).
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs one call. An `Err` means the process is broken (it died, or broke the protocol):
    /// hand the reason to [`Process::broken`].
    pub(crate) fn run(&mut self, call: &[u8], inputs: &[&[u8]]) -> Result<Reply, String> {
        self.send(call, inputs)
            .map_err(|e| format!("sending it the task: {e}"))?;
        let child = &mut self.child;
        let (kind, body) = match read_frame(&mut self.reader, || alive(child)) {
            Ok(Some(f)) => f,
            Ok(None) => return Err("it closed its socket while running the task".into()),
            Err(e) => return Err(format!("reading the task's outcome: {e}")),
        };
        match kind {
            b'R' => Ok(Reply::Value(Encoded::from_tagged_vec(body))),
            b'X' => parse_exception(&body[1..]).map(Reply::Exception),
            other => Err(format!("it answered with a {:?} frame", other as char)),
        }
    }

    fn send(&mut self, call: &[u8], inputs: &[&[u8]]) -> io::Result<()> {
        let count = u32::try_from(inputs.len())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "more than 2^32 inputs"))?;
        let (w, child) = (&mut self.writer, &mut self.child);
        let mut small = Vec::with_capacity(SMALL_FRAME);
        put_frame(&mut small, b'T', &count.to_le_bytes());
        for (kind, body) in std::iter::once((b'C', call)).chain(inputs.iter().map(|i| (b'I', *i))) {
            if small.len() + body.len() + 9 <= SMALL_FRAME {
                put_frame(&mut small, kind, body);
            } else {
                put_header(&mut small, kind, body.len());
                write_all(w, &small, || alive(child))?;
                small.clear();
                write_all(w, body, || alive(child))?;
            }
        }
        if !small.is_empty() {
            write_all(w, &small, || alive(child))?;
        }
        Ok(())
    }

    /// The error for a process that broke (`reason`): it is given a moment to exit, killed if it
    /// does not, and described by its exit status and the tail of its stderr.
    pub(crate) fn broken(&mut self, reason: String) -> PythonError {
        let pid = self.child.id();
        let deadline = Instant::now() + EXIT_GRACE;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) | Err(_) => break None,
            }
        };
        let status = match status {
            Some(s) => describe_status(s),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                "was killed by the worker".to_owned()
            }
        };
        // The last words on stderr (a fatal error's stack from faulthandler) come after the
        // exit: wait for the pipe's end, briefly (a grandchild may hold it open).
        let _ = self.stderr_done.recv_timeout(Duration::from_millis(500));
        let stderr = self
            .stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .text();
        PythonError::Died {
            pid,
            interpreter: self.interpreter.clone(),
            status,
            reason,
            stderr,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn put_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

fn put_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    put_header(out, kind, body.len());
    out.extend_from_slice(body);
}

/// `Ok` while `child` runs.
fn alive(child: &mut Child) -> io::Result<()> {
    match child.try_wait() {
        Ok(None) => Ok(()),
        // The status is in the error the caller builds (`Process::broken`).
        Ok(Some(_)) => Err(io::Error::other("the process ended")),
        Err(e) => Err(e),
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Writes all of `buf` to a socket with a write timeout, calling `waited` at each timeout (its
/// error ends the wait).
fn write_all(
    w: &mut impl Write,
    mut buf: &[u8],
    mut waited: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => waited()?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One frame: its kind, and a buffer of `[TAG_PICKLE, body...]` (the tag leads, so a result
/// becomes an [`Encoded`] without a copy). `None` at EOF before a frame starts. On a socket with
/// a read timeout, `waited` is called at each timeout; its error ends the wait.
fn read_frame(
    r: &mut impl Read,
    mut waited: impl FnMut() -> io::Result<()>,
) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 9];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => waited()?,
            Err(e) => return Err(e),
        }
    }
    let kind = head[0];
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&head[1..]);
    let len = usize::try_from(u64::from_le_bytes(len_bytes))
        .map_err(|_| io::Error::new(ErrorKind::InvalidData, "a frame larger than memory"))?;
    let mut body = Vec::new();
    body.try_reserve_exact(len.saturating_add(1)).map_err(|e| {
        io::Error::new(
            ErrorKind::OutOfMemory,
            format!("cannot hold a frame of {len} bytes: {e}"),
        )
    })?;
    body.push(TAG_PICKLE);
    // `read_to_end` keeps what it read before an error: a timeout resumes where it stopped.
    while body.len() - 1 < len {
        let missing = (len - (body.len() - 1)) as u64;
        match r.take(missing).read_to_end(&mut body) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => waited()?,
            Err(e) => return Err(e),
        }
    }
    Ok(Some((kind, body)))
}

/// An `X` frame's body: three length-prefixed strings and the pickled exception.
fn parse_exception(mut body: &[u8]) -> Result<PythonException, String> {
    let mut text = |what: &str| -> Result<String, String> {
        let bad = || format!("its exception report is cut short in the {what}");
        let (len, rest) = body.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad());
        }
        let (s, rest) = rest.split_at(len);
        body = rest;
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    let type_name = text("type")?;
    let message = text("message")?;
    let traceback = text("traceback")?;
    let pickled = (!body.is_empty()).then(|| Bytes::copy_from_slice(body));
    Ok(PythonException {
        type_name,
        message,
        traceback,
        pickled,
    })
}

/// `exited with status 3`, `was killed by signal 11 (SIGSEGV)`.
fn describe_status(s: ExitStatus) -> String {
    if let Some(code) = s.code() {
        return format!("exited with status {code}");
    }
    match s.signal() {
        Some(sig) => {
            let name = match sig {
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("was killed by signal {sig}{name}")
        }
        None => format!("ended ({s})"),
    }
}

/// The last lines of a stream.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: &str) {
        self.lines.push_back(line.to_owned());
        self.bytes += line.len();
        while self.bytes > TAIL_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Starts a thread per stream that reads it to its end, handing each line to `output`; stderr's
/// last lines also go to `tail`, and its thread drops `done` when it ends.
fn drain(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    pid: u32,
    output: &Output,
    tail: Arc<Mutex<Tail>>,
    done: mpsc::Sender<()>,
) -> io::Result<()> {
    if let Some(out) = stdout {
        let output = output.clone();
        thread::Builder::new()
            .name(format!("python-{pid}-stdout"))
            .spawn(move || {
                read_lines(out, |line| {
                    output(&OutputLine {
                        pid,
                        stream: Stream::Stdout,
                        line,
                    })
                })
            })?;
    }
    if let Some(err) = stderr {
        let output = output.clone();
        thread::Builder::new()
            .name(format!("python-{pid}-stderr"))
            .spawn(move || {
                read_lines(err, |line| {
                    tail.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                    output(&OutputLine {
                        pid,
                        stream: Stream::Stderr,
                        line,
                    })
                });
                drop(done);
            })?;
    }
    Ok(())
}

/// Reads `r` to its end, calling `f` with each line (without its newline; a line longer than
/// [`MAX_LINE`] in pieces).
fn read_lines(mut r: impl Read, mut f: impl FnMut(&str)) {
    let mut buf = vec![0u8; 64 << 10];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for chunk in buf[..n].split_inclusive(|&b| b == b'\n') {
            let (part, ends) = match chunk.split_last() {
                Some((b'\n', rest)) => (rest, true),
                _ => (chunk, false),
            };
            let mut part = part;
            while line.len() + part.len() > MAX_LINE {
                let (head, rest) = part.split_at(MAX_LINE - line.len());
                line.extend_from_slice(head);
                f(&String::from_utf8_lossy(&line));
                line.clear();
                part = rest;
            }
            line.extend_from_slice(part);
            if ends {
                f(&String::from_utf8_lossy(&line));
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        f(&String::from_utf8_lossy(&line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_cut() {
        let mut input = b"a\nbb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend_from_slice(b"\ntail");
        let mut lines = Vec::new();
        read_lines(&input[..], |l| lines.push(l.to_owned()));
        assert_eq!(lines[..2], ["a", "bb"]);
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "x".repeat(10));
        assert_eq!(lines[4], "tail");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn frames_read_whole_or_fail() {
        let mut bytes = vec![b'R'];
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        let (kind, body) = read_frame(&mut &bytes[..], || Ok(())).unwrap().unwrap();
        assert_eq!(
            (kind, &body[..]),
            (b'R', &[TAG_PICKLE, b'a', b'b', b'c'][..])
        );
        assert!(read_frame(&mut &b""[..], || Ok(())).unwrap().is_none());
        assert_eq!(
            read_frame(&mut &bytes[..5], || Ok(())).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
        assert_eq!(
            read_frame(&mut &bytes[..11], || Ok(())).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
        let mut huge = vec![b'R'];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_frame(&mut &huge[..], || Ok(())).is_err());
    }

    /// Gives its bytes a few at a time, with a timeout before each piece.
    struct Stuttering<'a> {
        bytes: &'a [u8],
        stall: bool,
    }

    impl Read for Stuttering<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.stall = !self.stall;
            if self.stall {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.bytes.len()).min(2);
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn timeouts_resume_a_frame_or_end_the_wait() {
        let mut bytes = vec![b'R'];
        bytes.extend_from_slice(&5u64.to_le_bytes());
        bytes.extend_from_slice(b"hello");
        let mut waits = 0;
        let mut r = Stuttering {
            bytes: &bytes,
            stall: false,
        };
        let (_, body) = read_frame(&mut r, || {
            waits += 1;
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(&body[1..], b"hello");
        assert!(waits >= 7, "{waits}");
        let mut r = Stuttering {
            bytes: &bytes,
            stall: false,
        };
        let err =
            read_frame(&mut r, || Err(io::Error::other("it exited with status 3"))).unwrap_err();
        assert_eq!(err.to_string(), "it exited with status 3");
    }

    #[test]
    fn exception_reports_are_checked() {
        let mut body = Vec::new();
        for s in ["ValueError", "bad", "Traceback..."] {
            body.extend_from_slice(&(s.len() as u32).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        let e = parse_exception(&body).unwrap();
        assert_eq!((e.type_name.as_str(), e.pickled), ("ValueError", None));
        body.extend_from_slice(b"\x80\x05.");
        assert_eq!(
            parse_exception(&body).unwrap().pickled.as_deref(),
            Some(&b"\x80\x05."[..])
        );
        let err = parse_exception(&body[..19]).unwrap_err();
        assert!(err.contains("in the message"), "{err}");
    }

    #[test]
    fn exit_statuses_for_people() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(11)),
            "was killed by signal 11 (SIGSEGV)"
        );
    }
}
