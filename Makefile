# The two commands of the README: `make dev` runs the stack, `make test` runs every test.
# Each creates the virtualenv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test lint install bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

install: $(BIN)/.installed

dev: $(BIN)/.installed
	$(BIN)/visionq dev

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Then the e2e and chaos suites again with Celery's messages on RabbitMQ (a virtual host
# per stack on the local server), where one is installed.
test: lint
	$(BIN)/python -m pytest
	@if command -v rabbitmqctl >/dev/null; then \
		VISIONQ_TEST_BROKER=amqp $(BIN)/python -m pytest tests/e2e tests/chaos; \
	else echo "rabbitmqctl not found: the RabbitMQ run of tests/e2e and tests/chaos is skipped"; fi

# The benchmark suite (bench/): `make bench` for the full run, `make bench ARGS=--quick`.
bench: $(BIN)/.installed
	$(BIN)/python -m bench $(ARGS)
