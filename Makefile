# Thin wrappers: scripts/dev.sh does the set-up (virtualenv, packages, Mosquitto) itself.
.PHONY: demo test setup bench
demo:
	bash scripts/dev.sh demo
test:
	bash scripts/dev.sh test
setup:
	bash scripts/dev.sh setup
bench:
	bash scripts/dev.sh setup && .venv/bin/python bench/bench_pipeline.py
