"""`cached`: `functools.cached_property` without the lock it takes on Python 3.11.

Until 3.12 every first access to a `cached_property` of any instance takes one lock per class, which tens of
thousands of tensors' specs and plans (and the decoder and runtime threads together) queue on. The values cached
here are pure functions of frozen fields, so two threads computing one at once is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached(Generic[T]):  # noqa: N801 - used as a decorator, like property
    """Compute on first access, then keep in the instance's `__dict__` (later accesses never reach this)."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached[T]:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.name] = value
        return value
