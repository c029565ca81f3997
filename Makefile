# Open smart insole: every target sets up .venv from pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BOARD ?= esp32_devkitc
PORT ?= /dev/ttyUSB0

.PHONY: help venv test lint demo bench evaluate build flash repl console sim clean

help:
	@echo "make demo      two virtual insoles -> capture -> report under out/demo/"
	@echo "make test      the whole test suite (lint, CPython and MicroPython)"
	@echo "make evaluate  detector accuracy on ../shared/data (writes docs/ACCURACY.md)"
	@echo "make bench     detector cost per sample under the micropython binary"
	@echo "make build     BOARD=esp32_devkitc|esp32s3|esp32c3 -> build/BOARD/"
	@echo "make flash     PORT=/dev/ttyUSB0 BOARD=... copy changed files with mpremote"
	@echo "make repl / make console PORT=..."

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP) lint
	$(BIN)/pytest tests

lint: $(STAMP)
	$(BIN)/ruff check .

evaluate: $(STAMP)
	$(BIN)/insole evaluate --data ../shared/data --write docs/ACCURACY.md

bench: $(STAMP)
	$(BIN)/insole bench

clean:
	rm -rf build out .pytest_cache
