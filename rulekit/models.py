"""Shared pydantic building blocks: the strict base model and small value types."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, Self, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticUndefined

_Model = TypeVar("_Model", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every model read from a person's file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """An instance holding ``values`` as they are, without validation: for data rulekit
        built itself from values already checked (a provider's normalized events, per webhook),
        where validating again is most of the cost. The caller answers for what validation
        would ensure: every value of its field's type, times timezone-aware, no unknown field.
        Fields left out get their defaults, as in validation; a required one left out is a
        ``TypeError``. pydantic's ``model_construct`` does the same, several times slower."""
        return trusted_instance(cls, values)

    def _derive_trusted(self) -> None:
        """Set what validation derives from other fields, on an instance :meth:`trusted` made
        (a subclass's model validators' part, where it has some)."""

    def replaced(self, **changes: Any) -> Self:
        """A shallow copy with ``changes`` made, without validation: ``model_copy(update=...)``
        at a fraction of its cost, with the same duty as :meth:`trusted` for the values."""
        model = _new(type(self))  # (``self.__class__`` goes through pydantic's attribute hook)
        _set_dict(model, {**self.__dict__, **changes})
        _set_fields_set(model, self.__pydantic_fields_set__.union(changes))
        _set_extra(model, None)
        private = self.__pydantic_private__
        _set_private(model, dict(private) if private is not None else None)
        return model


_new = object.__new__
# pydantic's slots, set through their descriptors (what ``object.__setattr__`` finds by name,
# without the search by name)
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_BUILDERS: dict[type[BaseModel], Callable[[dict[str, Any]], BaseModel]] = {}


def trusted_instance(cls: type[_Model], values: dict[str, Any]) -> _Model:
    """``cls.trusted(**values)``, for callers that have the values as a dict already (without
    passing them on as keywords)."""
    return (_BUILDERS.get(cls) or _builder(cls))(values)  # type: ignore[return-value]


def trusted_whole(cls: type[_Model], fields: dict[str, Any], given: frozenset[str]) -> _Model:
    """:func:`trusted_instance` for a caller that writes out every field itself: ``fields``
    holds all of ``cls``'s fields in the class's order (defaults included, a factory's made
    anew) and becomes the instance's ``__dict__`` as it is (the caller hands it over);
    ``given`` names the fields counted as set (``model_fields_set``), as the keywords
    validation would have been given. No copy, merge or default to look up: for the models a
    provider builds several times per webhook. A dict short of a field (one added to the class
    later) is a ``TypeError``."""
    build = _WHOLE.get(cls) or whole_builder(cls)
    return build(fields, given)  # type: ignore[return-value]


def whole_builder(
    cls: type[_Model], *, derives: bool = True
) -> Callable[[dict[str, Any], frozenset[str]], _Model]:
    """What :func:`trusted_whole` calls for ``cls``, to call directly: ``build(fields, given)``
    (for a provider that builds ``cls`` for every event, a call and a look-up less each).

    With ``derives=False`` the build leaves out what validation derives from other fields
    (``_derive_trusted``): for a caller whose fields never leave anything to derive, such as
    events always given their ``id``; it then answers for that too."""
    if not derives:
        return _whole_builder(cls, derives=False)  # type: ignore[return-value]
    build = _WHOLE.get(cls) or _whole_builder(cls)
    return build  # type: ignore[return-value]


def _whole_builder(
    cls: type[BaseModel], *, derives: bool = True
) -> Callable[[dict[str, Any], frozenset[str]], BaseModel]:
    count = len(cls.model_fields)
    private = {name: attr.get_default() for name, attr in cls.__private_attributes__.items()}
    copy_private = private.copy if private else None
    derive = cls._derive_trusted  # type: ignore[attr-defined]
    if derive is StrictModel._derive_trusted or not derives:
        derive = None

    def build(fields: dict[str, Any], given: frozenset[str]) -> BaseModel:
        if len(fields) != count:
            _refuse_short(cls, fields)
        model = _new(cls)
        _set_dict(model, fields)
        _set_fields_set(model, set(given))
        _set_extra(model, None)
        _set_private(model, None if copy_private is None else copy_private())
        if derive is not None:
            derive(model)
        return model

    def build_plain(fields: dict[str, Any], given: frozenset[str]) -> BaseModel:
        # (``build`` for a class without private attributes or anything to derive, as most
        # parts of an event: nothing to test for)
        if len(fields) != count:
            _refuse_short(cls, fields)
        model = _new(cls)
        _set_dict(model, fields)
        _set_fields_set(model, set(given))
        _set_extra(model, None)
        _set_private(model, None)
        return model

    if copy_private is None and derive is None:
        build = build_plain
    if derives:
        _WHOLE[cls] = build
    return build


_WHOLE: dict[type[BaseModel], Callable[[dict[str, Any], frozenset[str]], BaseModel]] = {}


def _refuse_short(cls: type[BaseModel], fields: dict[str, Any]) -> None:
    missing = sorted(cls.model_fields.keys() - fields.keys())
    raise TypeError(f"{cls.__name__} needs every field, {missing} left out")


def _builder(cls: type[BaseModel]) -> Callable[[dict[str, Any]], BaseModel]:
    """What :meth:`StrictModel.trusted` does for ``cls``, with what it needs of the class
    worked out once: its fields' defaults in order (a default made by a factory is made per
    instance), its required fields and the defaults of its private attributes."""
    defaults: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    needed: set[str] = set()
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            defaults[name] = None  # keeps the fields' order; replaced per instance
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
        elif info.default is PydanticUndefined:
            defaults[name] = None
            needed.add(name)
        else:
            defaults[name] = info.default
    private = {name: attr.get_default() for name, attr in cls.__private_attributes__.items()}
    required = frozenset(needed)
    made = tuple(factories)
    copy_defaults = defaults.copy
    copy_private = private.copy if private else None
    derive = cls._derive_trusted  # type: ignore[attr-defined]
    if derive is StrictModel._derive_trusted:
        derive = None

    def build(values: dict[str, Any]) -> BaseModel:
        if required and not required <= values.keys():
            raise TypeError(f"{cls.__name__} needs {sorted(required - values.keys())}")
        data = copy_defaults()
        data.update(values)
        for name, factory in made:
            if name not in values:
                data[name] = factory()
        model = _new(cls)
        _set_dict(model, data)
        _set_fields_set(model, set(values))
        _set_extra(model, None)
        _set_private(model, None if copy_private is None else copy_private())
        if derive is not None:
            derive(model)
        return model

    _BUILDERS[cls] = build
    return build


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = timedelta(days=365_000)
"""The longest duration anywhere (``after:``, ``cooldown:``, ``max_late:``, retention, a suite's
``advance:`` …): 1,000 years. Added to any time an event may tell (up to the year 2200), or
taken from today, it stays far inside what ``datetime`` holds; a longer one made every sum with
it overflow at run time (a timer or a cooldown set, an event set aside, ``rulekit test`` a
traceback)."""


def parse_duration(value: object) -> timedelta:
    """Parse ``30s``, ``10m``, ``2h``, ``1d`` (or a number of seconds) into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(
                f"{value!r} is not a duration: use a number and s, m, h or d (e.g. 30m)"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:  # NaN too
        raise ValueError("a duration must be positive")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{value!r} is too long a duration") from None


def bounded_duration(value: object) -> timedelta:
    """:func:`parse_duration`, of at most :data:`MAX_DURATION`: a duration of the config, the
    rules or a suite, which rulekit adds to times."""
    duration = parse_duration(value)
    if duration > MAX_DURATION:
        raise ValueError(f"{value!r} is too long a duration: at most 365000d (1,000 years)")
    return duration


DURATION_SCHEMA: dict[str, Any] = {
    "oneOf": [
        # positive: a number with a digit other than 0 (0s is refused)
        {"type": "string", "pattern": r"^\s*(0*[1-9]\d*(\.\d+)?|0+\.0*[1-9]\d*)\s*[smhd]\s*$"},
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION.total_seconds()},
    ]
}
"""A duration's JSON Schema (``rulekit schema``): ``30m``, or a number of seconds."""

Duration = Annotated[timedelta, BeforeValidator(bounded_duration), WithJsonSchema(DURATION_SCHEMA)]
