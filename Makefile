# The two set-up commands of README.rst: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?=

.PHONY: run lint test bench clean debian-test-packages

# What ruff checks and format-checks: the whole code base. (mypy checks, strictly, the
# files that pyproject.toml's [tool.mypy] lists.)
LINT_PATHS := xmppd extensions storage tests bench

# Clients of the interop tests that come only as Debian packages (the others install
# themselves into ~/.cache/xmppd: tests/support/foreign_clients.py), and the browser of
# the WebSocket browser test. Needs root; without them those tests are skipped.
DEBIAN_TEST_PACKAGES := go-sendxmpp profanity tmux chromium
# The cluster engines the tests and bench/cluster_engine.py start, one server each.
CLUSTER_ENGINE_PACKAGES := redis-server nats-server
# The TURN server that tests/support/turn.py starts (XEP-0215 credentials, issue 18).
TURN_PACKAGES := coturn
# The storage backend's server (storage/postgresql/), started by the tests.
POSTGRESQL_PACKAGES := postgresql

$(BIN)/xmppd: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[fast,cassandra,postgresql,s3,cluster,omemo,test]'
	touch $@

run: $(BIN)/xmppd
	$(BIN)/xmppd $(if $(CONFIG),--config $(CONFIG))

debian-test-packages:
	@dpkg -s $(DEBIAN_TEST_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEBIAN_TEST_PACKAGES) >/dev/null; } || \
	  echo "could not install $(DEBIAN_TEST_PACKAGES): their interop tests will be skipped"
	@# The Cassandra node of the tests needs Java and Maven, the Smack fix of the conformance tests a JDK (javac).
	@command -v javac >/dev/null && command -v mvn >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jdk-headless maven >/dev/null; }
	@# The cluster engines that tests/support/engines.py starts (issue 15).
	@dpkg -s $(CLUSTER_ENGINE_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(CLUSTER_ENGINE_PACKAGES) >/dev/null; }
	@# coturn for tests/integration/test_external_services.py.
	@dpkg -s $(TURN_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(TURN_PACKAGES) >/dev/null; }
	@# The PostgreSQL server that tests/support/postgresql.py starts (issue 19).
	@dpkg -s $(POSTGRESQL_PACKAGES) >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(POSTGRESQL_PACKAGES) >/dev/null; }

lint: $(BIN)/xmppd
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: lint $(BIN)/xmppd debian-test-packages
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup

bench: $(BIN)/xmppd
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
