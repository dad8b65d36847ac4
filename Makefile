# The two commands: `make run` and `make test`. Everything else is a step they take.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install var lint browser postfix messages check clean reliability bench

## run: set everything up and start web, a worker per lane (interactive, bulk), beat and the
## local mail catcher (scripts/run.sh)
run: install var .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	HOST=$(HOST) PORT=$(PORT) exec scripts/run.sh

## test: the whole suite (real SMTP servers, browser, worker) on the configured database
test: install var browser postfix
	$(BIN)/pytest

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11 is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The embedded defaults keep their state under var/: SQLite, and the filesystem broker, which
# does not create its folders (paths as in directo_mail/settings.py). An empty STATIC_ROOT
# keeps whitenoise from warning "No directory at var/staticfiles/" when nothing was collected.
var:
	@mkdir -p var/log var/broker/queue var/broker/processed var/staticfiles

# A fresh .env with random keys for the embedded defaults (never committed). The venv's Python
# has `cryptography`; a bare machine's python3 may not.
.env: | $(VENV)/.installed
	$(BIN)/python scripts/make_env.py > .env.tmp
	mv .env.tmp .env
	@echo "Wrote .env (development settings with fresh keys)."

## browser: Debian's Chromium for the Playwright tests
browser:
	@scripts/ensure_chromium.sh

## postfix: Debian's Postfix (unconfigured) for the bounce tests and bench/ (smtp-sink)
postfix:
	@scripts/ensure_postfix.sh

## bench: the mass-mailing benchmark (bench/README.md), plain SMTP then StartTLS
bench: install postfix
	$(BIN)/pip install --quiet -r requirements-bench.txt
	$(BIN)/python bench/bulk_send.py --n 2000
	$(BIN)/python bench/bulk_send.py --n 2000 --tls

## reliability: the reliability and security suite (issue 7); prints its table of figures,
## also written to var/reliability/figures.md
reliability: install var browser postfix
	$(BIN)/pytest -m reliability tests/reliability

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## messages: refresh and compile the translation catalogues
messages: install .env
	$(BIN)/python manage.py makemessages --all --no-obsolete --no-location --ignore='.venv/*' --ignore='tests/*'
	$(BIN)/python manage.py compilemessages --ignore='.venv/*'

check: install .env
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python manage.py check

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
