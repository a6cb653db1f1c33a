# Every target a user runs; each installs what it needs first (venv, pinned packages, CDK CLI).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=
# Example ARNs so `make synth` shows the template; pass your model's with CDK_CONTEXT="-c projectArn=... -c projectVersionArn=...".
CDK_CONTEXT ?= -c projectArn=arn:aws:rekognition:us-east-1:123456789012:project/my-project/1700000000000 \
	-c projectVersionArn=arn:aws:rekognition:us-east-1:123456789012:project/my-project/version/my-project.v1/1700000000000
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: setup browser demo test lint format synth deploy bench bench-arrivals lock readme clean

# The locked packages, then this project itself (editable: the console script runs this checkout).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

# Debian's Chromium renders the demo's gallery in a test; installed when missing (needs root/apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the gallery rendering test..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; }

demo: $(VENV)/.installed
	$(VENV)/bin/customlabels-batch demo $(ARGS)

test: setup browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

synth: setup
	npx cdk synth $(CDK_CONTEXT) --quiet
	@echo "Template: cdk.out/CustomLabelsBatchPipeline.template.json"

deploy: setup
	npx cdk deploy $(CDK_CONTEXT)

bench: $(VENV)/.installed
	$(PY) -m customlabels_batch.bench $(ARGS)

# Cost per day against time to result for steady arrivals (the README's "Choosing a schedule").
bench-arrivals: $(VENV)/.installed
	$(PY) -m customlabels_batch.bench.arrivals $(ARGS)

# Regenerate the lock from pyproject.toml's direct dependencies (pip-tools), keeping existing pins.
lock: $(VENV)/.installed
	$(VENV)/bin/pip-compile --quiet --strip-extras --extra deploy --extra dev --no-emit-index-url \
		--no-emit-find-links --no-emit-trusted-host -o requirements.txt pyproject.toml

# Rewrite the README's configuration table from the settings declaration.
readme: $(VENV)/.installed
	$(PY) -m customlabels_batch.settings --write-readme README.md

clean:
	rm -rf cdk.out demo-output bench-output .pytest_cache .ruff_cache bench-arrivals.json
