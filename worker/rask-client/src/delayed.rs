//! Delayed graphs: lazy, typed calls of registered functions that build a task graph, computed in
//! one message ([`crate::Client::compute`]).
//!
//! A call's arguments are its function's serde type; results of other calls (or futures) enter
//! them as typed [`Input`]s, collected by a [`Deps`] while the arguments are built:
//!
//! ```
//! use rask_client::delayed::{delayed, delayed_with};
//! use rask_core::{Func, Operand, Value};
//!
//! const INC: Func<Operand<Value>, Value> = Func::new("seed.inc");
//! const ADD: Func<(Operand<Value>, Operand<Value>), Value> = Func::new("seed.add");
//!
//! let one = delayed(INC, Operand::Value(Value::Int(1)));
//! let two = delayed(INC, Operand::Value(Value::Int(2)));
//! let total = delayed_with(ADD, |d| (d.input(&one).into(), d.input(&two).into()));
//! assert_eq!(total.graph().len(), 3);
//! ```

use std::collections::hash_map::Entry;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use serde::Serialize;

use rask_core::function::encode_small_payload;
use rask_core::{Encoded, Func, FuncName, Input, KernelTask, Key, Resources, SmallBytes, TaskSpec};

/// A lazy call whose result is an `R`; cheap to clone.
pub struct Delayed<R = Encoded> {
    node: Arc<Node>,
    _result: PhantomData<fn() -> R>,
}

impl<R> Clone for Delayed<R> {
    fn clone(&self) -> Self {
        Delayed {
            node: self.node.clone(),
            _result: PhantomData,
        }
    }
}

impl<R> fmt::Debug for Delayed<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Delayed({} {})", self.node.func, self.node.key)
    }
}

struct Node {
    key: Key,
    func: FuncName,
    /// Inline when short (most are): no allocation of its own, and copied into the task's spec
    /// as it is, with no count of references to touch.
    payload: SmallBytes,
    inputs: Vec<Source>,
    resources: Resources,
    /// The first [`Deps`] to take it as an input (its id, high half) and the position it took
    /// there (low half), or 0: that one finds it again here, checked against its own list,
    /// with no table of the nodes it met (a sum's million). Other argument lists keep it in
    /// their table ([`Deps::input`]).
    position: AtomicU64,
}

/// Where an input comes from: another delayed call (part of the graph), or a result a client
/// already holds (a future's key).
#[derive(Clone)]
enum Source {
    Node(Arc<Node>),
    Key(Key),
}

impl Source {
    fn key(&self) -> &Key {
        match self {
            Source::Node(n) => &n.key,
            Source::Key(k) => k,
        }
    }
}

/// Something a task can read: a [`Delayed`] or a [`crate::Future`].
pub trait AsInput<T> {
    #[doc(hidden)]
    fn input_source(&self) -> InputSource;
}

/// The source of an input (opaque).
#[doc(hidden)]
pub struct InputSource(Source);

impl InputSource {
    /// A result a client already holds.
    pub(crate) fn key(key: Key) -> Self {
        InputSource(Source::Key(key))
    }
}

impl<T> AsInput<T> for Delayed<T> {
    fn input_source(&self) -> InputSource {
        InputSource(Source::Node(self.node.clone()))
    }
}

/// Collects a task's inputs while its arguments are built: each distinct input gets one position.
#[derive(Default)]
pub struct Deps {
    inputs: Vec<Source>,
    /// This list's id ([`Node::position`]), taken at its first call among the inputs; 0 before.
    id: u32,
    /// Positions of the calls whose [`Node::position`] another list holds, by node identity:
    /// hashing an address is cheaper than hashing key text.
    nodes: FxHashMap<usize, u32>,
    /// Positions by key, kept once a future (a bare key) is among the inputs: a future and a
    /// delayed call can name the same result, which must take one position.
    keys: Option<FxHashMap<Key, u32>>,
}

impl Deps {
    pub fn new() -> Self {
        Deps::default()
    }

    /// This list's id, taken from a counter at first use (never 0: a node's mark of 0 is held
    /// by none). After 2³² lists the ids come round again: an old mark with this id is told
    /// apart by the check against this list.
    fn id(&mut self) -> u32 {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        while self.id == 0 {
            self.id = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        self.id
    }

    /// The position of `x` among the task's inputs (the same for the same input).
    pub fn input<T>(&mut self, x: &impl AsInput<T>) -> Input<T> {
        let InputSource(source) = x.input_source();
        let next = u32::try_from(self.inputs.len()).unwrap_or(u32::MAX);
        let i = match &source {
            Source::Node(node) => {
                let id = self.id();
                let mark = node.position.load(Ordering::Relaxed);
                let (owner, at) = ((mark >> 32) as u32, mark as u32);
                if owner == id
                    && let Some(Source::Node(n)) = self.inputs.get(at as usize)
                    && Arc::ptr_eq(n, node)
                {
                    return Input::new(at);
                }
                // Held by no list: none has met it, so it is new here too. Held by another
                // (or by this id's holder before the ids came round): in this list's table if
                // this list met it.
                let addr = Arc::as_ptr(node) as usize;
                if owner != 0
                    && let Some(&i) = self.nodes.get(&addr)
                {
                    return Input::new(i);
                }
                let known = self.keys.as_ref().and_then(|k| k.get(&node.key).copied());
                let i = known.unwrap_or(next);
                let held = known.is_none()
                    && owner == 0
                    && node
                        .position
                        .compare_exchange(
                            0,
                            (u64::from(id) << 32) | u64::from(i),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_ok();
                if !held {
                    self.nodes.insert(addr, i);
                }
                if known.is_some() {
                    return Input::new(i);
                }
                i
            }
            Source::Key(key) => {
                let inputs = &self.inputs;
                let keys = self.keys.get_or_insert_with(|| {
                    inputs
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.key().clone(), u32::try_from(i).unwrap_or(u32::MAX)))
                        .collect()
                });
                if let Some(&i) = keys.get(key) {
                    return Input::new(i);
                }
                next
            }
        };
        if let Some(keys) = &mut self.keys {
            keys.insert(source.key().clone(), i);
        }
        self.inputs.push(source);
        Input::new(i)
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The inputs' keys, in position order.
    pub fn keys(&self) -> Vec<Key> {
        self.inputs.iter().map(|s| s.key().clone()).collect()
    }
}

/// Unique key for a new task: `prefix-<process token>-<counter>`.
pub fn new_key(prefix: &str) -> Key {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Built on the stack and copied into the key (inline, or its one allocation): a graph
    // makes a key per task.
    let mut number = itoa::Buffer::new();
    let parts = [prefix, "-", process_token(), "-", number.format(n)];
    let mut buf = [0u8; 64];
    let mut len = 0;
    for p in parts {
        let Some(room) = buf.get_mut(len..len + p.len()) else {
            return Key::new(parts.concat());
        };
        room.copy_from_slice(p.as_bytes());
        len += p.len();
    }
    match std::str::from_utf8(&buf[..len]) {
        Ok(text) => Key::new(text),
        Err(_) => Key::new(parts.concat()),
    }
}

/// The key prefix of a typed function's tasks: its name without the family (`seed.inc` → `inc`),
/// as Dask names a task by its function.
pub fn func_prefix(func: &str) -> &str {
    func.split_once('.').map_or(func, |(_, f)| f)
}

/// The key prefix of a kernel's tasks: family and function (`array.eval` → `array_eval`), so
/// kernels of different families keep apart in the scheduler's statistics.
pub fn kernel_prefix(func: &str) -> String {
    func.replace('.', "_")
}

/// A random token for this process, so keys from different clients never collide.
pub fn process_token() -> &'static str {
    use std::hash::{BuildHasher, Hasher};
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        format!("{:08x}", h.finish() as u32)
    })
}

/// Encodes arguments, or panics naming the type: postcard refuses only serde features a type
/// author chose (e.g. sequences of unknown length), a bug found on the first call.
pub(crate) fn payload_of<A: Serialize>(func: &str, args: &A) -> SmallBytes {
    match encode_small_payload(args) {
        Ok(p) => p,
        Err(e) => panic!("arguments of {func}: {e}"),
    }
}

/// A lazy call of `f` on literal arguments.
pub fn delayed<A: Serialize, R>(f: Func<A, R>, args: A) -> Delayed<R> {
    delayed_with(f, |_| args)
}

/// A lazy call of `f` whose arguments read other results: `build` gets the [`Deps`] to register
/// them with.
pub fn delayed_with<A: Serialize, R>(
    f: Func<A, R>,
    build: impl FnOnce(&mut Deps) -> A,
) -> Delayed<R> {
    let mut deps = Deps::new();
    let args = build(&mut deps);
    let payload = payload_of(f.name(), &args);
    Delayed::from_parts(new_key(func_prefix(f.name())), f.func_name(), payload, deps)
}

/// A lazy kernel call (a family's task enum); its result type is the caller's to name.
pub fn kernel<T: KernelTask, R>(build: impl FnOnce(&mut Deps) -> T) -> Delayed<R> {
    let mut deps = Deps::new();
    let task = build(&mut deps);
    let func = task.func();
    let payload = payload_of(func, &task);
    Delayed::from_parts(
        new_key(&kernel_prefix(func)),
        FuncName::new(func),
        payload,
        deps,
    )
}

impl<R> Delayed<R> {
    /// A call from its parts: a key, a function, an encoded payload and its inputs.
    pub fn from_parts(
        key: Key,
        func: FuncName,
        payload: impl Into<SmallBytes>,
        deps: Deps,
    ) -> Self {
        Delayed {
            node: Arc::new(Node {
                key,
                func,
                payload: payload.into(),
                inputs: deps.inputs,
                resources: Resources::none(),
                position: AtomicU64::new(0),
            }),
            _result: PhantomData,
        }
    }

    pub fn key(&self) -> &Key {
        &self.node.key
    }

    pub fn func(&self) -> &FuncName {
        &self.node.func
    }

    /// The same call, holding `resources` on its worker while it runs (Dask's
    /// `resources={"GPU": 1}`). Set it before the value is used by other calls: it makes a new
    /// node with the same key.
    pub fn with_resources(self, resources: Resources) -> Self {
        let node = match Arc::try_unwrap(self.node) {
            Ok(mut n) => {
                n.resources = resources;
                n
            }
            Err(shared) => Node {
                key: shared.key.clone(),
                func: shared.func.clone(),
                payload: shared.payload.clone(),
                inputs: shared.inputs.clone(),
                resources,
                position: AtomicU64::new(0),
            },
        };
        Delayed {
            node: Arc::new(node),
            _result: PhantomData,
        }
    }

    /// The same call, read as another result type.
    pub fn cast<S>(self) -> Delayed<S> {
        Delayed {
            node: self.node,
            _result: PhantomData,
        }
    }

    /// The same call, untyped (to compute values of several types together).
    pub fn erased(&self) -> Delayed<Encoded> {
        self.clone().cast()
    }

    /// The task graph needed for this value, inputs before their users (the order in which the
    /// scheduler prefers to run them). Linear in the size of the graph.
    pub fn graph(&self) -> Vec<TaskSpec> {
        graph_of(std::slice::from_ref(self))
    }
}

/// The union of the graphs of `roots`, each task once, in depth-first post-order.
pub fn graph_of<R>(roots: &[Delayed<R>]) -> Vec<TaskSpec> {
    Walk::new(roots).collect()
}

/// The tasks of [`graph_of`], each made as the walk reaches it, so that a client can send the
/// first parts of a large graph while it walks the rest.
pub(crate) struct Walk<'a> {
    /// (node, inputs pushed yet?)
    stack: Vec<(&'a Arc<Node>, bool)>,
    /// The nodes met, and whether their inputs have been pushed (each node's are, once).
    met: FxHashMap<*const Node, bool>,
    /// Nodes met and not made yet: each is made once, so at least this many tasks are to come.
    pending: usize,
}

impl<'a> Walk<'a> {
    pub(crate) fn new<R>(roots: &'a [Delayed<R>]) -> Self {
        let mut walk = Walk {
            stack: Vec::with_capacity(roots.len()),
            met: FxHashMap::default(),
            pending: 0,
        };
        for d in roots.iter().rev() {
            walk.meet(&d.node);
        }
        walk
    }

    /// Pushes `n` unless its inputs have been pushed already. A node met before but not
    /// expanded yet is pushed again: its inputs must be made before the node that reads it
    /// and is expanded first (the later push is popped first).
    fn meet(&mut self, n: &'a Arc<Node>) {
        match self.met.entry(Arc::as_ptr(n)) {
            Entry::Occupied(e) => {
                if *e.get() {
                    return;
                }
            }
            Entry::Vacant(e) => {
                e.insert(false);
                self.pending += 1;
            }
        }
        self.stack.push((n, false));
    }

    /// Tasks still to be made: at least this many (nodes not met yet may add to them).
    pub(crate) fn at_least_left(&self) -> usize {
        self.pending
    }
}

impl Iterator for Walk<'_> {
    type Item = TaskSpec;

    fn next(&mut self) -> Option<TaskSpec> {
        while let Some((n, expanded)) = self.stack.pop() {
            if expanded {
                self.pending -= 1;
                return Some(TaskSpec {
                    key: n.key.clone(),
                    func: n.func.clone(),
                    inputs: n.inputs.iter().map(|s| s.key().clone()).collect(),
                    payload: n.payload.clone(),
                    resources: n.resources.clone(),
                });
            }
            match self.met.get_mut(&Arc::as_ptr(n)) {
                Some(done) if !*done => *done = true,
                // Expanded at a later push of it, made already.
                _ => continue,
            }
            self.stack.push((n, true));
            // A wide node's inputs are mostly new: room for them at once, not a growth per
            // doubling.
            self.met.reserve(n.inputs.len());
            self.stack.reserve(n.inputs.len());
            for s in n.inputs.iter().rev() {
                if let Source::Node(c) = s {
                    self.meet(c);
                }
            }
        }
        None
    }
}

impl Drop for Node {
    /// Drops long chains without recursing once per link (a 100,000-long chain would overflow
    /// the stack otherwise).
    fn drop(&mut self) {
        let mut stack: Vec<Source> = std::mem::take(&mut self.inputs);
        while let Some(s) = stack.pop() {
            if let Source::Node(n) = s
                && let Ok(mut node) = Arc::try_unwrap(n)
            {
                stack.extend(std::mem::take(&mut node.inputs));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rask_core::{Operand, Value};

    use super::*;

    const INC: Func<Operand<Value>, Value> = Func::new("t.inc");
    const SUM: Func<Vec<Operand<Value>>, Value> = Func::new("t.sum");

    fn inc_of(x: &Delayed<Value>) -> Delayed<Value> {
        delayed_with(INC, |d| d.input(x).into())
    }

    /// `inc(i)` for each `i` below `n`, and their sum.
    fn wide_sum(n: i64) -> (Vec<Delayed<Value>>, Delayed<Value>) {
        let parts: Vec<Delayed<Value>> = (0..n)
            .map(|i| delayed(INC, Operand::Value(Value::Int(i))))
            .collect();
        let sum = delayed_with(SUM, |d| parts.iter().map(|p| d.input(p).into()).collect());
        (parts, sum)
    }

    #[test]
    fn graph_is_post_order_and_shares_nodes() {
        let a = delayed(INC, Operand::Value(Value::Int(1)));
        let b = inc_of(&a);
        let c = delayed_with(SUM, |d| {
            vec![d.input(&a).into(), d.input(&b).into(), d.input(&a).into()]
        });
        let g = c.graph();
        let keys: Vec<&Key> = g.iter().map(|t| &t.key).collect();
        assert_eq!(keys, vec![a.key(), b.key(), c.key()]);
        // `a` is read twice but is one input.
        assert_eq!(g[2].inputs, vec![a.key().clone(), b.key().clone()]);
        assert_eq!(g[2].func.as_str(), "t.sum");
    }

    /// A result the client holds, by key (what a future gives as an input).
    struct Held(Key);

    impl AsInput<Value> for Held {
        fn input_source(&self) -> InputSource {
            InputSource::key(self.0.clone())
        }
    }

    #[test]
    fn a_future_and_the_call_it_computes_take_one_position() {
        let a = delayed(INC, Operand::Value(Value::Int(1)));
        let b = delayed(INC, Operand::Value(Value::Int(2)));
        let held_a = Held(Key::new(a.key().as_str()));
        // Call first, then its future; and the other way round for `b`, after a future is known.
        let c = delayed_with(SUM, |d| {
            let first = d.input(&a).into();
            let again = d.input(&held_a).into();
            let other = d.input(&Held(Key::new(b.key().as_str()))).into();
            let same = d.input(&b).into();
            assert_eq!(first, again);
            assert_eq!(other, same);
            vec![first, again, other, same]
        });
        let g = c.graph();
        let last = g.last().expect("the root");
        assert_eq!(last.inputs, vec![a.key().clone(), b.key().clone()]);
        // A held key is an input, not part of the graph: only `a` and the root are tasks.
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_call_shared_by_argument_lists_built_inside_one_another_takes_one_position_in_each() {
        let a = delayed(INC, Operand::Value(Value::Int(1)));
        let b = delayed(INC, Operand::Value(Value::Int(2)));
        // The outer list meets `a` first; the inner one, built meanwhile, meets it second.
        let mut inner_at = Vec::new();
        let mut outer = Deps::new();
        let first = outer.input(&a).index();
        let mut inner = Deps::new();
        inner_at.push(inner.input(&b).index());
        inner_at.push(inner.input(&a).index());
        inner_at.push(inner.input(&a).index());
        let again = outer.input(&a).index();
        let then_b = outer.input(&b).index();
        assert_eq!(inner_at, [0, 1, 1]);
        assert_eq!((first, again, then_b), (0, 0, 1));
        // A third list, after both: each call once, in its order.
        let mut third = Deps::new();
        let at: Vec<usize> = [&b, &a, &b, &a]
            .iter()
            .map(|x| third.input(*x).index())
            .collect();
        assert_eq!(at, [0, 1, 0, 1]);
        assert_eq!(third.keys(), [b.key().clone(), a.key().clone()]);
    }

    #[test]
    fn calls_met_in_any_address_order_take_one_position_each() {
        let nodes: Vec<Delayed<Value>> = (0..6)
            .map(|i| delayed(INC, Operand::Value(Value::Int(i))))
            .collect();
        // Sorted by address, then read rising, falling, repeated and again after a future.
        let mut by_addr: Vec<&Delayed<Value>> = nodes.iter().collect();
        by_addr.sort_by_key(|d| Arc::as_ptr(&d.node) as usize);
        let [a, b, c, e, f, g] = by_addr[..] else {
            unreachable!("six calls")
        };
        let order = [a, b, e, c, a, e, f, b];
        let mut d = Deps::new();
        let at: Vec<usize> = order.iter().map(|x| d.input(*x).index()).collect();
        assert_eq!(at, [0, 1, 2, 3, 0, 2, 4, 1]);
        let held = d.input(&Held(Key::new(g.key().as_str()))).index();
        assert_eq!((held, d.input(g).index(), d.input(c).index()), (5, 5, 3));
        let keys: Vec<Key> = [a, b, e, c, f, g].iter().map(|x| x.key().clone()).collect();
        assert_eq!(d.keys(), keys);
        // Rising only: each call is new, in order.
        let mut d = Deps::new();
        let at: Vec<usize> = by_addr.iter().map(|x| d.input(*x).index()).collect();
        assert_eq!(at, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_dag_with_shared_inputs_lists_each_task_once_after_its_inputs() {
        // Each call reads a few earlier ones, chosen pseudo-randomly, some twice.
        let mut x: u64 = 11;
        let mut calls: Vec<Delayed<Value>> = vec![delayed(INC, Operand::Value(Value::Int(0)))];
        for _ in 0..300 {
            let picks: Vec<usize> = (0..4)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as usize % calls.len()
                })
                .collect();
            let call = delayed_with(SUM, |d| {
                picks.iter().map(|&p| d.input(&calls[p]).into()).collect()
            });
            calls.push(call);
        }
        let roots = [calls[300].clone(), calls[150].clone(), calls[299].clone()];
        let g = graph_of(&roots);
        let at: FxHashMap<&Key, usize> = g.iter().enumerate().map(|(i, t)| (&t.key, i)).collect();
        assert_eq!(at.len(), g.len(), "a task listed twice");
        for (i, t) in g.iter().enumerate() {
            for input in &t.inputs {
                assert!(at[input] < i, "{} before its input {input}", t.key);
            }
        }
        for r in &roots {
            assert!(at.contains_key(r.key()));
        }
    }

    #[test]
    fn a_walk_counts_at_most_the_tasks_it_has_left() {
        // A wide sum (all met at once), a chain (met one at a time) and a shared DAG.
        let (wide, sum) = wide_sum(50);
        let mut chain = delayed(INC, Operand::Value(Value::Int(0)));
        for _ in 0..20 {
            chain = inc_of(&chain);
        }
        let shared = delayed_with(SUM, |d| {
            vec![
                d.input(&sum).into(),
                d.input(&chain).into(),
                d.input(&wide[3]).into(),
            ]
        });
        for roots in [
            vec![sum.clone()],
            vec![chain.clone()],
            vec![shared, sum.clone()],
        ] {
            let total = graph_of(&roots).len();
            let mut walk = Walk::new(&roots);
            let mut made = 0;
            assert!(walk.at_least_left() >= 1);
            while walk.next().is_some() {
                made += 1;
                assert!(walk.at_least_left() <= total - made, "{made} of {total}");
                assert_eq!(
                    walk.at_least_left() == 0,
                    made == total,
                    "{made} of {total}"
                );
            }
            assert_eq!(made, total);
        }
        // Once the sum is expanded its inputs are all met: the count is exact.
        let mut walk = Walk::new(std::slice::from_ref(&sum));
        walk.next();
        assert_eq!(walk.at_least_left(), 50);
    }

    #[test]
    fn new_keys_are_built_whole_whatever_the_prefix_length() {
        let short = new_key("inc");
        assert!(short.as_str().starts_with("inc-") && short.as_str().ends_with(char::is_numeric));
        let long = "p".repeat(100);
        let key = new_key(&long);
        assert!(
            key.as_str()
                .starts_with(&format!("{long}-{}-", process_token())),
            "{key}"
        );
    }

    #[test]
    fn long_chains_build_collect_and_drop_without_recursion() {
        let mut x = delayed(INC, Operand::Value(Value::Int(0)));
        for _ in 0..200_000 {
            x = inc_of(&x);
        }
        assert_eq!(x.graph().len(), 200_001);
        drop(x);
    }

    #[test]
    fn wide_sum_graph_is_linear() {
        let (_, total) = wide_sum(100_000);
        let g = total.graph();
        assert_eq!(g.len(), 100_001);
        assert_eq!(g.last().map(|t| t.dependencies().len()), Some(100_000));
    }

    #[test]
    fn keys_are_unique_and_prefixed_by_function() {
        let a = delayed(INC, Operand::Value(Value::Int(1)));
        let b = delayed(INC, Operand::Value(Value::Int(1)));
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key().prefix(), "inc");
        assert_eq!(kernel_prefix("array.eval"), "array_eval");
    }

    #[test]
    fn resources_travel_with_the_task() {
        let gpu = Resources::parse("GPU=1").unwrap();
        let a = delayed(INC, Operand::Value(Value::Int(1))).with_resources(gpu.clone());
        assert_eq!(a.graph()[0].resources, gpu);
    }
}
