"""The local store: seniors, face templates, meal events and the outbox in one SQLite file."""

from edge.store.db import Store
from edge.store.records import (
    EMBEDDING_DIM,
    AlreadyServed,
    Confirmation,
    EventRow,
    RemovalReport,
    StoredEvent,
    StoreError,
    TemplateIn,
    VoidRefused,
)

__all__ = [
    "EMBEDDING_DIM",
    "AlreadyServed",
    "Confirmation",
    "EventRow",
    "RemovalReport",
    "Store",
    "StoreError",
    "StoredEvent",
    "TemplateIn",
    "VoidRefused",
]
