"""Settings of the platform's config: each field's type and range in its annotation, checked in
one step, with an error that names the setting.

A config dataclass declares a setting as

    max_context_tokens: Annotated[Int, Field(ge=1)] = 8192

and calls ``check(self)`` in its ``__post_init__``, so that a config is valid however it was built
(from a Serve config's args, by the CLI, by ``dataclasses.replace``). Pydantic validates each
annotated field, strictly: a YAML string "8192" is not a number, nor "false" a switch (a
non-empty string would turn it on). Fields without constraints (a nested section, a value another
type parses) are left to their own types. A failure is a SettingError naming the setting by its
path in the config, which the loader extends section by section:

    limits.max_context_tokens: must be >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from blockrag.errors import InvalidRequestError

Int = Annotated[int, Field(strict=True)]  # a whole number; not a bool, a float or a string
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]  # an int or a finite float
Switch = Annotated[bool, Field(strict=True)]  # true or false only
Text = Annotated[str, Field(strict=True)]


class SettingError(InvalidRequestError):
    """A setting's value is refused: ``path`` names it (``limits.max_context_tokens``)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")

    def under(self, section: str) -> SettingError:
        """The same error, its path prefixed by the section that holds it."""
        return SettingError(f"{section}.{self.path}", self.problem)


def check(config: Any) -> None:
    """Validate every annotated field of the dataclass ``config`` in place (the validated value,
    e.g. 2 as 2.0 for a Number, replaces the given one); SettingError on the first bad one."""
    for name, (adapter, optional) in _adapters(type(config)).items():
        value = getattr(config, name)
        try:
            object.__setattr__(config, name, adapter.validate_python(value))  # frozen dataclasses too
        except ValidationError as e:
            raise SettingError(name, _problem(e.errors(), value, optional)) from None


@functools.cache
def _adapters(kind: type) -> dict[str, tuple[TypeAdapter, bool]]:
    """Per class, once: field name -> (its validator, whether null is allowed), for the fields
    whose annotation carries constraints (Annotated or Literal, alone or in a union with None)."""
    hints = typing.get_type_hints(kind, include_extras=True)
    adapters = {}
    for f in dataclasses.fields(kind):
        hint = hints[f.name]
        parts = typing.get_args(hint) if _is_union(hint) else (hint,)
        if any(typing.get_origin(p) in (Annotated, typing.Literal) for p in parts):
            adapters[f.name] = (TypeAdapter(hint), type(None) in parts)
    return adapters


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}
_KINDS = {"int_type": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
          "finite_number": "a finite number", "bool_type": "true or false", "string_type": "a string",
          "dict_type": "a mapping", "list_type": "a list"}


def _problem(errors: list[dict[str, Any]], value: Any, optional: bool) -> str:
    """Pydantic's errors as one phrase: 'must be >= 1, got 0'. A union with None reports an error
    for each member: the one about the value's own type is kept."""
    relevant = [e for e in errors if e["type"] != "none_required"] or errors
    error = relevant[0]
    kind, ctx = error["type"], error.get("ctx") or {}
    or_null = " or null" if optional else ""
    if kind in _BOUNDS:
        sign, key = _BOUNDS[kind]
        bound = ctx[key]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound  # 0, not 0.0
        return f"must be {sign} {bound}{or_null}, got {value!r}"
    if kind in _KINDS:
        return f"must be {_KINDS[kind]}{or_null}, got {value!r}"
    if kind == "literal_error":
        return f"must be {ctx['expected']}, got {value!r}"
    message = error["msg"]
    return f"{message[0].lower()}{message[1:]}, got {value!r}"
