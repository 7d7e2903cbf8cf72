"""NAME=VALUE strings (command-line experiments) -> keyword overrides for a params dataclass, each value parsed as
its field's type: bool from 1/true/yes, tuples of ints from comma lists, numbers and strings by the default's type."""

from __future__ import annotations

import dataclasses


def parse_overrides(params_cls, items: list[str]) -> dict:
    """ValueError naming the known fields for an item that is not NAME=VALUE with NAME a field of params_cls."""
    defaults = params_cls()
    fields = {f.name for f in dataclasses.fields(params_cls)}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"{item!r}: expected NAME=VALUE with NAME a {params_cls.__name__} field, one of "
                             f"{', '.join(sorted(fields))}")
        default = getattr(defaults, name)
        if isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, tuple):
            out[name] = tuple(int(v) for v in value.split(","))
        else:
            out[name] = type(default)(value)
    return out
