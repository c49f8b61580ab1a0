"""`rask.delayed` and `rask.compute`: Dask's delayed API, computed as one graph of Python calls.

    from rask import delayed, compute
    from rask.distributed import Client

    client = Client("tcp://scheduler:8786")    # the default client from now on
    x = delayed(inc)(1)
    y = delayed(add)(x, delayed(inc)(2))       # nothing runs yet
    assert y.compute() == 5                    # one graph of three `python.call` tasks

Each call is pickled (cloudpickle) when it is made, with each delayed value or future among its
arguments (inside lists, tuples and dict values too) replaced by `Dep(i)`, `i` being its position
among the task's inputs. `compute` sends the graph in one message through the default client (the
last `Client` created and not closed) or the one given as `scheduler=`.

This module sits below `rask.distributed` and `rask.array`, and imports neither: it finds its
client through `rask._futures` (`client_for`, `Future`), and computes `rask.array` arrays found
among `compute`'s arguments through their class (`_rask_compute_all`).
"""

from __future__ import annotations

import hashlib
import operator
import pickle
from collections.abc import Iterator
from typing import Any, Callable

import cloudpickle

from . import _rask
from ._deps import Dep, call_method, identity
from ._futures import Future, client_for

__all__ = ["Delayed", "compute", "delayed", "from_future", "persist", "visualize"]


def _prefix(name: str) -> str:
    """A key prefix (the task's name in statistics): the characters Dask's keys keep."""
    name = "".join(c for c in name if c.isalnum() or c == "_")
    return name or "call"


def _func_name(func: Callable) -> str:
    if isinstance(func, Delayed):
        return "call"
    if isinstance(func, operator.methodcaller):
        return "methodcaller"
    name = getattr(func, "__name__", None) or type(func).__name__
    return "lambda" if name == "<lambda>" else name


class _Node:
    """One task: its key, its pickled call, and its inputs (delayed values and futures, each once,
    in the order of their `Dep(i)`). A node made from a future (`persist`) has no call."""

    __slots__ = ("key", "call", "inputs", "future")

    def __init__(self, key: str, call: bytes | None, inputs: list, future: Any = None):
        self.key = key
        self.call = call
        self.inputs = inputs
        self.future = future


class _Inputs:
    """Replaces the delayed values and futures among a call's arguments by `Dep(i)`."""

    def __init__(self) -> None:
        self.inputs: list = []  # Delayed or distributed.Future
        self.index: dict[str, int] = {}

    def replace(self, obj: Any) -> Any:
        t = type(obj)
        if isinstance(obj, Delayed) or t is Future:
            key = obj.key
            i = self.index.get(key)
            if i is None:
                i = self.index[key] = len(self.inputs)
                self.inputs.append(obj)
            return Dep(i)
        # The worker puts inputs back in exact lists, tuples and dict values only.
        if t is list or t is tuple:
            return t(self.replace(x) for x in obj)
        if t is dict:
            return {k: self.replace(v) for k, v in obj.items()}
        if t in (set, frozenset) and any(isinstance(x, Delayed) or type(x) is Future for x in obj):
            raise TypeError("rask does not support delayed values or futures inside sets; pass a list")
        return obj


def _make_call(func: Callable, args: tuple, kwargs: dict, *, name: str | None, pure: bool, prefix: str | None = None) -> _Node:
    inputs = _Inputs()
    call = cloudpickle.dumps((func, inputs.replace(args), inputs.replace(kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
    if name is not None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"dask_key_name must be a non-empty str in rask, got {name!r}")
        key = name
    else:
        p = _prefix(prefix or _func_name(func))
        if pure:
            # Dask's tokenize: the same call of the same function on the same inputs gets the
            # same key, so the cluster computes it once.
            h = hashlib.sha256(call)
            for d in inputs.inputs:
                h.update(b"\0" + d.key.encode())
            key = f"{p}-{h.hexdigest()[:32]}"
        else:
            key = _rask.unique_key(p)
    return _Node(key, call, inputs.inputs)


class Delayed:
    """A lazy value: the result of a call not made yet (Dask's `Delayed`).

    Calling, indexing, attribute access and operators on it make new delayed values; `compute()`
    runs the graph on the cluster. It has no truth value (`if x:` raises), as in Dask."""

    __slots__ = ("_node", "_length", "__weakref__")

    def __init__(self, node: _Node, length: int | None = None):
        self._node = node
        self._length = length

    @property
    def key(self) -> str:
        return self._node.key

    def compute(self, **kwargs: Any) -> Any:
        """The value, computed on the cluster (see `rask.compute`)."""
        (value,) = compute(self, **kwargs)
        return value

    def persist(self, **kwargs: Any) -> Delayed:
        """Starts computing on the cluster and returns a delayed value backed by the result."""
        (value,) = persist(self, **kwargs)
        return value

    def visualize(self, filename: str = "mydask", format: str | None = None, **kwargs: Any) -> str:
        """Writes the graph (see `rask.visualize`)."""
        return visualize(self, filename=filename, format=format, **kwargs)

    def __dask_keys__(self) -> list[str]:
        return [self.key]

    def __call__(self, *args: Any, **kwargs: Any) -> Delayed:
        pure = kwargs.pop("pure", False)
        name = kwargs.pop("dask_key_name", None)
        return Delayed(_make_call(self, args, kwargs, name=name, pure=pure))

    def __getattr__(self, attr: str) -> Delayed:
        if attr.startswith("_"):
            raise AttributeError(f"Attribute {attr} not found")
        return _DelayedAttr(self, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr in Delayed.__slots__:
            object.__setattr__(self, attr, value)
        else:
            raise TypeError("Delayed objects are immutable")

    def __setitem__(self, index: Any, value: Any) -> None:
        raise TypeError("Delayed objects are immutable")

    def __getitem__(self, index: Any) -> Delayed:
        return Delayed(_make_call(operator.getitem, (self, index), {}, name=None, pure=True, prefix="getitem"))

    def __iter__(self) -> Iterator[Delayed]:
        if self._length is None:
            raise TypeError("Delayed objects of unspecified length are not iterable")
        return iter([self[i] for i in range(self._length)])

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("Delayed objects of unspecified length have no len()")
        return self._length

    def __bool__(self) -> bool:
        raise TypeError("Truth of Delayed objects is not supported")

    __nonzero__ = __bool__

    def __hash__(self) -> int:
        return hash(self.key)

    def __reduce__(self):
        raise TypeError(f"cannot pickle the delayed value {self.key}: pass it to delayed calls, where it becomes an input")

    def __repr__(self) -> str:
        return f"Delayed({self.key!r})"

    def __dir__(self) -> list[str]:
        return sorted(set(dir(type(self))) | {"key"})


class _DelayedAttr(Delayed):
    """`x.attr`: the attribute of a delayed value; calling it calls the method on the worker."""

    __slots__ = ("_obj", "_attr")

    def __init__(self, obj: Delayed, attr: str):
        node = _make_call(getattr, (obj, attr), {}, name=None, pure=True, prefix="getattr")
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_attr", attr)
        super().__init__(node)

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr in Delayed.__slots__ or attr in _DelayedAttr.__slots__:
            object.__setattr__(self, attr, value)
        else:
            raise TypeError("Delayed objects are immutable")

    def __call__(self, *args: Any, **kwargs: Any) -> Delayed:
        pure = kwargs.pop("pure", False)
        name = kwargs.pop("dask_key_name", None)
        node = _make_call(call_method, (self._obj, self._attr, args, kwargs), {}, name=name, pure=pure, prefix=self._attr)
        return Delayed(node)


def _bind_operator(op: Callable, reflected: bool = False) -> Callable:
    name = op.__name__.strip("_")

    def method(self: Delayed, *other: Any) -> Delayed:
        args = (other[0], self) if reflected else (self, *other)
        return Delayed(_make_call(op, args, {}, name=None, pure=True, prefix=name))

    return method


for _op in (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod,
    operator.pow, operator.matmul, operator.and_, operator.or_, operator.xor, operator.lshift,
    operator.rshift, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
):
    _name = _op.__name__.strip("_")
    setattr(Delayed, f"__{_name}__", _bind_operator(_op))
    if _name not in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(Delayed, f"__r{_name}__", _bind_operator(_op, reflected=True))
for _op in (operator.neg, operator.pos, operator.invert, operator.abs):
    setattr(Delayed, f"__{_op.__name__.strip('_')}__", _bind_operator(_op))
# Comparisons make delayed values, so the hash is the key's (as in Dask).
Delayed.__hash__ = lambda self: hash(self.key)  # type: ignore[method-assign]


class _DelayedFunction:
    """`delayed(func)`: calling it makes a delayed call (Dask's `DelayedLeaf` of a function)."""

    __slots__ = ("func", "name", "pure", "nout")

    def __init__(self, func: Callable, name: str | None, pure: bool, nout: int | None):
        self.func, self.name, self.pure, self.nout = func, name, pure, nout

    @property
    def key(self) -> str:
        return _prefix(self.name or _func_name(self.func))

    def __call__(self, *args: Any, **kwargs: Any) -> Delayed:
        pure = kwargs.pop("pure", self.pure)
        name = kwargs.pop("dask_key_name", None)
        node = _make_call(self.func, args, kwargs, name=name, pure=bool(pure))
        return Delayed(node, self.nout)

    def __repr__(self) -> str:
        return f"Delayed({self.key!r})"


def delayed(obj: Any, name: str | None = None, pure: bool | None = None, nout: int | None = None, traverse: bool = True) -> Any:
    """Wraps a function so that calling it builds a graph instead of running (Dask's `delayed`),
    or a value so that it becomes a node of graphs.

    `delayed(f)(*args, **kwargs)` is a `Delayed`; its arguments may hold other delayed values and
    futures (in lists, tuples and dict values too). `pure=True` gives a call a key made from the
    function and its arguments, so equal calls are one task; otherwise each call is a new task
    (Dask's default too). `nout=n` makes the result unpackable into `n` delayed values.
    `dask_key_name=` among the call's keywords names its key. `name=` names the wrapped function
    (its `key`) or value (its key), not the calls' keys, as in Dask."""
    if isinstance(obj, (Delayed, _DelayedFunction)):
        return obj
    if nout is not None and (not isinstance(nout, int) or isinstance(nout, bool) or nout < 0):
        raise ValueError(f"nout must be None or a non-negative integer, got {nout!r}")
    if not traverse:
        raise TypeError("rask does not support traverse=False")
    if callable(obj):
        return _DelayedFunction(obj, name, bool(pure), nout)
    # A value: a task returning it, reading the delayed values and futures inside it.
    key = name if name is not None else None
    node = _make_call(identity, (obj,), {}, name=key, pure=bool(pure), prefix=type(obj).__name__)
    return Delayed(node, nout)


# ----- computing ----------------------------------------------------------------------------------


def _find(obj: Any, found: dict[str, Delayed]) -> None:
    """The delayed values in `obj` (itself, or inside lists, tuples, sets and dict values)."""
    if isinstance(obj, Delayed):
        found.setdefault(obj.key, obj)
    elif type(obj) in (list, tuple, set, frozenset):
        for x in obj:
            _find(x, found)
    elif type(obj) is dict:
        for x in obj.values():
            _find(x, found)


def _is_array(obj: Any) -> bool:
    """Whether `obj` is a `rask.array.Array`: its class says so (`_rask_array`), so this module
    needs neither `rask.array` nor numpy."""
    return getattr(type(obj), "_rask_array", False) is True


def _find_arrays(obj: Any, found: dict[int, Any]) -> None:
    """The `rask.array` arrays in `obj` (itself, or inside lists, tuples, sets and dict values),
    by identity."""
    if _is_array(obj):
        found.setdefault(id(obj), obj)
    elif type(obj) in (list, tuple, set, frozenset):
        for x in obj:
            _find_arrays(x, found)
    elif type(obj) is dict:
        for x in obj.values():
            _find_arrays(x, found)


def _replace(obj: Any, values: dict[Any, Any]) -> Any:
    """`obj` with its delayed values (by key) and arrays (by identity) replaced by `values`."""
    if isinstance(obj, Delayed):
        return values[obj.key]
    if _is_array(obj):
        return values[id(obj)]
    t = type(obj)
    if t in (list, tuple, set, frozenset):
        return t(_replace(x, values) for x in obj)
    if t is dict:
        return {k: _replace(v, values) for k, v in obj.items()}
    return obj


def graph(roots: list[Delayed], held: dict[str, Any]) -> tuple[list[tuple[str, bytes, list[str]]], dict[str, Any]]:
    """The tasks to send for `roots`, inputs first, as `(key, call, input keys)`; and the futures
    they read that are already on the cluster (`held`: the client's live futures by key, which
    stand in for tasks of the same key)."""
    tasks: list[tuple[str, bytes, list[str]]] = []
    external: dict[str, Any] = {}
    seen: set[str] = set()
    # Iterative post-order walk: a long chain of calls must not hit Python's recursion limit.
    stack: list[tuple[Any, bool]] = [(r, False) for r in reversed(roots)]
    while stack:
        item, expanded = stack.pop()
        key = item.key
        if expanded:
            node = item._node
            tasks.append((key, node.call, [d.key for d in node.inputs]))
            continue
        if key in seen:
            continue
        seen.add(key)
        if type(item) is Future:
            external[key] = item
            continue
        node = item._node
        if node.future is not None:
            external[key] = node.future
            continue
        if key in held:
            external[key] = held[key]
            continue
        stack.append((item, True))
        for d in reversed(node.inputs):
            if d.key not in seen:
                stack.append((d, False))
    return tasks, external


def compute(*args: Any, traverse: bool = True, optimize_graph: bool = True, scheduler: Any = None, get: Any = None, **kwargs: Any) -> tuple:
    """The values of delayed objects, computed together as one graph (Dask's `dask.compute`):
    a tuple with one item per argument, delayed values inside lists, tuples, sets and dict
    values replaced by their values, anything else as it is. Runs on `scheduler=` (a
    `rask.distributed.Client`) or the default client."""
    if get is not None:
        raise TypeError("get= is gone from Dask too; use scheduler=")
    if kwargs:
        raise TypeError(f"rask's compute does not take {', '.join(sorted(kwargs))}")
    client = client_for(scheduler)
    found: dict[str, Delayed] = {}
    arrays: dict[int, Any] = {}
    for a in args:
        if traverse:
            _find(a, found)
            _find_arrays(a, arrays)
        elif isinstance(a, Delayed):
            found.setdefault(a.key, a)
        elif _is_array(a):
            arrays.setdefault(id(a), a)
    if not found and not arrays:
        return args
    values: dict[Any, Any] = {}
    if found:
        futures = client._compute_graph(list(found.values()))
        values.update(zip(found, client.gather(futures)))
    if arrays:
        # rask.array's arrays: one graph of native kernels, chunks they share computed once. The
        # array class computes them (`rask.array.Array._rask_compute_all`).
        found_arrays = list(arrays.values())
        values.update(zip(arrays, type(found_arrays[0])._rask_compute_all(found_arrays, client)))
    if traverse:
        return tuple(_replace(a, values) for a in args)
    return tuple(values[a.key] if isinstance(a, Delayed) else values[id(a)] if _is_array(a) else a for a in args)


def persist(*args: Any, scheduler: Any = None, **kwargs: Any) -> tuple:
    """Starts computing the delayed values among `args` and returns them backed by their results
    on the cluster (Dask's `dask.persist`): computing them later reads those results."""
    if kwargs:
        raise TypeError(f"rask's persist does not take {', '.join(sorted(kwargs))}")
    client = client_for(scheduler)
    return tuple(client.persist(a) for a in args)


def from_future(future: Any, length: int | None = None) -> Delayed:
    """A delayed value standing for a future's result."""
    return Delayed(_Node(future.key, None, [], future), length)


def visualize(*args: Any, filename: str = "mydask", format: str | None = None, **kwargs: Any) -> str:
    """Writes the graph of the delayed values among `args` as Graphviz DOT (`filename` with the
    extension `.dot`) and, when Graphviz's `dot` is on the PATH, as SVG beside it (Dask's
    `visualize`; `format` may be None, "dot" or "svg"). Returns the path of the SVG if one was
    rendered, else of the DOT file. Results already on the cluster are drawn as ellipses."""
    if format not in (None, "dot", "svg"):
        raise ValueError(f"rask writes DOT and SVG only, not format={format!r}")
    if kwargs:
        raise TypeError(f"rask's visualize does not take {', '.join(sorted(kwargs))}")
    found: dict[str, Delayed] = {}
    for a in args:
        _find(a, found)
    if not found:
        raise ValueError("visualize needs at least one delayed value")
    tasks, _ = graph(list(found.values()), {})
    dot, svg = _rask.visualize([(k, inputs) for k, _, inputs in tasks], str(filename))
    return svg if svg is not None and format != "dot" else dot

