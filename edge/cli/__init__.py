"""The `meal-edge` command line: one module per group of commands (`main` holds the parser and the
daemon's own commands). Top of the import order: it may import every other part of `edge`."""
