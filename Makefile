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

# Until a trained detector ships, the demo scores HDFS blocks with an untrained small detector.
demo: bootstrap
	@test -f .state/untrained-small/manifest.json || $(PY) -c "from pathlib import Path; \
	from model.logllm import LogLLMArchitecture; from model.logllm_detector import LogLLMDetector; \
	from model.backbones import DEFAULT_ENCODER, DEFAULT_DECODER; \
	LogLLMDetector.create(LogLLMArchitecture(encoder=DEFAULT_ENCODER, decoder=DEFAULT_DECODER)).save(Path('.state/untrained-small'))"
	$(VENV)/bin/logllm score --model .state/untrained-small --format hdfs \
	  $$($(PY) -c "from training.shared_data import HDFS_HEAD20K; print(HDFS_HEAD20K)") -o .state/demo-scores.jsonl
	@echo "scores written to .state/demo-scores.jsonl"

test: bootstrap node-start
	$(VENV)/bin/ruff check enricher model training dashboards tests benchmarks
	$(PY) -m pytest
