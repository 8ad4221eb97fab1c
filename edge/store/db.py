"""`Store`: the only place with SQL. One SQLite file, WAL, synchronous=FULL, secure_delete.

Concurrency: the pipeline and the publisher thread share one Store. Writes go through one
threading.Lock and `BEGIN IMMEDIATE` (which also serialises writers in other processes, such as
`meal-enroll` run while the daemon is up); reads use their own short sessions and, thanks to WAL,
never wait for a writer. Every unit of work is its own session and transaction.
"""


from __future__ import annotations

from edge.store.confirmations import ConfirmationStore
from edge.store.rosterdb import RosterStore
from edge.store.seniors import SeniorStore
from edge.store.staffdb import StaffMixin


class Store(SeniorStore, ConfirmationStore, RosterStore, StaffMixin):
    """The one store: the roster (edge/store/seniors.py), meal events and the outbox (edge/store/meals.py),
    staff confirmations (edge/store/confirmations.py), staff accounts and the audit log
    (edge/store/staffdb.py), the district roster link's state (edge/store/rosterdb.py), over one connection
    (edge/store/base.py)."""
