"""Pure helpers: the shape of a JSON answer, and the metric families of a Prometheus text answer.

A JSON value's *shape* is its JSON type, with the keys of objects and the shapes of list elements
compared recursively. Two answers agree when their shapes do; the differences are reported as
`path: what` lines so a failing test says exactly where rask and Dask part ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def json_type(value: object) -> str:
    """The JSON type of a parsed value; integers and fractional numbers are told apart."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def shape_differences(
    rask: object,
    dask: object,
    path: str = "$",
    *,
    nullable: frozenset[str] = frozenset(),
    subset: bool = False,
) -> list[str]:
    """Where `rask`'s shape differs from `dask`'s, as `path: what` lines (empty: same shape).

    `nullable`: paths where `null` on one side and any value on the other agree (Dask's
    `idle_since` is a float or null depending on the moment it is asked).
    `subset`: objects on rask's side may lack keys Dask's have (never the other way round).
    List elements are compared with the first element of Dask's list; an empty list on either
    side agrees with any list.
    """
    rask_type, dask_type = json_type(rask), json_type(dask)
    if rask_type != dask_type:
        if path in nullable and "null" in (rask_type, dask_type):
            return []
        return [f"{path}: rask has {rask_type} {short(rask)}, Dask has {dask_type} {short(dask)}"]
    if rask_type == "object":
        assert isinstance(rask, dict) and isinstance(dask, dict)
        problems = []
        for key in sorted(rask.keys() - dask.keys()):
            problems.append(f"{path}.{key}: only rask has it ({short(rask[key])})")
        if not subset:
            for key in sorted(dask.keys() - rask.keys()):
                problems.append(f"{path}.{key}: only Dask has it ({short(dask[key])})")
        for key in sorted(rask.keys() & dask.keys()):
            problems += shape_differences(
                rask[key], dask[key], f"{path}.{key}", nullable=nullable, subset=subset
            )
        return problems
    if rask_type == "array":
        assert isinstance(rask, list) and isinstance(dask, list)
        if not dask:
            return []
        problems = []
        for i, element in enumerate(rask):
            problems += shape_differences(
                element, dask[0], f"{path}[{i}]", nullable=nullable, subset=subset
            )
        return problems
    return []


def short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Family:
    """One metric family of a Prometheus or OpenMetrics text answer."""

    name: str
    kind: str
    label_names: set[str] = field(default_factory=set)
    label_values: dict[str, set[str]] = field(default_factory=dict)
    samples: int = 0


# Suffixes a sample's name may add to its family's name (text format 0.0.4 and OpenMetrics 1.0).
_SAMPLE_SUFFIXES = ("_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def family_name(type_name: str, kind: str, openmetrics: bool) -> str:
    """The name a family is known by: the name Prometheus stores its samples under. Counters end
    in `_total`: the text format 0.0.4 (Dask's) names them so in `# TYPE`, OpenMetrics (rask's
    scheduler) names them without it. Keying by the stored name keeps Dask's worker gauge
    `dask_worker_transfer_incoming_count` apart from its counter
    `dask_worker_transfer_incoming_count_total`."""
    if openmetrics and kind == "counter":
        return type_name + "_total"
    return type_name


def parse_metrics(text: str) -> dict[str, Family]:
    """The families of a metrics answer by the name Prometheus stores them under (see
    `family_name`), with the label names and values of their samples. OpenMetrics is told from
    the text format 0.0.4 by its closing `# EOF`.

    Raises ValueError on a line that is neither a comment nor a sample, or on a sample of no
    declared family, so a garbled answer fails loudly instead of comparing as empty.
    """
    lines = text.splitlines()
    openmetrics = any(line.strip() == "# EOF" for line in lines)
    families: dict[str, Family] = {}
    by_type_name: dict[str, Family] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                type_name, kind = parts[2], parts[3].strip()
                family = Family(family_name(type_name, kind, openmetrics), kind)
                families[family.name] = family
                by_type_name[type_name] = family
            continue
        match = _SAMPLE.match(line)
        if not match:
            raise ValueError(f"line {number} is not a metric sample: {line!r}")
        sample_name, labels = match.group(1), match.group(2) or ""
        family = families.get(sample_name) or by_type_name.get(sample_name)
        if family is None:
            for suffix in _SAMPLE_SUFFIXES:
                if sample_name.endswith(suffix):
                    family = by_type_name.get(sample_name[: -len(suffix)])
                    if family is not None:
                        break
        if family is None:
            raise ValueError(f"line {number}: sample {sample_name!r} has no # TYPE line")
        family.samples += 1
        for label, value in _LABEL.findall(labels):
            family.label_names.add(label)
            family.label_values.setdefault(label, set()).add(value)
    return families
