"""How one record becomes another: the fields they share carried by name, none copied by hand.

A conversion is a function generated once per pair of types, the way attrs generates
``__init__``: it reads each shared field of the source and passes it on, so it costs
what a hand-written copy did (these run for every message), and a field added to
both types travels without anyone remembering to copy it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from attrs import AttrsInstance

T = TypeVar("T", bound=AttrsInstance)


def converter(source: type[AttrsInstance], into: type[T], *given: str) -> Callable[..., T]:
    """A function ``(record, *, <given>...)`` that builds ``into`` from a ``source`` record.

    Each field ``into`` shares by name with ``source`` comes from the record (a name
    means the same thing on every record that has it); the ``given`` keywords are
    what the conversion adds or decides, and win over a shared field of that name.
    """
    have = attrs.fields_dict(source)
    fields = [a for a in attrs.fields(into) if a.name not in given]
    carried = [a.name for a in fields if a.name in have]
    missing = [a.name for a in fields if a.name not in have and a.default is attrs.NOTHING]
    if missing:
        raise TypeError(f"{source.__name__} -> {into.__name__}: nothing gives {missing}")
    name = f"{source.__name__}_to_{into.__name__}"
    parameters = ", ".join(["record", *(["*", *given] if given else [])])
    arguments = ", ".join([f"{n}=record.{n}" for n in carried] + [f"{n}={n}" for n in given])
    namespace: dict[str, Any] = {"into": into}
    # The code is made of attrs field names only.
    exec(f"def {name}({parameters}):\n    return into({arguments})\n", namespace)
    convert: Callable[..., T] = namespace[name]
    return convert
