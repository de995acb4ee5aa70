# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install FlorDB, run the end-to-end demo
#   make test   create .venv, install FlorDB with dev extras, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench install browser clean

$(BIN)/flordb: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[torch,dev,ray,ui]'
	$(BIN)/python -m compileall -q flordb  # an editable install compiles nothing: each command would
	touch $(BIN)/flordb

install: $(BIN)/flordb

demo: install
	$(BIN)/flordb demo

test: install browser
	$(BIN)/python -m pytest

# Debian's chromium for the UI's browser tests: Playwright drives it through executable_path
# (never `playwright install`, which downloads a browser). Installed only when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
		|| echo "chromium is not installed (needs root and apt-get): the browser tests will be skipped"

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV)
