# Two commands set everything up on a fresh machine with Python 3.11 and make:
#   make demo   - run the product on embedded services (or MUCK_DATABASE_URL / MUCK_MQTT_URL)
#   make test   - run the whole test suite on real services
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps fonts demo test test-browser lint format bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(STAMP) system-deps fonts

# The PDF documents' CJK fonts (sans and serif), cut down from Noto to GB 2312 with TrueType
# outlines (about four minutes, once): a document then takes about 1 s instead of 19
# (core/cjk_fonts.py).
fonts: $(STAMP) system-deps
	@$(BIN)/python -m core.cjk_fonts

# The evidence packs (evidence/pack.py, WeasyPrint) need Pango and a CJK font from the
# system: Debian 12 packages libpango-1.0-0, libpangoft2-1.0-0, fontconfig, fonts-noto-cjk;
# the browser tests (tests/web/browser/, skipped without it) Debian's chromium.
# python:3.11-slim has none of them. Installed with apt-get when missing and run as root;
# otherwise the command to run is printed (docs/evidence.md).
system-deps:
	@missing=""; \
	ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so' || missing="$$missing libpango-1.0-0"; \
	ldconfig -p 2>/dev/null | grep -q 'libpangoft2-1.0.so' || missing="$$missing libpangoft2-1.0-0"; \
	command -v fc-list >/dev/null 2>&1 || missing="$$missing fontconfig"; \
	fc-list 2>/dev/null | grep -qi 'Noto Sans CJK' || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the evidence packs"; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "evidence packs (PDF) need:$$missing -- run: sudo apt-get install$$missing"; \
	  fi; \
	fi; \
	if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the browser tests"; \
	  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	    || echo "chromium not installed: the browser tests will be skipped"; \
	fi

demo: $(STAMP) fonts
	$(BIN)/muck demo

test: $(STAMP) fonts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# pytest exits 5 when it collects no tests; that is not a failure of the code.
	$(BIN)/pytest -q; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/muck bench geofence
	$(BIN)/muck bench ingest
	$(BIN)/muck bench web

# Browser tests only (Debian /usr/bin/chromium; skipped when it is missing).
test-browser: $(STAMP)
	$(BIN)/pytest -q tests/web/browser

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
