"""rask.delayed and rask.compute against a real scheduler and workers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cloudpickle
import pytest

import rask
import rask._futures
from rask import compute, delayed
from rask.distributed import Client

# This module is not importable on the workers: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inc(x):
    return x + 1


def custom_op(x):
    return 2 * x * x


def add(a, b):
    return a + b


def test_the_seed_notebooks_delayed_cell_gives_131(client: Client):
    # worker/rask/src/jobs.rs seed_delayed_graph: sum(add(inc(x), custom_op(x)) for x in 0..6).
    results = []
    for x in range(6):
        a = delayed(inc)(x)
        b = delayed(custom_op)(x)
        results.append(delayed(add)(a, b))
    total = delayed(sum)(results)
    assert total.compute() == 131
    assert compute(total) == (131,)


def test_compute_many_together_and_values_inside_collections(client: Client):
    a = delayed(inc)(1)
    b = delayed(add)(a, 10)
    out = compute(a, [b, 5], {"k": (a, b)}, "plain")
    assert out == (2, [12, 5], {"k": (2, 12)}, "plain")
    assert compute() == ()


def test_arguments_hold_delayed_values_in_lists_tuples_and_dicts(client: Client):
    a, b = delayed(inc)(1), delayed(inc)(2)
    total = delayed(lambda xs, d, t: sum(xs) + d["b"] + sum(t))([a, b, a], {"b": b}, (1, a), dask_key_name="total")
    assert total.key == "total"
    assert total.compute() == (2 + 3 + 2) + 3 + (1 + 2)


def test_keyword_arguments_and_closures(client: Client):
    offset = 100
    shifted = delayed(lambda x, by=0: x + by + offset)
    assert shifted(1, by=delayed(inc)(1)).compute() == 103


def test_keys_are_named_after_the_function(client: Client):
    assert delayed(inc)(1).key.startswith("inc-")
    assert delayed(lambda: 1)().key.startswith("lambda-")
    assert delayed(inc, name="plus_one").key == "plus_one"
    assert delayed(inc, name="plus_one")(1).key.startswith("inc-")
    assert delayed(5, name="five").key == "five"
    # Each impure call is a new task; pure calls of equal inputs share a key.
    assert delayed(inc)(1).key != delayed(inc)(1).key
    assert delayed(inc, pure=True)(1).key == delayed(inc, pure=True)(1).key
    assert delayed(inc, pure=True)(1).key != delayed(inc, pure=True)(2).key
    assert delayed(inc)(1, pure=True).key == delayed(inc)(1, pure=True).key


def test_a_pure_call_computed_twice_runs_on_the_held_result(client: Client):
    calls = delayed(inc, pure=True)(41)
    held = client.compute(calls)
    assert held.result(60) == 42
    # The same key again: the future held is reused, not a second task.
    again = client.compute(delayed(inc, pure=True)(41))
    assert again is held
    assert delayed(add, pure=True)(calls, 1).compute() == 43


def test_dask_key_name_must_be_a_non_empty_string(client: Client):
    with pytest.raises(TypeError, match="dask_key_name"):
        delayed(inc)(1, dask_key_name=("x", 1))
    with pytest.raises(TypeError, match="dask_key_name"):
        delayed(inc)(1, dask_key_name="")


def test_nout_unpacks_a_tuple_result(client: Client):
    q, r = delayed(divmod, nout=2)(17, 5)
    assert compute(q, r) == (3, 2)
    with pytest.raises(TypeError, match="unspecified length"):
        iter(delayed(divmod)(17, 5))
    with pytest.raises(ValueError, match="nout"):
        delayed(divmod, nout=-1)


def test_attributes_methods_items_and_operators(client: Client):
    text = delayed(str)("a,b,c")
    assert text.upper().compute() == "A,B,C"
    assert text.split(",")[1].compute() == "b"
    c = delayed(complex)(3, 4)
    assert c.real.compute() == 3.0
    x, y = delayed(inc)(1), delayed(inc)(2)
    assert compute(x + y, x - y, x * 10, 2**y, -x, abs(-y), x < y, x == 2, 1 + x, 7 // y) == (5, -1, 20, 8, -2, 3, True, True, 3, 2)


def test_delayed_values_wrap_data(client: Client):
    data = delayed([1, 2, 3])
    assert data.key.startswith("list-")
    assert delayed(sum)(data).compute() == 6
    assert delayed(data) is data
    wrapped = delayed(inc)
    assert delayed(wrapped) is wrapped and wrapped(1).compute() == 2
    # A value holding delayed values becomes a task reading them.
    assert delayed({"a": delayed(inc)(1)}).compute() == {"a": 2}


def test_delayed_values_have_no_truth_value_and_are_immutable(client: Client):
    x = delayed(inc)(1)
    with pytest.raises(TypeError, match="Truth"):
        bool(x)
    with pytest.raises(TypeError, match="immutable"):
        x.attr = 1
    with pytest.raises(TypeError, match="cannot pickle the delayed value"):
        cloudpickle.dumps(x)


def test_sets_of_delayed_values_are_refused(client: Client):
    with pytest.raises(TypeError, match="inside sets"):
        delayed(len)({delayed(inc)(1)})


def test_exceptions_reach_compute_with_their_type(client: Client):
    def fail(x):
        raise KeyError(f"no {x}")

    with pytest.raises(KeyError, match="no 1"):
        delayed(inc)(delayed(fail)(1)).compute()


def test_futures_are_inputs_of_delayed_calls(client: Client):
    f = client.submit(inc, 1)
    assert delayed(add)(f, 1).compute() == 3


def test_compute_uses_the_client_given_or_the_default(client: Client, scheduler_address: str):
    assert delayed(inc)(1).compute(scheduler=client) == 2
    with pytest.raises(ValueError, match="scheduler= must be a rask.distributed.Client"):
        delayed(inc)(1).compute(scheduler="sync")
    with pytest.raises(TypeError, match="does not take"):
        compute(delayed(inc)(1), unknown=True)
    other = Client(scheduler_address)
    try:
        assert rask.distributed.default_client() is other
        assert delayed(inc)(2).compute() == 3
    finally:
        other.close()
    # Closing the default falls back to the client before it.
    assert rask.distributed.default_client() is client


def test_compute_without_a_client_says_how_to_start_one(client: Client, monkeypatch: pytest.MonkeyPatch):
    # The registry of default clients lives in rask._futures, below every module that uses it.
    monkeypatch.setattr(rask._futures, "_defaults", [])
    with pytest.raises(ValueError, match="No clients found"):
        delayed(inc)(1).compute()


def test_a_long_chain_does_not_hit_the_recursion_limit(client: Client):
    x = delayed(0)
    for _ in range(sys.getrecursionlimit() + 100):
        x = delayed(inc)(x)
    assert x.compute() == sys.getrecursionlimit() + 100


def test_visualize_writes_dot_and_svg_with_graphviz(client: Client, tmp_path: Path):
    total = delayed(add)(delayed(inc)(1), delayed(custom_op)(2))
    written = total.visualize(filename=str(tmp_path / "graph"))
    dot = (tmp_path / "graph.dot").read_text()
    assert dot.startswith("digraph")
    assert dot.count("[label=") == 3 and dot.count(" -> ") == 2
    assert 'label="inc"' in dot and 'label="custom_op"' in dot and 'label="add"' in dot
    if shutil.which("dot"):
        assert written == str(tmp_path / "graph.svg")
        assert "<svg" in Path(written).read_text()
    else:
        assert written == str(tmp_path / "graph.dot")
    assert rask.visualize(total, filename=str(tmp_path / "g2"), format="dot") == str(tmp_path / "g2.dot")
    with pytest.raises(ValueError, match="format"):
        total.visualize(filename=str(tmp_path / "g3"), format="png")
    with pytest.raises(OSError, match="cannot write the graph"):
        total.visualize(filename=str(tmp_path / "missing" / "dir" / "g"))
