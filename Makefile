# ledgershare: the README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test test-reliability lint bench down status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## run: start the local stack and every service, show the mission working; Ctrl-C stops all
run: $(STAMP)
	$(VENV)/bin/ledgershare run

## test: the whole suite against real NATS, PostgreSQL and S3 started by the fixtures
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-reliability: $(STAMP)
	$(PY) -m pytest -q -m reliability $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench $(if $(QUICK),--quick,)

down: $(STAMP)
	$(VENV)/bin/ledgershare down

status: $(STAMP)
	$(VENV)/bin/ledgershare status

clean:
	rm -rf $(VENV) .ledgershare .pytest_cache .mypy_cache .ruff_cache
