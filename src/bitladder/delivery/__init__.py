"""Delivery over HTTP: a package server, a resuming client, and link emulation.

>>> from bitladder.delivery import fetch, ShapedTransport, PROFILES    # doctest: +SKIP
>>> decoder = fetch("http://127.0.0.1:8000/models/minilm.blad", rung="int8")   # doctest: +SKIP
"""

from .choice import Budget, Choice, choose
from .client import Download, Retry, RungEvent, Stats, fetch
from .errors import (
                     AuthError,
                     BudgetError,
                     ConfigError,
                     ConnectionLostError,
                     DeliveryError,
                     IntegrityError,
                     NotFoundError,
                     PackageChangedError,
                     ServerResponseError,
)
from .link import (
                     PROFILES,
                     Clock,
                     Link,
                     RealClock,
                     ShapedTransport,
                     VirtualClock,
                     load_trace,
                     parse_duration,
                     parse_rate,
)
from .verify import PackageVerifier

__all__ = [
    "PROFILES", "AuthError", "Budget", "BudgetError", "Choice", "Clock", "ConfigError", "ConnectionLostError",
    "DeliveryError", "Download", "IntegrityError", "Link", "NotFoundError", "PackageChangedError", "PackageVerifier",
    "RealClock", "Retry", "RungEvent", "ServerResponseError", "ShapedTransport", "Stats", "VirtualClock", "choose",
    "fetch", "load_trace", "parse_duration", "parse_rate",
]
