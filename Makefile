# Every target creates (once) and reuses the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format bench soak fuzz messages clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m simulators.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) -m simulators.bench

# Options go in ARGS: make soak ARGS="--instances 3 --database-url postgres://..."
soak: $(STAMP)
	$(PY) -m simulators.soak $(ARGS)

fuzz: $(STAMP)
	$(PY) -m simulators.fuzz

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

# Extract the messages of bot/texts.py and merge them into each language's catalogue.
messages: $(STAMP)
	$(VENV)/bin/pybabel extract -F bot/locales/babel.cfg -k _ -k _n:1,2 --no-location \
		--sort-output --omit-header -o bot/locales/messages.pot .
	$(VENV)/bin/pybabel update -i bot/locales/messages.pot -d bot/locales -D messages \
		--ignore-obsolete --width 100

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
