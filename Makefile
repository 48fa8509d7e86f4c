# The two commands of the README. Each makes its own virtual environment.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MAILSYNC := $(BIN)/mailsync --config config/mailsync.toml

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Sync the Contoso sample mailbox into a fresh SQLite file and show the result.
demo: $(STAMP)
	rm -f var/mailsync.db var/mailsync.db-wal var/mailsync.db-shm
	$(MAILSYNC) init
	$(MAILSYNC) accounts import examples/contoso/accounts.csv
	$(MAILSYNC) contacts import examples/contoso/contacts.csv
	$(MAILSYNC) contacts import examples/contoso/contacts.vcf
	$(MAILSYNC) sync --once
	@echo
	$(MAILSYNC) history --account "Tailspin Toys"
	@echo
	$(MAILSYNC) unlinked
	@echo
	$(MAILSYNC) status

# Lint, type-check and run the whole suite (SQLite and PostgreSQL).
test: $(STAMP)
	scripts/ensure-postgres
	$(BIN)/ruff check mailsync tests benchmarks
	$(BIN)/mypy mailsync
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sync_corpus.py
	$(BIN)/python benchmarks/bench_ews_backfill.py
	$(BIN)/python benchmarks/bench_graph_backfill.py
	$(BIN)/python benchmarks/bench_service.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
