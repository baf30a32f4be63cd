# Set-up and the two Quickstart commands. Everything installs into ./.venv from PyPI.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test lint bench screenshots services clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## demo: fetch the embedded seed listing, tag it, and write one .eml per demo subscriber to var/outbox/
demo: $(STAMP)
	$(VENV)/bin/digest run

## test: lint, type-check (mypy --strict over digest/, see [tool.mypy]) and run the whole test suite (starts the local PostgreSQL if it is down)
test: $(STAMP) services
	$(VENV)/bin/ruff check digest tests benchmarks scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check digest tests benchmarks scripts
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/digest bench

screenshots: $(STAMP)
	$(VENV)/bin/python scripts/screenshots.py

# The PostgreSQL tests need the server on 127.0.0.1:5432; start the machine's cluster if it is down.
services:
	@if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start || true; fi

clean:
	rm -rf var .pytest_cache .ruff_cache
