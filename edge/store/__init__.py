"""The local store: seniors, face templates, meal events and the outbox in one SQLite file."""

from edge.store.db import (
    EMBEDDING_DIM,
    AlreadyServed,
    Confirmation,
    EventRow,
    RemovalReport,
    Store,
    StoredEvent,
    StoreError,
    TemplateIn,
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
]
