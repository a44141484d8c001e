"""``Delegated``: how the :class:`Client` exposes, as its own attributes, the settings its
parts keep (``max_retries`` on its session, ``batch_size`` on its buffer, ...)."""

from __future__ import annotations

from typing import Any, Generic, Self, TypeVar, overload

_T = TypeVar("_T")


class Delegated(Generic[_T]):
    """An attribute kept by a part of the instance (its attribute named ``part``):
    reading and setting it go to that part.

    So the :class:`Client`'s settings stay attributes of the client while the parts that
    use them hold them, and setting one (``client.max_retries = 0``) still takes effect.
    """

    def __init__(self, part: str) -> None:
        self._part = part
        self._name = ""

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, objtype: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, objtype: type[Any] | None = None) -> _T: ...
    def __get__(self, obj: object | None, objtype: type[Any] | None = None) -> _T | Self:
        if obj is None:
            return self
        value: _T = getattr(getattr(obj, self._part), self._name)
        return value

    def __set__(self, obj: object, value: _T) -> None:
        setattr(getattr(obj, self._part), self._name, value)
