# The two set-up commands of README.rst: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?=

.PHONY: run test bench clean

$(BIN)/xmppd: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[fast,cassandra,s3,omemo,test]'
	touch $@

run: $(BIN)/xmppd
	$(BIN)/xmppd $(if $(CONFIG),--config $(CONFIG))

test: $(BIN)/xmppd
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup

bench: $(BIN)/xmppd
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
