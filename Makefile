# Quick start:  make run   (the dashboard)   |   make test   (the whole suite)
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip install --quiet --disable-pip-version-check
CHROMIUM ?= /usr/bin/chromium

.PHONY: run test test-load bench gallery chromium clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PIP) -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(VENV)/bin/streamlit run app.py

# Debian's Chromium for the end-to-end browser test (never a downloaded browser build).
chromium:
	@test -x $(CHROMIUM) || command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.dev chromium
	$(PY) -m pytest -q

# only the load test: 8 browser sessions against a real server (about 1 min; also part of `make test`)
test-load: $(VENV)/.dev chromium
	$(PY) -m pytest -q -s -m load

bench: $(VENV)/.runtime
	$(PY) -m viz bench

clean:
	rm -rf $(VENV) test-output .pytest_cache
