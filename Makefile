# ledgershare: the README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CHROMIUM_STAMP := $(VENV)/.chromium-stamp
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: each has its own servers; two keep a 2-core
# machine busy while the other waits on a server (2,106 tests from a fresh clone: 14m25s).
# Three ran 11m21s twice, then failed two load-sensitive tests (a SIGKILL's children, a
# directory read before its seq): not yet. Work stealing: the slowest tests (the model,
# the 100k replay, the README runs) otherwise queue on one worker at the end.
TEST_WORKERS ?= 2

.PHONY: run test test-reliability lint bench down status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The browser tests drive Debian's chromium: Playwright's own browser download comes from a
# CDN that CI cannot reach. WenQuanYi Micro Hei (1.6 MB) is the smallest CJK font, so the
# Chinese pages render as text rather than boxes. apt-get update runs only when the
# install fails (no package lists yet, or stale ones that 404). A separate stamp, so a
# re-run costs nothing.
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
APT_GET  := $(if $(filter 0,$(shell id -u)),,sudo )env DEBIAN_FRONTEND=noninteractive apt-get
APT_BROWSER := $(APT_GET) install -y -qq --no-install-recommends chromium fonts-wqy-microhei
$(CHROMIUM_STAMP): | $(STAMP)
	{ command -v chromium && test -e $(CJK_FONT); } >/dev/null \
	  || $(APT_BROWSER) || { $(APT_GET) update -qq && $(APT_BROWSER); }
	chromium --version
	touch $(CHROMIUM_STAMP)

## run: start the local stack and every service, show the mission working; Ctrl-C stops all
run: $(STAMP)
	$(VENV)/bin/ledgershare run

## test: the whole suite against real NATS, PostgreSQL and S3 started by the fixtures
test: $(STAMP) $(CHROMIUM_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

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
