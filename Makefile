# ossfleet: `make run` brings the platform up on this machine; `make test` passes the tests.
# Both set everything up first, on a fresh machine with only Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch on machines without CUDA: a bare `torch` requirement
# would pull the multi-GB CUDA wheel. On GPU machines: make TORCH='torch==2.13.0' ...
# with the CUDA index of your choice in PIP_INDEX_URL / PIP_EXTRA_INDEX_URL.
TORCH  ?= torch==2.13.0
CONFIG ?= config/local.yaml
STAMP  := $(VENV)/.installed
CKPT   := var/checkpoints
# checkov (the Terraform security scan) lives in a venv of its own: its pinned
# dependencies would downgrade packages Ray needs.
TFVENV := .venv-tf
TFSTAMP := $(TFVENV)/.installed

.PHONY: install run test lint unit checkpoints protos clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

$(TFSTAMP):
	$(PYTHON) -m venv $(TFVENV)
	$(TFVENV)/bin/pip install --quiet --upgrade pip
	$(TFVENV)/bin/pip install --quiet "checkov>=3.2,<4"
	touch $@

$(CKPT)/tiny-gpt-oss-20b/config.json: | $(STAMP)
	$(BIN)/ossfleet make-tiny-checkpoint $(CKPT)/tiny-gpt-oss-20b --layers 2

$(CKPT)/tiny-gpt-oss-120b/config.json: | $(STAMP)
	$(BIN)/ossfleet make-tiny-checkpoint $(CKPT)/tiny-gpt-oss-120b --layers 4 --seed 1

checkpoints: $(CKPT)/tiny-gpt-oss-20b/config.json $(CKPT)/tiny-gpt-oss-120b/config.json

run: install checkpoints
	$(BIN)/ossfleet up --config $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint $(TFSTAMP) browser
	$(BIN)/pytest

# The console's browser test drives Debian's Chromium (Playwright's own download cannot be
# reached offline). Installed where apt-get exists and chromium is missing; elsewhere the test
# says it skipped and why.
browser:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q chromium chromium-driver >/dev/null || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	fi

unit: install
	$(BIN)/pytest tests/unit

# Regenerate the committed gRPC stubs after editing the proto.
protos: install
	$(BIN)/python -m grpc_tools.protoc -I platform --python_out=platform --pyi_out=platform \
		--grpc_python_out=platform platform/ossfleet/v1/ossfleet.proto platform/ossfleet/v1/admin.proto

clean:
	rm -rf $(VENV) $(TFVENV) var .pytest_cache .mypy_cache .ruff_cache
