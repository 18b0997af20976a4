# callkeeper: `make run` starts the server on the demo defaults, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEBIAN_TEST_PACKAGES := sip-tester sipsak baresip-core sox espeak-ng redis-server rtpengine-daemon iptables iproute2 openssl dnsmasq-base
DEBIAN_BENCH_PACKAGES := $(DEBIAN_TEST_PACKAGES) kamailio
JSSIP := tests/support/jssip

.PHONY: run test lint format bench venv test-deps bench-deps clean

$(BIN)/callkeeper: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

venv: $(BIN)/callkeeper

run: venv
	$(BIN)/callkeeper serve

$(VENV)/.test-deps: pyproject.toml $(BIN)/callkeeper
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# Real peers come from Debian; install them when missing (CI runs as root on a fresh machine).
test-deps: $(VENV)/.test-deps $(JSSIP)/node_modules/.package-lock.json
	@missing=""; for p in $(DEBIAN_TEST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The WebSocket tests' client (JsSIP under node) comes from npm, pinned by its lock file.
$(JSSIP)/node_modules/.package-lock.json: $(JSSIP)/package-lock.json
	@command -v npm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm >/dev/null; \
	}
	cd $(JSSIP) && npm ci --no-audit --no-fund --loglevel=error

lint: $(VENV)/.test-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(VENV)/.test-deps
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: test-deps lint
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest -q -p no:cacheprovider
	$(BIN)/coverage report --include='src/callkeeper/sip/*' --fail-under=95

bench-deps: test-deps
	$(BIN)/pip install --quiet -e '.[bench]'
	@missing=""; for p in $(DEBIAN_BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

bench: bench-deps
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage
