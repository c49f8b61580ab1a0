//! The functions tasks can run. They are compiled into the engine, so a client and the worker
//! image it talks to agree on them by name.

use std::time::Duration;

use crate::value::{Value, ValueError};

/// A task function: resolved arguments in, a value or an error message out.
pub type TaskFn = fn(&[Value]) -> Result<Value, String>;

/// A family of task functions by name; each collection (arrays, dataframes) brings its own.
pub type Table = &'static [(&'static str, TaskFn)];

/// Every table the engine knows. Names are unique across tables (a unit test checks).
const TABLES: &[Table] = &[CORE];

fn all() -> impl Iterator<Item = &'static (&'static str, TaskFn)> {
    TABLES.iter().flat_map(|t| t.iter())
}

/// Looks a function up by name.
pub fn lookup(name: &str) -> Option<TaskFn> {
    all().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Every registered name, for error messages and `--help`.
pub fn names() -> impl Iterator<Item = &'static str> {
    all().map(|(n, _)| *n)
}

/// The scalar functions of the seed's delayed and futures examples.
const CORE: Table = &[
    ("inc", inc),
    ("add", add),
    ("custom_op", custom_op),
    ("sum", sum),
    ("identity", identity),
    ("sleep", sleep),
    ("fail", fail),
    ("stamp", stamp),
    ("load", load),
    ("process1", process1),
    ("process2", process2),
    ("save", save),
    ("bytes", make_bytes),
    ("len", len),
];

fn arg(args: &[Value], i: usize, func: &str) -> Result<Value, String> {
    args.get(i).cloned().ok_or_else(|| {
        format!(
            "{func}() takes at least {} argument(s), got {}",
            i + 1,
            args.len()
        )
    })
}

fn type_err(func: &str, e: ValueError) -> String {
    format!("{func}(): {e}")
}

fn num_op(
    func: &str,
    a: &Value,
    b: &Value,
    fi: fn(i64, i64) -> Option<i64>,
    ff: fn(f64, f64) -> f64,
) -> Result<Value, String> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => fi(*x, *y)
            .map(Value::Int)
            .ok_or_else(|| format!("{func}(): integer overflow on {x} and {y}")),
        _ => Ok(Value::Float(ff(
            a.as_float().map_err(|e| type_err(func, e))?,
            b.as_float().map_err(|e| type_err(func, e))?,
        ))),
    }
}

/// `x + 1`
fn inc(args: &[Value]) -> Result<Value, String> {
    num_op(
        "inc",
        &arg(args, 0, "inc")?,
        &Value::Int(1),
        i64::checked_add,
        |a, b| a + b,
    )
}

/// `a + b`
fn add(args: &[Value]) -> Result<Value, String> {
    num_op(
        "add",
        &arg(args, 0, "add")?,
        &arg(args, 1, "add")?,
        i64::checked_add,
        |a, b| a + b,
    )
}

/// `2 * x²`, the seed notebook's `custom_op`.
fn custom_op(args: &[Value]) -> Result<Value, String> {
    let x = arg(args, 0, "custom_op")?;
    let sq = num_op("custom_op", &x, &x, i64::checked_mul, |a, b| a * b)?;
    num_op(
        "custom_op",
        &Value::Int(2),
        &sq,
        i64::checked_mul,
        |a, b| a * b,
    )
}

/// Sum of a list (or of all arguments when there is more than one).
fn sum(args: &[Value]) -> Result<Value, String> {
    let items: &[Value] = match args {
        [Value::List(items)] => items,
        _ => args,
    };
    items.iter().try_fold(Value::Int(0), |acc, v| {
        num_op("sum", &acc, v, i64::checked_add, |a, b| a + b)
    })
}

fn identity(args: &[Value]) -> Result<Value, String> {
    arg(args, 0, "identity")
}

/// `sleep(seconds, value=None)`: waits, then returns `value`.
fn sleep(args: &[Value]) -> Result<Value, String> {
    let secs = arg(args, 0, "sleep")?
        .as_float()
        .map_err(|e| type_err("sleep", e))?;
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("sleep(): {secs} seconds is out of range 0..=86400"));
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    Ok(args.get(1).cloned().unwrap_or(Value::None))
}

/// `stamp(x, seconds)`: sleeps, then returns `[x, n]` where `n` differs on every execution (the
/// process id and a per-process counter), so a test can tell a result computed once from one
/// computed again after its copy was lost.
fn stamp(args: &[Value]) -> Result<Value, String> {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let x = arg(args, 0, "stamp")?;
    let secs = match args.get(1) {
        Some(v) => v.as_float().map_err(|e| type_err("stamp", e))?,
        None => 0.0,
    };
    sleep(&[Value::Float(secs)])?;
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = (u64::from(std::process::id()) << 32) | (n & 0xffff_ffff);
    Ok(Value::List(vec![x, Value::Int(id as i64)]))
}

/// Always raises, with the message given (for tests of error propagation).
fn fail(args: &[Value]) -> Result<Value, String> {
    let msg = match args.first() {
        Some(Value::Str(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "failed on purpose".to_owned(),
    };
    Err(msg)
}

/// `bytes(n, fill)`: a value of `n` bytes, each `fill` (for memory and spill tests).
fn make_bytes(args: &[Value]) -> Result<Value, String> {
    let n = arg(args, 0, "bytes")?
        .as_int()
        .map_err(|e| type_err("bytes", e))?;
    let fill = args
        .get(1)
        .map(Value::as_int)
        .transpose()
        .map_err(|e| type_err("bytes", e))?
        .unwrap_or(0);
    let n = usize::try_from(n).map_err(|_| format!("bytes(): negative size {n}"))?;
    Ok(Value::Bytes(vec![fill as u8; n].into()))
}

/// Length of a byte string, string or list.
fn len(args: &[Value]) -> Result<Value, String> {
    match arg(args, 0, "len")? {
        Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
        Value::Str(s) => Ok(Value::Int(s.len() as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        other => Err(format!("len(): {} has no length", other.kind())),
    }
}

/// The seed notebook's futures pipeline: each step takes `PIPELINE_STEP` (an optional last
/// argument overrides it, in seconds).
const PIPELINE_STEP: f64 = 0.2;

fn step_delay(args: &[Value], fixed: usize) -> Result<(), String> {
    let secs = match args.get(fixed) {
        Some(v) => v.as_float().map_err(|e| type_err("pipeline step", e))?,
        None => PIPELINE_STEP,
    };
    sleep(&[Value::Float(secs)]).map(|_| ())
}

/// `load(src)`: reads the source (here: returns its number).
fn load(args: &[Value]) -> Result<Value, String> {
    step_delay(args, 1)?;
    arg(args, 0, "load")
}

/// `process1(x) = 2x`
fn process1(args: &[Value]) -> Result<Value, String> {
    step_delay(args, 1)?;
    num_op(
        "process1",
        &arg(args, 0, "process1")?,
        &Value::Int(2),
        i64::checked_mul,
        |a, b| a * b,
    )
}

/// `process2(x) = x + 1`
fn process2(args: &[Value]) -> Result<Value, String> {
    step_delay(args, 1)?;
    inc(&args[..1.min(args.len())])
}

/// `save(x, dst)`: writes `x` to `dst` (here: returns `[dst, x]`).
fn save(args: &[Value]) -> Result<Value, String> {
    step_delay(args, 2)?;
    Ok(Value::List(vec![
        arg(args, 1, "save")?,
        arg(args, 0, "save")?,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_across_tables() {
        let mut seen = std::collections::HashSet::new();
        for name in names() {
            assert!(
                seen.insert(name),
                "task function {name} is registered twice"
            );
        }
    }

    fn call(name: &str, args: &[Value]) -> Result<Value, String> {
        lookup(name).expect(name)(args)
    }

    #[test]
    fn seed_functions() {
        assert_eq!(call("inc", &[Value::Int(1)]).unwrap(), Value::Int(2));
        assert_eq!(
            call("add", &[Value::Int(1), Value::Float(0.5)]).unwrap(),
            Value::Float(1.5)
        );
        assert_eq!(call("custom_op", &[Value::Int(3)]).unwrap(), Value::Int(18));
        assert_eq!(
            call("sum", &[Value::from(vec![1i64, 2, 3])]).unwrap(),
            Value::Int(6)
        );
        assert_eq!(
            call("sum", &[Value::Int(1), Value::Int(2)]).unwrap(),
            Value::Int(3)
        );
        assert_eq!(
            call(
                "save",
                &[Value::Int(99), Value::from("out-49"), Value::Float(0.0)]
            )
            .unwrap(),
            Value::from(vec![Value::from("out-49"), Value::Int(99)])
        );
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_function() {
        assert_eq!(
            call("inc", &[]).unwrap_err(),
            "inc() takes at least 1 argument(s), got 0"
        );
        assert!(
            call("inc", &[Value::from("x")])
                .unwrap_err()
                .starts_with("inc(): expected float")
        );
        assert!(
            call("inc", &[Value::Int(i64::MAX)])
                .unwrap_err()
                .contains("overflow")
        );
        assert!(
            call("sleep", &[Value::Float(-1.0)])
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(call("fail", &[Value::from("boom")]).unwrap_err(), "boom");
        assert!(lookup("nope").is_none());
    }

    #[test]
    fn stamp_differs_on_every_execution() {
        let a = call("stamp", &[Value::Int(7)]).unwrap();
        let b = call("stamp", &[Value::Int(7), Value::Float(0.0)]).unwrap();
        assert_eq!(a.as_list().unwrap()[0], Value::Int(7));
        assert_ne!(a, b);
        assert!(call("stamp", &[Value::Int(7), Value::Str("x".into())]).is_err());
    }
}
