"""Errors raised while serving or fetching packages over HTTP.

    BitladderError
    └── DeliveryError                 an HTTP delivery failed
        ├── AuthError                 the server refused our token (401/403)
        ├── NotFoundError             no package at that URL (404)
        ├── PackageChangedError       the package changed between requests (ETag, size or digest differ)
        ├── ConnectionLostError       retries with backoff ran out
        ├── IntegrityError            a chunk failed verification again after one re-fetch
        ├── ServerResponseError       an answer the client cannot use (bad status, bad Content-Range)
        ├── BudgetError               no rung of the package fits the device's budget (choice.py)
        └── ConfigError               a bad rate, RTT, trace file or profile name (also a UsageError)

Each message names the URL (or file) and the byte offset involved.
"""

from __future__ import annotations

from ..errors import BitladderError, UsageError


class DeliveryError(BitladderError):
    """An HTTP delivery of a package failed."""


class AuthError(DeliveryError):
    """The server refused the request's credentials."""


class NotFoundError(DeliveryError):
    """The server has no package at that URL."""


class PackageChangedError(DeliveryError):
    """The package on the server is no longer the one we started downloading."""


class ConnectionLostError(DeliveryError):
    """The connection kept failing; retries with backoff are exhausted."""


class IntegrityError(DeliveryError):
    """A chunk failed verification, was re-fetched, and failed again."""


class ServerResponseError(DeliveryError):
    """The server answered with something the client cannot use."""


class BudgetError(DeliveryError):
    """No rung of the package fits the budget (bytes, memory, dtypes, deadline); the message says what each needs."""


class ConfigError(DeliveryError, UsageError):
    """A link setting (rate, RTT, trace, profile) cannot be parsed, or two settings conflict."""
