"""Installed as the package `edge.models` (see setup.py): its package data are manifest.toml and the
calibration files. This folder is their source of truth; edge/paths.py finds them wherever meal-edge is
installed."""
