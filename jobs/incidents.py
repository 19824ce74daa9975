"""The one mapping from an internal failure to the text a client may read.

A client (an HTTP caller, a tenant reading its job and its notices, a program reading the
command line's --json) never sees a host, a URL, a password, SQL or a driver's message: it
sees a fixed text for the kind of failure and a reference. The full detail goes to this
process's log under that reference, where the operator finds it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

from jobs.errors import summary

logger = logging.getLogger(__name__)


class IncidentKind(StrEnum):
    DATABASE = "database"
    BROKER = "broker"
    NETWORK = "network"
    INTERNAL = "internal"


CLIENT_TEXT: dict[IncidentKind, str] = {
    IncidentKind.DATABASE: "The database is unavailable or failed the request; try again shortly",
    IncidentKind.BROKER: "The message broker is unavailable; try again shortly",
    IncidentKind.NETWORK: "The receiver could not be reached",
    IncidentKind.INTERNAL: "Internal error",
}
# Where a foreign exception comes from, by the top-level package of its class (or a base):
# read from the class, so classifying never imports a driver.
_PACKAGES: dict[str, IncidentKind] = {
    "sqlalchemy": IncidentKind.DATABASE,
    "psycopg": IncidentKind.DATABASE,
    "psycopg2": IncidentKind.DATABASE,
    "sqlite3": IncidentKind.DATABASE,
    "alembic": IncidentKind.DATABASE,
    "kombu": IncidentKind.BROKER,
    "amqp": IncidentKind.BROKER,
    "redis": IncidentKind.BROKER,
    "celery": IncidentKind.BROKER,
    "billiard": IncidentKind.BROKER,
}


@dataclass(frozen=True)
class Incident:
    """A failure as a client sees it: its kind, the reference the log names it by, the text."""

    kind: IncidentKind
    reference: str

    @property
    def text(self) -> str:
        return f"{CLIENT_TEXT[self.kind]} (reference {self.reference})"


def kind_of(exc: BaseException) -> IncidentKind:
    """The kind of an internal failure, from the package its exception class comes from."""
    declared = getattr(exc, "incident_kind", None)  # an error of ours that says its kind
    if declared is not None:
        return IncidentKind(declared)
    for cls in type(exc).__mro__:
        found = _PACKAGES.get(cls.__module__.split(".")[0])
        if found is not None:
            return found
    if isinstance(exc, OSError | TimeoutError):
        return IncidentKind.NETWORK
    return IncidentKind.INTERNAL


def incident(
    exc: BaseException,
    during: str,
    *,
    kind: IncidentKind | None = None,
    log: logging.Logger | None = None,
    with_traceback: bool = True,
) -> Incident:
    """Log `exc` in full under a new reference and return what a client may read of it.

    `during` says what was being done (`GET /jobs/{id}`, `completion task`); an unexpected
    failure is logged with its traceback (unless `with_traceback` is off: a command line
    keeps stderr to one line and logs the traceback at DEBUG), a known outage (database,
    broker, network) with its one-line detail.
    """
    found = Incident(kind or kind_of(exc), uuid.uuid4().hex[:12])
    detail = summary(exc, typed=True, limit=2000)
    if found.kind == IncidentKind.INTERNAL:
        (log or logger).error("Incident %s during %s: %s", found.reference, during, detail,
                              exc_info=exc if with_traceback else None)  # fmt: skip
    else:
        (log or logger).warning("Incident %s (%s) during %s: %s", found.reference, found.kind,
                                during, detail)  # fmt: skip
    return found
