//! Task functions and the registry that holds them, filled from above.
//!
//! The engine knows no function by name. Whoever builds a worker (the `rask` binary, or a user's
//! own program) registers [`Family`]s of functions with it; the worker tells the scheduler which
//! families it holds, and the scheduler places each task on a worker that has its function.
//!
//! A function is typed on both sides by one constant, a [`Func<A, R>`]: `A` is its arguments (a
//! serde type, sent as the task's payload) and `R` its result (a [`Data`]). The arguments refer to
//! other tasks' results by position ([`Input<T>`]), never by parsing strings:
//!
//! ```
//! use rask_core::function::{Family, Func, Input, Inputs, KernelError, Registry};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Scale { pub x: Input<f64>, pub factor: f64 }
//!
//! /// Shared by the program that submits tasks and the worker that runs them.
//! pub const SCALE: Func<Scale, f64> = Func::new("demo.scale");
//!
//! fn scale(args: Scale, inputs: &Inputs<'_>) -> Result<f64, KernelError> {
//!     Ok(inputs.get(args.x)? * args.factor)
//! }
//!
//! let mut registry = Registry::new();
//! registry.register(Family::new("demo", "1.0").function(SCALE, scale)).unwrap();
//! assert!(registry.get("demo.scale").is_some());
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::{Data, Encoded, from_postcard, short_type_name};
use crate::small_bytes::SmallBytes;
use crate::task::FuncName;

/// A registered function, typed: `A` its arguments, `R` its result. Builders and workers share
/// the constant, so they agree on both.
pub struct Func<A, R> {
    name: &'static str,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Func<A, R> {
    /// `name` is `family.function`.
    pub const fn new(name: &'static str) -> Self {
        Func {
            name,
            _types: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn func_name(&self) -> FuncName {
        FuncName::from_static(self.name)
    }
}

impl<A, R> Clone for Func<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Func<A, R> {}

impl<A, R> fmt::Debug for Func<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Func({})", self.name)
    }
}

/// The position of one of a task's inputs, typed by the result it holds.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Input<T> {
    index: u32,
    #[serde(skip)]
    _type: PhantomData<fn() -> T>,
}

impl<T> Input<T> {
    pub fn new(index: u32) -> Self {
        Input {
            index,
            _type: PhantomData,
        }
    }

    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The same input read as another type.
    pub fn cast<U>(self) -> Input<U> {
        Input::new(self.index)
    }
}

impl<T> Clone for Input<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Input<T> {}

impl<T> PartialEq for Input<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}

impl<T> fmt::Debug for Input<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Input({})", self.index)
    }
}

/// An argument that is a literal or another task's result (Dask's "a value or a future").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Operand<T> {
    Value(T),
    Input(Input<T>),
}

impl<T: Data + Clone> Operand<T> {
    pub fn resolve(&self, inputs: &Inputs<'_>) -> Result<T, KernelError> {
        match self {
            Operand::Value(v) => Ok(v.clone()),
            Operand::Input(i) => inputs.get(*i),
        }
    }
}

impl<T> From<Input<T>> for Operand<T> {
    fn from(i: Input<T>) -> Self {
        Operand::Input(i)
    }
}

/// Why a task failed: the function's own error, or arguments or inputs it could not use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum KernelError {
    /// The payload is not the function's argument type (a builder of another version?).
    #[error("{func}: arguments cannot be decoded: {reason}")]
    Arguments { func: String, reason: String },
    /// An input is missing or not of the kind the function reads.
    #[error("{func}: input {index}: {reason}")]
    Input {
        func: String,
        index: usize,
        reason: String,
    },
    /// The function's own error (a bad value, a file that cannot be read, ...).
    #[error("{0}")]
    Failed(String),
    /// The function panicked; the worker caught it and lives on.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// A user's Python function raised an exception (the `python` family).
    #[error("{}: {}", .0.type_name, .0.message)]
    Python(Box<PythonException>),
}

/// An exception raised by a user's Python function on a worker, as the client re-raises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PythonException {
    /// The exception's class: `ValueError` for builtins, else `module.QualName`.
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The remote traceback as Python prints it, from the user's function down, ending with the
    /// `Type: message` line.
    pub traceback: String,
    /// The exception, cloudpickled, when it pickles and unpickles on the worker; the client
    /// unpickles it to raise the same type.
    pub pickled: Option<Bytes>,
}

impl KernelError {
    pub fn failed(message: impl fmt::Display) -> Self {
        KernelError::Failed(message.to_string())
    }
}

/// The inputs of a running task, in the order of its spec's `inputs`.
pub struct Inputs<'a> {
    func: &'a str,
    data: &'a [Encoded],
}

impl<'a> Inputs<'a> {
    pub fn new(func: &'a str, data: &'a [Encoded]) -> Self {
        Inputs { func, data }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The input at `index`, undecoded.
    pub fn encoded(&self, index: usize) -> Result<&'a Encoded, KernelError> {
        self.data.get(index).ok_or_else(|| KernelError::Input {
            func: self.func.to_owned(),
            index,
            reason: format!("the task has only {} inputs", self.data.len()),
        })
    }

    /// The input `i`, decoded.
    pub fn get<T: Data>(&self, i: Input<T>) -> Result<T, KernelError> {
        let e = self.encoded(i.index())?;
        T::decode(e).map_err(|err| self.input_error(i.index(), err))
    }

    /// Every input, decoded as `T`.
    pub fn all<T: Data>(&self) -> Result<Vec<T>, KernelError> {
        (0..self.data.len())
            .map(|i| self.get(Input::<T>::new(i as u32)))
            .collect()
    }

    /// An error about input `index`.
    pub fn input_error(&self, index: usize, err: impl fmt::Display) -> KernelError {
        KernelError::Input {
            func: self.func.to_owned(),
            index,
            reason: err.to_string(),
        }
    }
}

/// A function as the worker calls it: the payload its builder encoded, and its inputs.
pub trait Function: Send + Sync {
    fn call(&self, payload: &[u8], inputs: &Inputs<'_>) -> Result<Encoded, KernelError>;
}

/// A typed function behind [`Function`]: decodes `A`, runs, encodes `R`.
struct Typed<A, R, F> {
    name: &'static str,
    f: F,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R, F> Function for Typed<A, R, F>
where
    A: DeserializeOwned,
    R: Data,
    F: Fn(A, &Inputs<'_>) -> Result<R, KernelError> + Send + Sync,
{
    fn call(&self, payload: &[u8], inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
        let args: A = decode_payload(self.name, payload)?;
        (self.f)(args, inputs).map(|r| r.encode())
    }
}

/// Encodes a task's arguments as its payload.
pub fn encode_payload<A: Serialize>(args: &A) -> Result<Bytes, PayloadError> {
    encode_as(args, Bytes::copy_from_slice, Bytes::from)
}

/// [`encode_payload`] kept as [`SmallBytes`]: a short payload (most are) inline, with no
/// allocation of its own (a delayed graph holds one per call).
pub fn encode_small_payload<A: Serialize>(args: &A) -> Result<SmallBytes, PayloadError> {
    encode_as(args, SmallBytes::copy_from_slice, |v| {
        SmallBytes::from(Bytes::from(v))
    })
}

/// Encodes `args`, handing the bytes to `short` (a slice on the stack) or `long` (their own
/// `Vec`).
fn encode_as<A: Serialize, T>(
    args: &A,
    short: impl FnOnce(&[u8]) -> T,
    long: impl FnOnce(Vec<u8>) -> T,
) -> Result<T, PayloadError> {
    let error = |e: postcard::Error| PayloadError {
        type_name: short_type_name::<A>(),
        reason: e.to_string(),
    };
    // Most payloads are a few bytes (a number, a block index): encoded on the stack and copied
    // into one allocation of their size (or none), rather than a growing `Vec`.
    let mut small = [0u8; 64];
    match postcard::to_slice(args, &mut small) {
        Ok(used) => Ok(short(used)),
        Err(postcard::Error::SerializeBufferFull) => {
            postcard::to_allocvec(args).map(long).map_err(error)
        }
        Err(e) => Err(error(e)),
    }
}

/// Encodes many tasks' arguments (a `map`'s): payloads of up to 64 bytes are slices of one
/// shared buffer, so a million small ones are one allocation where each would be one of its own
/// (freed when the graph is sent, and left as a hole between what the process keeps).
pub fn encode_payloads<A: Serialize>(
    items: impl IntoIterator<Item = A>,
) -> Result<Vec<Bytes>, PayloadError> {
    let mut shared = Vec::new();
    // Each payload: its end in `shared`, or its own bytes when longer.
    let mut parts: Vec<Result<usize, Bytes>> = Vec::new();
    let mut small = [0u8; 64];
    for args in items {
        match postcard::to_slice(&args, &mut small) {
            Ok(used) => {
                shared.extend_from_slice(used);
                parts.push(Ok(shared.len()));
            }
            Err(postcard::Error::SerializeBufferFull) => parts.push(Err(encode_payload(&args)?)),
            Err(e) => {
                return Err(PayloadError {
                    type_name: short_type_name::<A>(),
                    reason: e.to_string(),
                });
            }
        }
    }
    let shared = Bytes::from(shared);
    let mut start = 0;
    Ok(parts
        .into_iter()
        .map(|part| match part {
            Ok(end) => {
                let payload = shared.slice(start..end);
                start = end;
                payload
            }
            Err(own) => own,
        })
        .collect())
}

/// Decodes a task's payload as the arguments of `func`.
pub fn decode_payload<A: DeserializeOwned>(func: &str, payload: &[u8]) -> Result<A, KernelError> {
    from_postcard(payload).map_err(|e| KernelError::Arguments {
        func: func.to_owned(),
        reason: format!("as {}: {e}", short_type_name::<A>()),
    })
}

/// Arguments that cannot be encoded (a serde feature postcard does not support).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot encode task arguments of type {type_name}: {reason}")]
pub struct PayloadError {
    pub type_name: String,
    pub reason: String,
}

/// Tasks of a family whose arguments are one serde enum (the array and dataframe kernels): each
/// variant is one function, named by [`KernelTask::func`].
pub trait KernelTask: Serialize + DeserializeOwned {
    /// Every function name the enum's variants use.
    const FUNCTIONS: &'static [&'static str];
    /// The function this task runs (`family.variant`).
    fn func(&self) -> &'static str;
}

struct Kernels<T, F> {
    f: Arc<F>,
    name: &'static str,
    _type: PhantomData<fn(T)>,
}

impl<T, F> Function for Kernels<T, F>
where
    T: KernelTask,
    F: Fn(T, &Inputs<'_>) -> Result<Encoded, KernelError> + Send + Sync,
{
    fn call(&self, payload: &[u8], inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
        let task: T = decode_payload(self.name, payload)?;
        if task.func() != self.name {
            return Err(KernelError::Arguments {
                func: self.name.to_owned(),
                reason: format!("the payload is a {} task", task.func()),
            });
        }
        (self.f)(task, inputs)
    }
}

/// What a worker tells the scheduler about one family it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyInfo {
    pub name: String,
    pub version: String,
    pub functions: Vec<String>,
}

impl fmt::Display for FamilyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// A named, versioned set of functions, registered together.
pub struct Family {
    info: FamilyInfo,
    functions: Vec<(FuncName, Arc<dyn Function>)>,
}

impl Family {
    pub fn new(name: &str, version: &str) -> Self {
        Family {
            info: FamilyInfo {
                name: name.to_owned(),
                version: version.to_owned(),
                functions: Vec::new(),
            },
            functions: Vec::new(),
        }
    }

    pub fn info(&self) -> &FamilyInfo {
        &self.info
    }

    /// Adds a typed function.
    pub fn function<A, R, F>(self, func: Func<A, R>, f: F) -> Self
    where
        A: DeserializeOwned + 'static,
        R: Data,
        F: Fn(A, &Inputs<'_>) -> Result<R, KernelError> + Send + Sync + 'static,
    {
        let typed = Typed {
            name: func.name(),
            f,
            _types: PhantomData,
        };
        self.raw(func.name(), typed)
    }

    /// Adds every function of a kernel enum, each run by `f`.
    pub fn kernels<T, F>(mut self, f: F) -> Self
    where
        T: KernelTask + 'static,
        F: Fn(T, &Inputs<'_>) -> Result<Encoded, KernelError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        for name in T::FUNCTIONS {
            let k = Kernels::<T, F> {
                f: f.clone(),
                name,
                _type: PhantomData,
            };
            self = self.raw(name, k);
        }
        self
    }

    /// Adds a function that decodes its own payload.
    pub fn raw(mut self, name: &str, f: impl Function + 'static) -> Self {
        self.info.functions.push(name.to_owned());
        self.functions.push((FuncName::new(name), Arc::new(f)));
        self
    }
}

/// A family that cannot be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    #[error("family {0:?} is registered twice")]
    DuplicateFamily(String),
    #[error("function {func:?} is not in family {family:?} (names are `family.function`)")]
    WrongFamily { func: String, family: String },
    #[error("function {0:?} is registered twice")]
    DuplicateFunction(String),
}

/// The functions a worker can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    families: Vec<FamilyInfo>,
    functions: FxHashMap<FuncName, Arc<dyn Function>>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a family; its functions' names must start with `family.`.
    pub fn register(&mut self, family: Family) -> Result<&mut Self, RegistryError> {
        let Family { info, functions } = family;
        if self.families.iter().any(|f| f.name == info.name) {
            return Err(RegistryError::DuplicateFamily(info.name));
        }
        for (name, _) in &functions {
            if name.family() != info.name || name.as_str().len() <= info.name.len() + 1 {
                return Err(RegistryError::WrongFamily {
                    func: name.to_string(),
                    family: info.name,
                });
            }
            if self.functions.contains_key(name)
                || functions.iter().filter(|(n, _)| n == name).count() > 1
            {
                return Err(RegistryError::DuplicateFunction(name.to_string()));
            }
        }
        self.functions.extend(functions);
        self.families.push(info);
        Ok(self)
    }

    pub fn get(&self, func: &str) -> Option<&Arc<dyn Function>> {
        self.functions.get(func)
    }

    pub fn get_name(&self, func: &FuncName) -> Option<&Arc<dyn Function>> {
        self.functions.get(func)
    }

    pub fn families(&self) -> &[FamilyInfo] {
        &self.families
    }

    /// Runs `func` on a payload and inputs (as a worker thread does, without catching panics).
    pub fn call(
        &self,
        func: &str,
        payload: &[u8],
        inputs: &[Encoded],
    ) -> Result<Encoded, KernelError> {
        let f = self.get(func).ok_or_else(|| {
            KernelError::failed(format!(
                "unknown function {func:?}; this worker has {}",
                describe_families(&self.families)
            ))
        })?;
        f.call(payload, &Inputs::new(func, inputs))
    }
}

impl Registry {
    /// Runs a graph in this thread, inputs before their users (`tasks` in the order a client
    /// sends them), and returns every result: for tests of a family's functions without a
    /// cluster. A task whose input is neither in the graph nor in `given` fails.
    pub fn compute_local(
        &self,
        tasks: &[crate::task::TaskSpec],
        given: &[(crate::key::Key, Encoded)],
    ) -> Result<FxHashMap<crate::key::Key, Encoded>, (crate::key::Key, KernelError)> {
        let mut done: FxHashMap<crate::key::Key, Encoded> = given.iter().cloned().collect();
        for t in tasks {
            let inputs = t
                .inputs
                .iter()
                .map(|k| {
                    done.get(k).cloned().ok_or_else(|| {
                        (
                            t.key.clone(),
                            KernelError::failed(format!("input {k} has not been computed")),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .call(t.func.as_str(), &t.payload, &inputs)
                .map_err(|e| (t.key.clone(), e))?;
            done.insert(t.key.clone(), out);
        }
        Ok(done)
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Registry({})", describe_families(&self.families))
    }
}

/// `array 0.1, frame 0.1` (or `no function families`), for error messages.
pub fn describe_families(families: &[FamilyInfo]) -> String {
    if families.is_empty() {
        return "no function families".to_owned();
    }
    families
        .iter()
        .map(FamilyInfo::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Add {
        a: Operand<i64>,
        b: Operand<i64>,
    }

    const ADD: Func<Add, i64> = Func::new("t.add");

    fn add(args: Add, inputs: &Inputs<'_>) -> Result<i64, KernelError> {
        let (a, b) = (args.a.resolve(inputs)?, args.b.resolve(inputs)?);
        a.checked_add(b)
            .ok_or_else(|| KernelError::failed(format!("{a} + {b} overflows")))
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(Family::new("t", "1").function(ADD, add))
            .unwrap();
        r
    }

    #[test]
    fn typed_functions_read_literals_and_inputs() {
        let r = registry();
        let args = Add {
            a: Operand::Value(2),
            b: Operand::Input(Input::new(0)),
        };
        let payload = encode_payload(&args).unwrap();
        let out = r.call("t.add", &payload, &[40i64.encode()]).unwrap();
        assert_eq!(out.decode::<i64>().unwrap(), 42);
    }

    #[test]
    fn errors_name_the_function_and_the_input() {
        let r = registry();
        let args = Add {
            a: Operand::Input(Input::new(0)),
            b: Operand::Input(Input::new(1)),
        };
        let payload = encode_payload(&args).unwrap();
        let err = r.call("t.add", &payload, &[1i64.encode()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.add: input 1: the task has only 1 inputs"
        );
        let err = r
            .call("t.add", &payload, &[1i64.encode(), "x".to_owned().encode()])
            .unwrap_err();
        assert!(matches!(err, KernelError::Input { index: 1, .. }), "{err}");
        let err = r.call("t.add", b"\xff", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("t.add: arguments cannot be decoded: as Add"),
            "{err}"
        );
        let overflow = encode_payload(&Add {
            a: Operand::Value(i64::MAX),
            b: Operand::Value(1),
        })
        .unwrap();
        assert!(
            r.call("t.add", &overflow, &[])
                .unwrap_err()
                .to_string()
                .contains("overflows")
        );
        let err = r.call("t.nope", &payload, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown function \"t.nope\"; this worker has t 1"
        );
    }

    #[test]
    fn python_exceptions_cross_the_wire_whole() {
        let err = KernelError::Python(Box::new(PythonException {
            type_name: "ValueError".into(),
            message: "bad x".into(),
            traceback: "Traceback (most recent call last):\n...\nValueError: bad x\n".into(),
            pickled: Some(Bytes::from_static(b"\x80\x05.")),
        }));
        assert_eq!(err.to_string(), "ValueError: bad x");
        let bytes = postcard::to_allocvec(&err).unwrap();
        let back: KernelError = from_postcard(&bytes).unwrap();
        assert_eq!(back, err);
    }

    #[test]
    fn registration_checks_names() {
        let mut r = registry();
        assert_eq!(
            r.register(Family::new("t", "2")).err(),
            Some(RegistryError::DuplicateFamily("t".into()))
        );
        let wrong = Family::new("u", "1").function(ADD, add);
        assert!(matches!(
            r.register(wrong),
            Err(RegistryError::WrongFamily { .. })
        ));
        let twice = Family::new("v", "1")
            .function(Func::<Add, i64>::new("v.add"), add)
            .function(Func::<Add, i64>::new("v.add"), add);
        assert!(matches!(
            r.register(twice),
            Err(RegistryError::DuplicateFunction(_))
        ));
        assert_eq!(r.families().len(), 1);
        assert_eq!(r.families()[0].functions, vec!["t.add".to_owned()]);
    }

    #[derive(Serialize, Deserialize)]
    enum Op {
        Double(Input<i64>),
        Negate(i64),
    }

    impl KernelTask for Op {
        const FUNCTIONS: &'static [&'static str] = &["k.double", "k.negate"];
        fn func(&self) -> &'static str {
            match self {
                Op::Double(_) => "k.double",
                Op::Negate(_) => "k.negate",
            }
        }
    }

    #[test]
    fn kernel_enums_register_one_function_per_variant() {
        let mut r = Registry::new();
        r.register(
            Family::new("k", "1").kernels(|op: Op, inputs: &Inputs<'_>| {
                Ok(match op {
                    Op::Double(x) => (2 * inputs.get(x)?).encode(),
                    Op::Negate(x) => (-x).encode(),
                })
            }),
        )
        .unwrap();
        let p = encode_payload(&Op::Double(Input::new(0))).unwrap();
        let out = r.call("k.double", &p, &[21i64.encode()]).unwrap();
        assert_eq!(out.decode::<i64>().unwrap(), 42);
        let err = r.call("k.negate", &p, &[]).unwrap_err();
        assert!(err.to_string().contains("is a k.double task"), "{err}");
    }

    #[test]
    fn small_payloads_are_inline_and_every_payload_the_same_bytes() {
        let short = (3u32, -1i64);
        let long = vec![7u8; 100];
        let s = encode_small_payload(&short).unwrap();
        assert!(matches!(s, SmallBytes::Inline { .. }));
        assert_eq!(s.as_slice(), &encode_payload(&short).unwrap()[..]);
        let l = encode_small_payload(&long).unwrap();
        assert!(matches!(l, SmallBytes::Shared(_)));
        assert_eq!(l.as_slice(), &encode_payload(&long).unwrap()[..]);
        // Past the stack buffer too.
        let longer = vec![9u8; 1000];
        let p = encode_small_payload(&longer).unwrap();
        assert_eq!(
            decode_payload::<Vec<u8>>("t.f", p.as_slice()).unwrap(),
            longer
        );
    }

    #[test]
    fn many_payloads_share_one_buffer_unless_long() {
        let long = vec![7u8; 100];
        let items: Vec<Vec<u8>> = vec![vec![1], Vec::new(), long.clone(), vec![2, 3]];
        let payloads = encode_payloads(items.iter()).unwrap();
        assert_eq!(payloads.len(), 4);
        for (p, item) in payloads.iter().zip(&items) {
            assert_eq!(p, &encode_payload(item).unwrap());
        }
        // The short ones are consecutive slices of one buffer.
        let (a, b, d) = (&payloads[0], &payloads[1], &payloads[3]);
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        assert_eq!(b.as_ptr().wrapping_add(b.len()), d.as_ptr());
        assert!(encode_payloads(Vec::<u8>::new()).unwrap().is_empty());
    }
}
