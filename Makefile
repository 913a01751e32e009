# fedkeys: `make demo` runs the whole path on simulated data; `make test` runs the suite.
# Both install first (into .venv) when needed; a second `make install` is a no-op.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.install-stamp
OUT    ?= runs/demo
# Test processes: one per core, at most 4 (each imports TensorFlow, about 1-2 GB with TFF).
# `--dist loadfile` keeps a test module in one process, so a module's fixtures (a TFLite
# conversion, a PostgreSQL server) are built once. TEST_WORKERS=0 runs the suite in-process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: install chromium postgres demo test test-fast test-slow bench clean

install: $(STAMP)

# uv, not pip: tensorflow-federated 0.87.0 pins jaxlib==0.4.14, which the registry lacks.
# uv's --override replaces that pin with 0.4.13 (overrides.txt says why); pip cannot.
$(STAMP): requirements.txt overrides.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(UV) pip install --python $(PY) --quiet -r requirements.txt --override overrides.txt
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@touch $(STAMP)

demo: install
	$(VENV)/bin/fedkeys demo --preset default --out $(OUT)

# The dashboard's browser test drives Debian's chromium: install it when missing (as root;
# otherwise that one test skips and says why).
chromium:
	@test -x /usr/bin/chromium || { if [ "$$(id -u)" = 0 ]; then { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } \
	  || echo "could not install chromium: tests/test_dashboard_browser.py will skip"; \
	  else echo "chromium missing and not root: tests/test_dashboard_browser.py will skip"; fi; }

# The PostgreSQL store's tests (tests/test_server_store.py and the collector tests run on both
# stores) start a throwaway server from Debian's postgresql package: install it when missing (as
# root; otherwise those tests skip and say why).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { if [ "$$(id -u)" = 0 ]; then \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; } \
	  || echo "could not install postgresql: the PostgreSQL store tests will skip"; \
	  else echo "postgresql missing and not root: the PostgreSQL store tests will skip"; fi; }

test: install chromium postgres
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

test-fast: install
	$(PY) -m pytest -q -m "not slow and not e2e and not browser" tests

bench: install
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
