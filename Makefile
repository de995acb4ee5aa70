# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install FlorDB, run the end-to-end demo
#   make test   create .venv, install FlorDB with dev extras, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench install clean

$(BIN)/flordb: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[torch,dev,ray]'
	touch $(BIN)/flordb

install: $(BIN)/flordb

demo: install
	$(BIN)/flordb demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV)
