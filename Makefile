# The two set-up commands of the README. Each installs what it needs first and is idempotent.
PY ?= python3


.PHONY: setup demo test test-fast smoke clean

setup:
	@if ! [ -d /usr/share/datasets/fashion-mnist ]; then \
	  (command -v apt-get >/dev/null && (apt-get update -qq || true) && apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "warning: could not install dataset-fashion-mnist (Fashion-MNIST datasets will be unavailable)"; fi
	$(PY) -m pip install -q -e '.[dev]'

# The main job: the DeCLIP sweep on embedded data (python sweeps/declip.py with default flags).
demo: setup
	$(PY) sweeps/declip.py $(ARGS)

# The whole test suite, slow end-to-end runs included (what CI runs).
test: setup
	$(PY) -m pytest -q tests --ignore=tests/jobs $(ARGS)
	$(PY) -m pytest -q tests/jobs $(ARGS) || [ $$? -eq 5 ]

# Without the slow end-to-end runs (a few minutes).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests --ignore=tests/jobs $(ARGS)

smoke: setup
	$(PY) sweeps/declip.py --smoke
