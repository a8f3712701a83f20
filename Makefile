# Quick start:  make run   (the dashboard)   |   make test   (the whole suite)
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip install --quiet --disable-pip-version-check
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-fast test-integration test-browser test-load bench gallery chromium clean

# torch's Linux wheels bring their CUDA libraries: 6.4 GB installed, 9 GB on disk at the peak of the install.
NEED_GB ?= 10

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || { free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  test "$$free" -ge $(NEED_GB) || echo "warning: $$free GB free on this disk; the first install needs about" \
	    "$(NEED_GB) GB (torch with its CUDA libraries: 6.4 GB installed, 9 GB at the peak)" >&2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements-cluster.txt $(VENV)/.runtime
	$(PIP) -r requirements-dev.txt -r requirements-cluster.txt  # Ray: the cluster tests (issue 14)
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run app.py

# Debian's Chromium for the end-to-end browser test (never a downloaded browser build).
chromium:
	@test -x $(CHROMIUM) || command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Everything but the load test on WORKERS processes (pytest-xdist: the longest first, a file with a server or a Ray
# cluster on one worker, see tests/conftest.py; the workers wait on servers, browsers and subprocesses much of the
# time, hence more workers than cores, each computing on one thread), then the load test alone, at the machine's
# full thread count: it judges the server's latency against the machine's.
WORKERS ?= 4
test: $(VENV)/.dev chromium
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(WORKERS) --dist loadgroup --no-loadscope-reorder -m "not load" --durations=10
	$(PY) -m pytest -q -m load --durations=1

# the unit tier: tensors, images and files only, no subprocess or server (under a minute)
test-fast: $(VENV)/.dev
	$(PY) -m pytest -q -m unit

# the middle tier: CLI processes, renders and AppTest (no browser, no Ray)
test-integration: $(VENV)/.dev
	$(PY) -m pytest -q -m integration

# the browser tier (tests/browser/, the load test included): a real server and Debian's Chromium
test-browser: $(VENV)/.dev chromium
	$(PY) -m pytest -q -m browser

# only the load test: 8 browser sessions against a real server (about 3 min; also part of `make test`)
test-load: $(VENV)/.dev chromium
	$(PY) -m pytest -q -s -m load

bench: $(VENV)/.runtime
	$(PY) -m viz bench

clean:
	rm -rf $(VENV) test-output .pytest_cache
