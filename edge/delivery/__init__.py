"""Meal events on their way to the district: the event model and its canonical bytes (`events`, pure), the
outbox bookkeeping (`outbox`) and the MQTT publisher (`publish`)."""
