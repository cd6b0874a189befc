# The README's vocabulary. `make drill` and `make test` set themselves up on a fresh machine.

VENV     := .venv
SAM_VENV := .venv-sam
BIN      := $(VENV)/bin
# Lambda runs python3.12: test on it when the machine has it (directly or through pyenv).
PYTHON   ?= $(shell for c in python3.12 "$$(pyenv prefix 3.12 2>/dev/null)/bin/python3.12" python3.13 python3; do \
              $$c -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null && { echo $$c; break; }; done)
STAMP    := $(VENV)/.installed

.PHONY: setup drill test test-fast lint format typecheck validate build explain bench bench-isolation security-scan \
        clean observed-calls

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## The main job: the whole Detect. Nuke. Replace. drill on the embedded local AWS.
drill: setup
	$(BIN)/immutable-guard drill

## The whole test suite, on parallel workers (pytest-xdist). Most tests wait on the local AWS's threads
## and polls, so more workers than cores pays; TEST_WORKERS=1 runs it in one process.
TEST_WORKERS ?= 4
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

## Re-record tests/security/observed_calls.json, the IAM actions each function and state machine (and each
## member role they act through) was seen using (the drill, the e2e tests, the fault matrix's clean runs,
## every sample event through Detect); the suite then holds template.yaml and organization/member-roles.yaml
## to it. Run it after changing what a function calls.
observed-calls: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --record-calls -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint --include-checks I -- template.yaml iam-events-forwarder.yaml organization/*.yaml examples/*.yaml

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy

explain: setup
	@for f in events/*.json; do echo "== $$f"; $(BIN)/immutable-guard explain $$f; done

## Figures for docs/ (never asserted in tests): fault matrix, load, cold start against Cloud Custodian,
## containment path. The fault matrix alone takes about half an hour on two cores.
bench: setup
	$(BIN)/python benchmarks/fault_matrix.py
	$(BIN)/python benchmarks/load_detect.py --events 10000
	$(BIN)/python benchmarks/cold_start.py --runs 5
	$(BIN)/python benchmarks/containment_calls.py

## Event to isolated, cold, against Cloud Custodian on one local AWS (interleaved runs). Cloud Custodian is
## not a dependency of the project: it gets its own virtualenv here.
C7N_VENV := benchmarks/.venv-c7n
$(C7N_VENV)/.installed:
	$(PYTHON) -m venv $(C7N_VENV)
	$(C7N_VENV)/bin/python -m pip install --quiet c7n==0.9.53
	@touch $@

bench-isolation: setup $(C7N_VENV)/.installed
	$(BIN)/python benchmarks/isolation_latency.py --runs $(or $(RUNS),5)

# checkov is heavy and pins its own dependencies: its own virtualenv.
security-scan:
	test -x .venv-checkov/bin/checkov || { $(PYTHON) -m venv .venv-checkov && .venv-checkov/bin/pip install --quiet checkov; }
	.venv-checkov/bin/checkov -f template.yaml --framework cloudformation --skip-download

# aws-sam-cli lives in its own virtualenv (it pins older boto3 / cfn-lint).
$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip aws-sam-cli
	@touch $@

validate: $(SAM_VENV)/.installed
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml

# No containers: sam build uses the python3.12 interpreter found on PATH.
build: $(SAM_VENV)/.installed
	PATH="$$(dirname $(PYTHON)):$$PATH" $(SAM_VENV)/bin/sam build --template template.yaml

clean:
	rm -rf $(VENV) $(SAM_VENV) .venv-checkov .aws-sam .pytest_cache .mypy_cache .ruff_cache
