"""The placeholder of a dependency inside a pickled call.

The client replaces each future among a task's arguments by `Dep(i)`, `i` being that future's
position among the task's inputs; the worker puts the input's value in its place before the call.
It pickles by reference to `rask._deps.Dep`, so both sides must have this module.
"""

from __future__ import annotations


class Dep:
    """Input `i` of the task that this pickled call belongs to."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i

    def __reduce__(self):
        return (Dep, (self.i,))

    def __eq__(self, other: object) -> bool:
        return type(other) is Dep and other.i == self.i

    def __hash__(self) -> int:
        return hash((Dep, self.i))

    def __repr__(self) -> str:
        return f"Dep({self.i})"
