# BalanceBeam's two commands:  `make demo`  and  `make test`.
# Both create .venv with the pinned requirements first (idempotent).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup system-deps demo lint test test-unit test-pipeline test-e2e integration-setup test-integration clean

$(STAMP): requirements.txt requirements-test.txt requirements-bench.txt setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-test.txt -r requirements-bench.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# A real curation on an embedded default: a generated 200k-caption pool with a
# heavy head and a long tail, on the DirectRunner; outputs in demo_output/.
demo: setup
	$(BIN)/python -m beam_pipeline.demo --output_dir demo_output

# Debian packages the tests need (WordNet's database for the metadata builder).
system-deps:
	bash scripts/install-system-deps.sh

# ruff's checks and layout (ruff.toml); `$(BIN)/ruff format .` applies the layout.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite, lint first. One tier at a time: make test-unit (pure functions),
# make test-pipeline (TestPipeline), make test-e2e (command line, runners, template).
# TEST_WORKERS: pytest-xdist processes (CI's 2 cores; TEST_WORKERS=0 runs in one process).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

test: lint system-deps
	$(PYTEST) tests

test-unit: setup system-deps
	$(PYTEST) tests/unit

test-pipeline: setup
	$(PYTEST) tests/pipeline

test-e2e: setup system-deps
	$(PYTEST) tests/e2e

# The integration tier (not part of `make test`): the real clients of the hand-off outputs
# (img2dataset, webdataset 1.0.2 and 0.2.86, DataComp's uid search) on a pool served from
# 127.0.0.1, and gs:// runs against a Cloud Storage emulator on 127.0.0.1 (tests/integration/test_gcs.py).
# img2dataset and the emulator get their own environment.
INTEGRATION_VENV := .venv-integration
INTEGRATION_STAMP := $(INTEGRATION_VENV)/.installed-stamp
OLD_WEBDATASET := .integration/webdataset-0.2.86

$(INTEGRATION_STAMP): requirements-integration.txt
	test -x $(INTEGRATION_VENV)/bin/python || $(PYTHON) -m venv $(INTEGRATION_VENV)
	$(INTEGRATION_VENV)/bin/python -m pip install -q -r requirements-integration.txt
	rm -rf $(OLD_WEBDATASET)
	$(BIN)/python -m pip install -q --no-deps --target $(OLD_WEBDATASET) webdataset==0.2.86
	touch $(INTEGRATION_STAMP)

integration-setup: setup $(INTEGRATION_STAMP)

test-integration: integration-setup
	BALANCEBEAM_IMG2DATASET=$(INTEGRATION_VENV)/bin/img2dataset BALANCEBEAM_OLD_WEBDATASET=$(OLD_WEBDATASET) \
		BALANCEBEAM_GCS_EMULATOR=$(INTEGRATION_VENV)/bin/gcp-storage-emulator \
		$(BIN)/python -m pytest -q tests/integration --integration

clean:
	rm -rf $(VENV) $(INTEGRATION_VENV) .integration demo_output build dist *.egg-info .pytest_cache .hypothesis
