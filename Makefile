# Skylapse: `make demo` runs the main job on embedded defaults, `make test` runs the whole suite.
# Both set everything up on a fresh machine with Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the demo (its real transfer path) and the tests and benchmarks run as programs.
DEMO_DEBS := rsync openssh-server openssh-client
DEBS      := $(DEMO_DEBS) enfuse redis-server systemd mosquitto chromium

.PHONY: demo test lint bench system-deps demo-deps clean

$(BIN)/skylapse: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Installs what is missing, only when we are root (CI and these machines); elsewhere it says what to install.
define install-debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "please install:$$missing (apt-get)"; exit 1; fi; \
	fi
endef

system-deps:
	$(call install-debs,$(DEBS))

demo-deps:
	$(call install-debs,$(DEMO_DEBS))

demo: $(BIN)/skylapse demo-deps
	$(BIN)/skylapse demo --out demo-output

lint: $(BIN)/skylapse
	$(BIN)/ruff check .

test: $(BIN)/skylapse system-deps lint
	$(BIN)/pytest

bench: $(BIN)/skylapse system-deps
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/fusion_bench.py
	$(BIN)/python bench/transfer_bench.py
	$(BIN)/python bench/exposure_bench.py
	$(BIN)/python bench/capture_bench.py
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/api_bench.py --service capture

clean:
	rm -rf $(VENV) demo-output bench/out .pytest_cache .ruff_cache
