# The local stack without Docker. `make up` and `make test` are the quick start.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# make up: event time runs 10x faster than wall time (starting in the past), so windows
# close and sessions time out within seconds on a laptop demo; one record in a hundred
# is malformed, for the dead-letter topic to show. Override at will.
PRODUCER_ARGS ?= --rate 300 --users 500 --speed 10 --bad-ratio 0.01
UP_STAMP  := $(VENV)/.installed-up
DEV_STAMP := $(VENV)/.installed-dev
PIP_LOG   := $(VENV)/pip.log

.PHONY: up infra down psql test test-unit test-all lint format venv clean bench

# What `make up` needs: the pipeline and the lake readers of README, See it work
# (the `tools` extra). The tests, benchmark and Spark come with `dev` (make test).
$(UP_STAMP): pyproject.toml
	@echo "==> installing the pipeline into $(VENV) (pip's output: $(PIP_LOG))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@start=$$(date +%s); \
	{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[tools]'; } \
	  > $(PIP_LOG) 2>&1 || { tail -n 30 $(PIP_LOG); exit 1; }; \
	echo "==> installed in $$(( $$(date +%s) - start ))s"
	@touch $@

$(DEV_STAMP): pyproject.toml $(UP_STAMP)
	@echo "==> installing the test and benchmark tools (pip's output: $(PIP_LOG))"
	@$(PY) -m pip install -e '.[dev,tools]' >> $(PIP_LOG) 2>&1 || { tail -n 30 $(PIP_LOG); exit 1; }
	@touch $@

venv: $(DEV_STAMP)

## Kafka + PostgreSQL (+ the S3 server when LAKE_URI=s3://... points at 127.0.0.1) + a worker
## + the producer, until Ctrl-C; says each step, where to look, then one live line
up: $(UP_STAMP)
	@$(PY) -m devstack up $(PRODUCER_ARGS)

## psql on the stack's database: `make psql`, or `make psql SQL='SELECT ...'`
psql: $(UP_STAMP)
	@$(PY) -m devstack psql $(if $(SQL),-c "$(SQL)")

## Kafka + PostgreSQL (+ that S3 server) only; prints the export lines to use
infra: $(UP_STAMP)
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
test: $(DEV_STAMP)
	$(call PYTEST_THEN_STACK_STATUS,-m "not slow")

test-unit: $(DEV_STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-all: $(DEV_STAMP)
	$(call PYTEST_THEN_STACK_STATUS,)

## benchmark on the local stack (BENCH_ARGS="--events 100000" for a quick one)
bench: $(DEV_STAMP)
	$(PY) -m bench $(BENCH_ARGS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(DEV_STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean: down
	rm -rf .state data
