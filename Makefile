# Lineup's two commands: `make serve` and `make test`. Each makes the
# virtual environment in .venv first if it is missing or out of date.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint clean

serve: $(VENV)/.installed
	$(BIN)/lineup serve

test: $(VENV)/.installed
	$(BIN)/flake8 service sanity_tests tests benchmarks wsgi.py gunicorn.conf.py
	$(BIN)/gunicorn --check-config -c gunicorn.conf.py wsgi:app
	$(BIN)/pytest $(PYTEST_ARGS)

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
