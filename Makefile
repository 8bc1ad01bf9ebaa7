# The two commands a new user needs are `make demo` and `make test`; both set up everything first.
.PHONY: demo test bootstrap node-start node-stop bench

VENV ?= .venv
PY := $(VENV)/bin/python

bootstrap:
	@scripts/bootstrap.sh

node-start: bootstrap
	@$(PY) -m enricher.localnode start

node-stop:
	@$(PY) -m enricher.localnode stop

# Starts the local node, loads a real HDFS sample, runs the worker once with the shipped detector.
demo: bootstrap
	$(VENV)/bin/logllm demo

test: bootstrap node-start
	$(VENV)/bin/ruff check enricher model training dashboards tests benchmarks
	$(PY) -m pytest
