# Skylapse: `make demo` runs the main job on embedded defaults, `make test` runs the whole suite.
# Both set everything up on a fresh machine with Python 3.11+ and make.
#
# Python packages come from the hash-locked files in requirements/ (installed by uv, itself pinned
# here), so every machine gets the same versions; `make lock` refreshes them, `make test-latest`
# runs the suite on the newest versions pyproject.toml allows instead.

PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
UV_VERSION := 0.13.9
TOOLS      := .tools
UV         := $(TOOLS)/bin/uv
LATEST     := .venv-latest
COMPILE    := $(UV) pip compile pyproject.toml --quiet --universal --python-version 3.11 --generate-hashes
# Debian packages the demo (its real transfer path) and the tests and benchmarks run as programs.
DEMO_DEBS := rsync openssh-server openssh-client
DEBS      := $(DEMO_DEBS) enfuse redis-server systemd mosquitto chromium

.PHONY: demo test test-pure test-latest lint lock bench system-deps demo-deps clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/skylapse: pyproject.toml requirements/test.lock | $(UV)
	[ -x $(BIN)/python ] || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip sync --quiet --require-hashes requirements/test.lock
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet --no-deps -e .
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
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/skylapse system-deps lint
	$(BIN)/pytest

# The pure suite: no system programs, no root. Two workers per core (at least four): many tests
# wait on fsync, sleeps or a server thread, so one per core leaves the cores idle part of the time.
PURE_WORKERS ?= $(shell $(PYTHON) -c 'import os; print(max(4, 2 * len(os.sched_getaffinity(0))))')
test-pure: $(BIN)/skylapse
	$(BIN)/pytest -m "not system" -n $(PURE_WORKERS) --dist load

# The suite on the newest versions pyproject.toml allows, not the lock: catches the next major
# release on purpose. CI runs it when SKYLAPSE_LATEST=1.
test-latest: system-deps | $(UV)
	[ -x $(LATEST)/bin/python ] || $(UV) venv --quiet --python $(PYTHON) $(LATEST)
	VIRTUAL_ENV=$(LATEST) $(UV) pip install --quiet --upgrade --resolution highest -e '.[test,raw]'
	VIRTUAL_ENV=$(LATEST) $(UV) pip list 2>/dev/null | grep -i -E '^(numpy|opencv-python-headless|av|pillow|pydantic|fastapi) ' || true
	$(LATEST)/bin/pytest

# Re-resolves the lock files (main, test, and pi: the Pi's extras within main's pins) to the
# newest versions pyproject.toml allows (see README: upgrading).
lock: | $(UV)
	$(COMPILE) --upgrade -o requirements/main.lock
	$(COMPILE) --upgrade --extra test --extra raw -c requirements/main.lock -o requirements/test.lock
	$(COMPILE) --extra pi -c requirements/main.lock -o requirements/pi.lock

bench: $(BIN)/skylapse system-deps
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/outputs_bench.py
	$(BIN)/python bench/fusion_bench.py
	$(BIN)/python bench/transfer_bench.py
	$(BIN)/python bench/exposure_bench.py
	$(BIN)/python bench/capture_bench.py
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/api_bench.py --service capture

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) demo-output bench/out .pytest_cache .ruff_cache .mypy_cache
