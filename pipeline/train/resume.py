"""Resume state of a training run: written atomically after an epoch every few minutes, after the last
epoch and when the run is interrupted, read back after a kill.

The state lives beside the outputs, in a folder neither git nor DVC tracks (``paths.resume`` in
dvc.yaml), not in a ``persist: true`` output: DVC deletes a stage's outputs before running it, and a
persistent output would take the training stages out of DVC's run-cache, so `dvc exp run` back to
an earlier set of params would retrain instead of restoring the finished result. Because DVC
deletes the dvclive folder and the checkpoint before rerunning, the state carries both: the
best-so-far weights and the dvclive files as they were at the end of the epoch.
"""

import contextlib
import copy
import hashlib
import json
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline.core.errors import UserError, first_line
from pipeline.core.io import atomic_path

# Bump when the layout of the state changes, so an old file is ignored rather than misread.
STATE_VERSION = 1


def file_digest(path: Path, chunk: int = 1 << 24) -> str:
    """SHA-256, hex, of a file's bytes or of a folder's files (a cache split is a folder): each
    file's relative path, size and bytes, in sorted order. Raises FileNotFoundError."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as f:
            # Name and size first, so that moving bytes from one file to the next changes the digest.
            digest.update(f"{file.relative_to(path).as_posix()}\0{os.fstat(f.fileno()).st_size}\0".encode())
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def training_inputs(
    model: str, arch: dict[str, Any], settings: dict[str, Any], caches: list[Path], encoder: str
) -> dict[str, Any]:
    """What a training run's resume state must match: model, architecture options, training
    ``settings`` (JSON-able), the SHA-256 of each cache (file or folder) and, when ``encoder`` names a file,
    of that file (so replacing pretrained weights starts fresh). Raises FileNotFoundError."""
    inputs = {"model": model, "arch": arch, **settings}
    inputs.update({f"cache:{Path(c).name}": file_digest(Path(c)) for c in caches})
    if Path(encoder).is_file():
        inputs["encoder_weights_file"] = file_digest(Path(encoder))
    return inputs


def fingerprint(inputs: dict[str, Any]) -> str:
    """SHA-256 of ``inputs`` as canonical JSON (sorted keys): what a resumable state was made with."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Human-readable ``key: old → new`` list of the top-level entries that differ (cache digests shortened)."""

    def show(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return text[:13] + "…" if len(text) > 16 and isinstance(value, str) else text

    keys = sorted(set(old) | set(new), key=str)
    return ", ".join(f"{k}: {show(old.get(k))} → {show(new.get(k))}" for k in keys if old.get(k) != new.get(k))


def check_same_inputs(model: str, gathered: list[dict[str, Any]]) -> None:
    """Raise UserError naming the first rank whose :func:`training_inputs` differ from rank 0's, and how;
    ``gathered`` holds every rank's, in rank order. Ranks on several machines read their own params,
    data and caches (and `precision: auto` may decide differently on other GPUs): they must agree, or
    each would train on something else."""
    for rank, theirs in enumerate(gathered[1:], start=1):
        if fingerprint(theirs) != fingerprint(gathered[0]):
            changed = differences(gathered[0], theirs)
            raise UserError(
                f"train {model}: rank {rank} has other training inputs than rank 0 ({changed}); "
                "give every machine the same params.yaml and data"
            )


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (CPU, and every CUDA device when present).

    Python's and NumPy's states are pickled to bytes held in a uint8 tensor, so the state loads
    with ``torch.load(..., weights_only=True)``.
    """
    state = {
        "python": _to_tensor(random.getstate()),
        "numpy": _to_tensor(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_from_tensor(state["python"]))
    np.random.set_state(_from_tensor(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class Stateful(Protocol):
    """What a model, optimiser, schedule, grad scaler and sampler have in common."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def capture(parts: dict[str, Stateful], **values: Any) -> dict[str, Any]:
    """A training state: ``{name: part.state_dict()}`` for each of ``parts``, ``values`` (loadable
    with ``weights_only=True``) and ``"rng"``, the global RNG states (:func:`rng_state`)."""
    return {**{name: part.state_dict() for name, part in parts.items()}, **values, "rng": rng_state()}


def restore(state: dict[str, Any], parts: dict[str, Stateful]) -> None:
    """Load what :func:`capture` saved into ``parts`` (same names) and the global RNGs."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    set_rng_state(state["rng"])


def _to_tensor(obj: Any) -> torch.Tensor:
    return torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)


def _from_tensor(tensor: torch.Tensor) -> Any:
    # These bytes were pickled by this module from RNG states (tuples of ints, NumPy arrays).
    return pickle.loads(tensor.numpy().tobytes())


def snapshot_dir(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` as {relative posix path: bytes} (dvclive's TSV and JSON files)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def restore_dir(folder: Path, files: dict[str, bytes]) -> None:
    """Recreate ``folder`` with exactly ``files`` (as :func:`snapshot_dir` returned), atomically."""
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def save_state(path: Path, state: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Write ``state`` with its fingerprint ``inputs`` to ``path`` atomically (temp file, then rename)."""
    payload = {"version": STATE_VERSION, "fingerprint": fingerprint(inputs), "inputs": inputs, "state": state}
    with atomic_path(path) as tmp:
        torch.save(_encode(payload), tmp)


def load_state(path: Path, inputs: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The state saved at ``path`` if it was made with ``inputs``, and a one-line reason when not.

    Returns (state, "") to resume, or (None, reason) to start fresh: no file, an unreadable or
    older-format file, or other fingerprint inputs (the reason lists what changed). Loads with
    ``torch.load(..., weights_only=True)``.
    """
    path = Path(path)
    if not path.exists():
        return None, ""
    try:
        payload = _decode(torch.load(path, map_location="cpu", weights_only=True))
        version, saved_inputs, state = payload["version"], payload["inputs"], payload["state"]
    except (KeyError, TypeError, RuntimeError, OSError, EOFError, pickle.UnpicklingError, json.JSONDecodeError) as err:
        return None, f"{path}: unreadable resume state ({first_line(err)}); starting fresh"
    if version != STATE_VERSION:
        return None, f"{path}: resume state has format {version}, this code writes {STATE_VERSION}; starting fresh"
    if fingerprint(saved_inputs) != fingerprint(inputs):
        changed = differences(saved_inputs, inputs)
        return None, f"{path}: resume state was made with other settings ({changed}); starting fresh"
    return state, ""


def _encode(payload: dict[str, Any]) -> dict[str, Any]:
    # weights_only=True loads tensors, dicts, lists and primitives; JSON-able params go in as text.
    return {**payload, "inputs": json.dumps(payload["inputs"], sort_keys=True, default=str)}


def _decode(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "inputs": json.loads(payload["inputs"])}


def cpu_copy(value: Any) -> Any:
    """A deep copy of ``value`` (tensors, dicts, lists, tuples of them and plain values) with every tensor
    copied to the CPU, so that later training steps do not change it."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)([cpu_copy(item) for item in value])
    return copy.deepcopy(value)


class ResumeStore:
    """Where a training stage keeps its resume state, made with fingerprint ``inputs``, and when it writes it.

    ``live_dir`` is the stage's dvclive folder: :meth:`save` snapshots it with the state and
    :meth:`load` puts it back, so the curves continue without a duplicate or missing step.

    :meth:`save` writes an epoch's state once ``every_s`` seconds of ``clock`` have passed since the last
    write (or since the store was made; 0 = after every epoch), and always after the last epoch (``epochs``)
    or an early stop. A state it does not write it keeps, to write when training is interrupted
    (:meth:`writing_when_interrupted`).
    """

    def __init__(
        self,
        path: Path,
        inputs: dict[str, Any],
        live_dir: Path,
        *,
        every_s: float,
        epochs: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.inputs, self.live_dir = Path(path), inputs, Path(live_dir)
        self.every_s, self.epochs, self.clock = every_s, epochs, clock
        self._written_at = clock()
        self._unwritten: dict[str, Any] | None = None
        self.on_disk = 0  # the epoch of the state in the file (0: none)

    def load(self, say: Callable[[str], None] = print) -> dict[str, Any] | None:
        """The saved state to resume from (its dvclive folder restored), or None to start fresh.

        ``say`` gets one line: which epoch training resumes after, or why a state was ignored.
        """
        state, reason = load_state(self.path, self.inputs)
        if state is None:
            if reason:
                say(reason)
            return None
        restore_dir(self.live_dir, state.pop("live"))
        self.on_disk = state["epoch"]
        say(f"{self.path}: resuming after epoch {state['epoch']}")
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Keep an epoch's ``state`` (its ``epoch`` and ``stopped`` entries say which and whether it is the
        last) plus a snapshot of the dvclive folder, and write them atomically when due (see the class).
        Training must not change ``state``'s tensors before this returns."""
        self._unwritten = {**state, "live": snapshot_dir(self.live_dir)}
        now = self.clock()
        if state["stopped"] or state["epoch"] >= self.epochs or now - self._written_at >= self.every_s:
            self._written_at = now
            self.write_unwritten()
        else:
            # The next epoch changes the weights and optimiser moments in place, so an interruption needs a
            # copy: host memory of one state (weights, AdamW's two moments and the best weights, about
            # 0.4-0.5 GB for the full models) and a device-to-host copy of it per unwritten epoch (a fraction
            # of a second over PCIe), instead of writing that to disk after every epoch.
            self._unwritten = cpu_copy(self._unwritten)

    def write_unwritten(self) -> None:
        """Write the last state :meth:`save` kept, if it was not written yet."""
        if self._unwritten is not None:
            save_state(self.path, self._unwritten, self.inputs)
            self.on_disk, self._unwritten = self._unwritten["epoch"], None

    @contextlib.contextmanager
    def writing_when_interrupted(self, then: Callable[[int], None]) -> Iterator[None]:
        """When the block ends with an exception (Ctrl-C, SIGTERM as :class:`pipeline.core.runner.Terminated`,
        an error): write the last completed epoch's state if it was not written yet, call ``then(epoch)`` with
        the epoch of the state in the file if there is one (what a rerun resumes after), and re-raise."""
        try:
            yield
        except BaseException:
            self.write_unwritten()
            if self.on_disk:
                then(self.on_disk)
            raise

    def clear(self) -> None:
        """Delete the state (the run finished; a rerun starts fresh)."""
        self.path.unlink(missing_ok=True)
