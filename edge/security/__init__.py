"""Security building blocks (issue 12): staff accounts, templates at rest, input and operation guards.

Modules here import nothing from the rest of edge (the district server imports them too)."""
