"""Offline tools that are never on the check-in path: accuracy evaluation, calibration, face sets and the
liveness evaluation."""
