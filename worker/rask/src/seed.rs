//! The seed notebook's scalar functions (`inc`, `add`, `custom_op`, `sum`, the futures pipeline's
//! `load → process1 → process2 → save`) and a few that tests and demos use (`sleep`, `stamp`,
//! `fail`, `bytes`, `len`, `identity`): the `seed` function family.
//!
//! They take and return dynamic [`Value`]s, and each argument may be a literal or another task's
//! result ([`Operand`]); every function's arguments are one typed value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rask_core::{Family, Func, Inputs, KernelError, Operand, Value};

/// One dynamic argument.
pub type Arg = Operand<Value>;

/// `x + 1`
pub const INC: Func<Arg, Value> = Func::new("seed.inc");
/// `a + b`
pub const ADD: Func<(Arg, Arg), Value> = Func::new("seed.add");
/// `2 * x²`, the seed notebook's `custom_op`.
pub const CUSTOM_OP: Func<Arg, Value> = Func::new("seed.custom_op");
/// The sum of the arguments.
pub const SUM: Func<Vec<Arg>, Value> = Func::new("seed.sum");
/// `x` itself.
pub const IDENTITY: Func<Arg, Value> = Func::new("seed.identity");
/// Waits, then returns `value`.
pub const SLEEP: Func<Sleep, Value> = Func::new("seed.sleep");
/// Waits, then returns `[x, n]`, `n` different on every execution (see [`Stamp`]).
pub const STAMP: Func<Stamp, Value> = Func::new("seed.stamp");
/// Always fails, with the message given.
pub const FAIL: Func<String, Value> = Func::new("seed.fail");
/// A value of `n` bytes, each `fill` (for memory and spill tests).
pub const BYTES: Func<MakeBytes, Value> = Func::new("seed.bytes");
/// The length of a byte string, string or list.
pub const LEN: Func<Arg, Value> = Func::new("seed.len");
/// The value of an environment variable of the worker that runs it (`None` when unset):
/// `environ("DASK_WORKER_NAME")` says which worker ran a task.
pub const ENVIRON: Func<String, Value> = Func::new("seed.environ");
/// Allocates and touches `bytes` of memory, step by step, holds it, and returns how many bytes
/// it held (for memory-limit tests: the worker's memory grows as a real task's would).
pub const ALLOCATE: Func<Allocate, Value> = Func::new("seed.allocate");
/// The futures pipeline's first step: reads the source (here: returns it).
pub const LOAD: Func<Step, Value> = Func::new("seed.load");
/// `2x`
pub const PROCESS1: Func<Step, Value> = Func::new("seed.process1");
/// `x + 1`
pub const PROCESS2: Func<Step, Value> = Func::new("seed.process2");
/// Writes `x` to `dst` (here: returns `[dst, x]`).
pub const SAVE: Func<Save, Value> = Func::new("seed.save");

/// `sleep(seconds, value)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sleep {
    pub seconds: f64,
    pub value: Arg,
}

/// `stamp(x, seconds)`: the pid and a per-process counter make `n` differ on every execution,
/// so a test can tell a result computed once from one computed again after its copy was lost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stamp {
    pub x: Arg,
    pub seconds: f64,
}

/// `bytes(n, fill)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MakeBytes {
    pub n: u64,
    pub fill: u8,
}

/// `allocate(bytes, hold_seconds)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Allocate {
    pub bytes: u64,
    /// How long to hold the memory once it is all allocated.
    pub hold_seconds: f64,
}

/// A step of the futures pipeline: its input and how long it takes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub x: Arg,
    pub seconds: f64,
}

/// `save(x, dst)`, taking `seconds`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Save {
    pub x: Arg,
    pub dst: String,
    pub seconds: f64,
}

/// A literal argument.
pub fn lit(v: impl Into<Value>) -> Arg {
    Operand::Value(v.into())
}

/// The `seed` family, as a worker registers it.
pub fn family() -> Family {
    Family::new("seed", env!("CARGO_PKG_VERSION"))
        .function(INC, |x, i| {
            num_op("inc", &x.resolve(i)?, &Value::Int(1), Op::Add)
        })
        .function(ADD, |(a, b), i| {
            num_op("add", &a.resolve(i)?, &b.resolve(i)?, Op::Add)
        })
        .function(CUSTOM_OP, custom_op)
        .function(SUM, sum)
        .function(IDENTITY, |x, i| x.resolve(i))
        .function(SLEEP, |s, i| {
            wait("sleep", s.seconds)?;
            s.value.resolve(i)
        })
        .function(STAMP, stamp)
        .function(FAIL, |message: String, _| Err(KernelError::Failed(message)))
        .function(BYTES, |b, _| {
            let n = usize::try_from(b.n)
                .map_err(|_| KernelError::failed(format!("bytes(): {} bytes do not fit", b.n)))?;
            Ok(Value::Bytes(vec![b.fill; n].into()))
        })
        .function(LEN, len)
        .function(ALLOCATE, allocate)
        .function(ENVIRON, |var: String, _| {
            Ok(std::env::var(&var).map(Value::Str).unwrap_or(Value::None))
        })
        .function(LOAD, |s, i| {
            wait("load", s.seconds)?;
            s.x.resolve(i)
        })
        .function(PROCESS1, |s, i| {
            wait("process1", s.seconds)?;
            num_op("process1", &s.x.resolve(i)?, &Value::Int(2), Op::Mul)
        })
        .function(PROCESS2, |s, i| {
            wait("process2", s.seconds)?;
            num_op("process2", &s.x.resolve(i)?, &Value::Int(1), Op::Add)
        })
        .function(SAVE, |s, i| {
            wait("save", s.seconds)?;
            Ok(Value::List(vec![Value::Str(s.dst), s.x.resolve(i)?]))
        })
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Mul,
}

/// `a op b` on ints (checked) or floats.
fn num_op(func: &str, a: &Value, b: &Value, op: Op) -> Result<Value, KernelError> {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        let r = match op {
            Op::Add => x.checked_add(*y),
            Op::Mul => x.checked_mul(*y),
        };
        return r.map(Value::Int).ok_or_else(|| {
            KernelError::failed(format!("{func}(): integer overflow on {x} and {y}"))
        });
    }
    let float = |v: &Value| {
        v.as_float()
            .map_err(|e| KernelError::failed(format!("{func}(): {e}")))
    };
    let (x, y) = (float(a)?, float(b)?);
    Ok(Value::Float(match op {
        Op::Add => x + y,
        Op::Mul => x * y,
    }))
}

fn custom_op(x: Arg, inputs: &Inputs<'_>) -> Result<Value, KernelError> {
    let x = x.resolve(inputs)?;
    let sq = num_op("custom_op", &x, &x, Op::Mul)?;
    num_op("custom_op", &Value::Int(2), &sq, Op::Mul)
}

fn sum(items: Vec<Arg>, inputs: &Inputs<'_>) -> Result<Value, KernelError> {
    let mut acc = Value::Int(0);
    for item in &items {
        match item.resolve(inputs)? {
            // `sum([1, 2, 3])`: a list argument is summed item by item.
            Value::List(values) => {
                for v in &values {
                    acc = num_op("sum", &acc, v, Op::Add)?;
                }
            }
            v => acc = num_op("sum", &acc, &v, Op::Add)?,
        }
    }
    Ok(acc)
}

fn len(x: Arg, inputs: &Inputs<'_>) -> Result<Value, KernelError> {
    match x.resolve(inputs)? {
        Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
        Value::Str(s) => Ok(Value::Int(s.len() as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        other => Err(KernelError::failed(format!(
            "len(): {} has no length",
            other.kind()
        ))),
    }
}

fn allocate(a: Allocate, _: &Inputs<'_>) -> Result<Value, KernelError> {
    // Steps over glibc's largest mmap threshold (32 MiB), so each is its own mapping, returned
    // to the system when the task ends (the worker's memory really goes down again).
    const STEP: usize = 40 << 20;
    let total = usize::try_from(a.bytes)
        .map_err(|_| KernelError::failed(format!("allocate(): {} bytes do not fit", a.bytes)))?;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut done = 0;
    while done < total {
        let n = STEP.min(total - done);
        // Filled, so the pages are really resident (an untouched allocation is not).
        held.push(vec![1u8; n]);
        done += n;
        std::thread::sleep(Duration::from_millis(20));
    }
    wait("allocate", a.hold_seconds)?;
    let touched: usize = held.iter().map(|v| v.len()).sum();
    Ok(Value::Int(touched as i64))
}

fn stamp(s: Stamp, inputs: &Inputs<'_>) -> Result<Value, KernelError> {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let x = s.x.resolve(inputs)?;
    wait("stamp", s.seconds)?;
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let id = (u64::from(std::process::id()) << 32) | (n & 0xffff_ffff);
    Ok(Value::List(vec![x, Value::Int(id as i64)]))
}

/// Sleeps `seconds` (0 to a day).
fn wait(func: &str, seconds: f64) -> Result<(), KernelError> {
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(KernelError::failed(format!(
            "{func}(): {seconds} seconds is out of range 0..=86400"
        )));
    }
    if seconds > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(seconds));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rask_core::function::encode_payload;
    use rask_core::{Data, Encoded, Input, Registry};

    use super::*;

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(family()).unwrap();
        r
    }

    fn call<A: Serialize, R>(
        f: Func<A, R>,
        args: &A,
        inputs: &[Value],
    ) -> Result<Value, KernelError> {
        let inputs: Vec<Encoded> = inputs.iter().map(Data::encode).collect();
        let out = registry().call(f.name(), &encode_payload(args).unwrap(), &inputs)?;
        Ok(Value::decode(&out).unwrap())
    }

    #[test]
    fn seed_functions() {
        assert_eq!(call(INC, &lit(1), &[]).unwrap(), Value::Int(2));
        assert_eq!(
            call(
                ADD,
                &(lit(1), Operand::Input(Input::new(0))),
                &[Value::Float(0.5)]
            )
            .unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(call(CUSTOM_OP, &lit(3), &[]).unwrap(), Value::Int(18));
        assert_eq!(
            call(SUM, &vec![lit(vec![1i64, 2, 3])], &[]).unwrap(),
            Value::Int(6)
        );
        assert_eq!(
            call(SUM, &vec![lit(1), lit(2)], &[]).unwrap(),
            Value::Int(3)
        );
        let save = Save {
            x: lit(99),
            dst: "out-49".into(),
            seconds: 0.0,
        };
        assert_eq!(
            call(SAVE, &save, &[]).unwrap(),
            Value::from(vec![Value::from("out-49"), Value::Int(99)])
        );
        let step = Step {
            x: lit(4),
            seconds: 0.0,
        };
        assert_eq!(call(PROCESS1, &step, &[]).unwrap(), Value::Int(8));
        assert_eq!(call(PROCESS2, &step, &[]).unwrap(), Value::Int(5));
        assert_eq!(
            call(BYTES, &MakeBytes { n: 3, fill: 7 }, &[]).unwrap(),
            Value::Bytes(vec![7u8; 3].into())
        );
        assert_eq!(call(LEN, &lit("abcd"), &[]).unwrap(), Value::Int(4));
        assert_eq!(
            call(ENVIRON, &"RASK_SURELY_UNSET_VARIABLE".to_owned(), &[]).unwrap(),
            Value::None
        );
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_function() {
        assert!(
            call(INC, &lit("x"), &[])
                .unwrap_err()
                .to_string()
                .starts_with("inc(): expected float")
        );
        assert!(
            call(INC, &lit(i64::MAX), &[])
                .unwrap_err()
                .to_string()
                .contains("overflow")
        );
        let sleep = Sleep {
            seconds: -1.0,
            value: lit(()),
        };
        assert!(
            call(SLEEP, &sleep, &[])
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert_eq!(
            call(FAIL, &"boom".to_owned(), &[]).unwrap_err(),
            KernelError::Failed("boom".into())
        );
        assert!(
            call(LEN, &lit(1), &[])
                .unwrap_err()
                .to_string()
                .contains("no length")
        );
    }

    #[test]
    fn stamp_differs_on_every_execution() {
        let s = Stamp {
            x: lit(7),
            seconds: 0.0,
        };
        let a = call(STAMP, &s, &[]).unwrap();
        let b = call(STAMP, &s, &[]).unwrap();
        assert_eq!(a.as_list().unwrap()[0], Value::Int(7));
        assert_ne!(a, b);
    }
}
