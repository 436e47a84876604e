# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install chromium benchmark clean

# Create the virtual environment if it is missing and install the package with its test extras.
# The stamp is remade whenever setup.py changes, so new dependencies get installed.
$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ghibli-keras demo --out demo_out

# Debian's chromium, which tests/test_ui_browser.py drives with Playwright (no browser download).
# Where apt-get cannot install it, that test is skipped and says why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
chromium:
	@test -x /usr/bin/chromium \
	  || $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || ($(SUDO) apt-get update -qq >/dev/null 2>&1 && $(SUDO) apt-get install -y -qq chromium >/dev/null 2>&1) \
	  || echo "make: could not install Debian's chromium; the browser test will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/input_pipeline.py

clean:
	rm -rf demo_out .pytest_cache build *.egg-info
