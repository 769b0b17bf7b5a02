# The local stack without Docker. `make up` and `make test` are the quick start.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# make up: event time runs 10x faster than wall time (starting in the past), so windows
# close and sessions time out within seconds on a laptop demo. Override at will.
PRODUCER_ARGS ?= --rate 300 --users 500 --speed 10
STAMP  := $(VENV)/.installed

.PHONY: up infra down test test-unit test-all lint format venv clean bench

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## Kafka + PostgreSQL (+ the S3 server when LAKE_URI=s3://... points at 127.0.0.1) + a worker
## + the producer, until Ctrl-C
up: $(STAMP)
	$(PY) -m devstack up $(PRODUCER_ARGS)

## Kafka + PostgreSQL (+ that S3 server) only; prints the export lines to use
infra: $(STAMP)
	@$(PY) -m devstack infra

## stop everything infra/up started
down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; else $(PYTHON) -m devstack down; fi

# Runs pytest with $(1), then says (passed or failed) whether the Kafka and PostgreSQL
# the tests started through devstack are still running; keeps pytest's exit status.
define PYTEST_THEN_STACK_STATUS
	$(info $(PY) -m pytest $(1) $(PYTEST_ARGS))
	@status=0; $(PY) -m pytest $(1) $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 0 ]; then result=passed; else result="FAILED (exit $$status)"; fi; \
	echo; echo "make $@: $$result"; \
	$(PY) -m devstack status || true; \
	exit $$status
endef

## unit + integration tests (starts Kafka, PostgreSQL and the S3 server itself, reusing
## running ones, and leaves them running for the next run: `make down` stops them)
test: $(STAMP)
	$(call PYTEST_THEN_STACK_STATUS,-m "not slow")

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-all: $(STAMP)
	$(call PYTEST_THEN_STACK_STATUS,)

## benchmark on the local stack (BENCH_ARGS="--events 100000" for a quick one)
bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: down
	rm -rf .state data
