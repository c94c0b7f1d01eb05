# brokerguard: `make run` starts a local Kafka and the gateway in front of it; `make test` runs
# every test against the real broker and real clients. Both set up what they need first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := kcat openssl postgresql

.PHONY: setup system-packages jars run test fuzz bench clean

setup: system-packages jars $(INSTALLED)

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

jars:
	@$(PYTHON) devstack/kafka.py jars

$(INSTALLED): pyproject.toml setup.py ext/*.pyx ext/*.pxd plugins/kafka/protocol/generate.py devstack/pom.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel cython
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: setup
	$(BIN)/python devstack/run.py

test: setup
	$(BIN)/brokerguard rules test rules --coverage --fail-on-empty
	$(BIN)/python -m pytest -ra

# The fuzzed tests with FUZZ_SCALE times their random inputs (tests/fuzzing.py): a longer hunt
# than `make test` makes on every change. FUZZ_SCALE=100 make fuzz for a deeper one. Each test
# may take FUZZ_SCALE times the usual per-test timeout.
fuzz: setup
	scale=$${FUZZ_SCALE:-20}; FUZZ_SCALE=$$scale $(BIN)/python -m pytest tests/unit -q -p no:cacheprovider \
	  --timeout=$$((300 * scale))

bench: setup
	$(BIN)/python bench/run.py

clean:
	-$(PYTHON) devstack/kafka.py stop
	rm -rf $(VENV) build *.egg-info .devstack ext/*.c ext/*.so plugins/kafka/protocol/messages.json
