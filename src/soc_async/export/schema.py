"""One schema per export format, stated once as a msgspec Struct and derived from there.

A row type is a Struct whose fields are strings, integers, floats, booleans, optional
ones of those, lists and nested Structs: never a ``dict`` with free keys, so every row
of a file has the same keys and `datasets` infers one schema for the whole file. From
the Struct come

- :func:`hf_features`: the ``features`` list of the dataset card's YAML front matter,
  in the form ``datasets`` writes and reads (``dtype``, ``struct``, ``list``);
- :func:`arrow_schema`: the pyarrow schema the Parquet files are written with (pyarrow
  is imported only there: it is the ``export`` extra).
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi

__all__ = ["arrow_schema", "hf_features"]


def _scalar(t: mi.Type) -> str | None:
    """The `datasets` dtype of a scalar type; None when ``t`` is not a scalar."""
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        return _scalar(inner[0]) if len(inner) == 1 else None
    if isinstance(t, mi.StrType | mi.LiteralType):
        return "string"
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return "int64"
    if isinstance(t, mi.FloatType):
        return "float64"
    return None


def _unwrap(t: mi.Type) -> mi.Type:
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(inner) == 1:
            return inner[0]
    return t


def _feature(t: mi.Type) -> Any:
    """The YAML value of a type inside ``list:``: a dtype name, a field list or a list."""
    t = _unwrap(t)
    dtype = _scalar(t)
    if dtype is not None:
        return dtype
    if isinstance(t, mi.StructType):
        return [_named(f.encode_name, f.type) for f in t.fields]
    if isinstance(t, mi.ListType):
        return {"list": _feature(t.item_type)}
    raise TypeError(f"no dataset feature for {t!r}: use str, int, float, bool, list or a Struct")


def _named(name: str, t: mi.Type) -> dict[str, Any]:
    t = _unwrap(t)
    dtype = _scalar(t)
    if dtype is not None:
        return {"name": name, "dtype": dtype}
    if isinstance(t, mi.StructType):
        return {"name": name, "struct": _feature(t)}
    if isinstance(t, mi.ListType):
        return {"name": name, "list": _feature(t.item_type)}
    raise TypeError(f"{name}: no dataset feature for {t!r}")


def hf_features(row: type[msgspec.Struct]) -> list[dict[str, Any]]:
    """The ``dataset_info.features`` list of a dataset card for rows of type ``row``."""
    info = mi.type_info(row)
    assert isinstance(info, mi.StructType)
    return [_named(f.encode_name, f.type) for f in info.fields]


def arrow_schema(row: type[msgspec.Struct]) -> Any:
    """The ``pyarrow.Schema`` of rows of type ``row`` (needs the ``export`` extra)."""
    import pyarrow as pa

    def arrow(t: mi.Type) -> Any:
        t = _unwrap(t)
        scalar = {
            "string": pa.string(),
            "bool": pa.bool_(),
            "int64": pa.int64(),
            "float64": pa.float64(),
        }.get(_scalar(t) or "")
        if scalar is not None:
            return scalar
        if isinstance(t, mi.StructType):
            return pa.struct([pa.field(f.encode_name, arrow(f.type)) for f in t.fields])
        if isinstance(t, mi.ListType):
            return pa.list_(arrow(t.item_type))
        raise TypeError(f"no Arrow type for {t!r}")

    info = mi.type_info(row)
    assert isinstance(info, mi.StructType)
    return pa.schema([pa.field(f.encode_name, arrow(f.type)) for f in info.fields])
