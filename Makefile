# Two commands for a fresh machine: `make demo` (set up, demo data, serve) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1:8000

.PHONY: demo test lint serve worker bench clean frontend

$(VENV)/.installed: requirements.txt requirements-web.txt requirements-worker.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(VENV)/.installed frontend
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_setup
	$(PY) manage.py runserver $(HOST)

test: $(VENV)/.installed lint frontend
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The review screen's bundle (frontend/src → frontend/dist/review.js); rebuilt only when a source changed.
FRONTEND_SRC := $(wildcard frontend/src/*.ts) frontend/package.json frontend/tsconfig.json frontend/vite.config.ts

frontend: frontend/dist/review.js

frontend/node_modules/.package-lock.json: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund && touch node_modules/.package-lock.json

frontend/dist/review.js: frontend/node_modules/.package-lock.json $(FRONTEND_SRC)
	cd frontend && npm run build

serve: $(VENV)/.installed
	$(PY) manage.py runserver $(HOST)

worker: $(VENV)/.installed
	$(VENV)/bin/celery -A config worker -Q default --loglevel INFO

bench: $(VENV)/.installed
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_upload.py

clean:
	rm -rf $(VENV) var frontend/node_modules frontend/dist
