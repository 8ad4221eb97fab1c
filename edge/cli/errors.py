"""What every `meal-edge` sub-command may raise besides the operator errors of the parts."""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """A bad argument, phrased with its fix: exit 2."""
