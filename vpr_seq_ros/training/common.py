"""What both trainers share: the run folder, training state and resumption, progress callbacks,
per-epoch summaries, model selection and the device.

A run folder holds::

    config.yaml        the resolved training configuration
    manifest.yaml      the resolved manifest (absolute paths)
    command.txt        the command lines that trained the model, one per attempt
    history.json       one summary per finished epoch
    best.pt            the selected model: a vpr_seq_ros checkpoint (the returned path)
    last.pt            the model after the last finished epoch: a vpr_seq_ros checkpoint
    train_state.pt     everything needed to resume (model, optimisers, schedule, epoch, best)

An *attempt* is one call of a trainer (one command). The folder records an attempt only once it
has finished an epoch (or, resumed with nothing left to train, written the selected model), so
an attempt that fails before, such as a wrong path in the manifest, leaves no trace that could
be mistaken for the run's. ``command.txt`` lists every recorded attempt, the first ones carried
over from the resumed state when a run continues in a new folder: a comment line (the epochs it
trained, when and in which folder it started, what it resumed) and the command line. Each
checkpoint carries the same records in its ``commands`` metadata: exactly the attempts that
trained its weights (for ``best.pt``, those up to the selected epoch).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from vpr_seq_ros.errors import ConfigError, ModelError
from vpr_seq_ros.evaluation import compute_metrics
from vpr_seq_ros.training.data import neighbours
from vpr_seq_ros.types import Matches
from vpr_seq_ros.writing import atomic_write

log = logging.getLogger(__name__)

STATE_FORMAT = 'vpr_seq_ros.training_state'
STATE_VERSION = 1
STATE_NAME = 'train_state.pt'
BEST_NAME = 'best.pt'
LAST_NAME = 'last.pt'

RESUMABLE_CHANGES = ('epochs', 'output_dir', 'device', 'data.cache_dir')
"""Configuration keys that may differ when a run is resumed."""


# --------------------------------------------------------------------------- callbacks, summaries


@dataclass(frozen=True)
class EpochSummary:
    """What one epoch did.

    Attributes:
        epoch: 1-based epoch number.
        epochs: epochs in total.
        losses: mean losses of the epoch by name.
        steps: optimiser steps taken.
        counts: other counts (e.g. queries without a violating negative).
        recalls: validation Recall@K (empty without a validation split).
        lr: learning rate used in this epoch.
        seconds: wall time of the epoch, validation included.
        best: whether this epoch's model is the selected one so far.
    """

    epoch: int
    epochs: int
    losses: dict[str, float]
    steps: int
    counts: dict[str, int] = field(default_factory=dict)
    recalls: dict[int, float] = field(default_factory=dict)
    lr: float = 0.0
    seconds: float = 0.0
    best: bool = False

    def line(self) -> str:
        """One-line human summary."""
        parts = [f'epoch {self.epoch}/{self.epochs}']
        parts += [f'{name} {value:.4f}' for name, value in self.losses.items()]
        parts.append(f'steps {self.steps}')
        parts += [f'{name} {value}' for name, value in self.counts.items()]
        if self.recalls:
            parts.append('val ' + ' '.join(f'R@{k} {v:.3f}' for k, v in self.recalls.items()))
        parts.append(f'lr {self.lr:.2e}')
        parts.append(f'{self.seconds:.1f} s')
        if self.best:
            parts.append('*best')
        return '  '.join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (recall keys as strings)."""
        return {'epoch': self.epoch, 'epochs': self.epochs, 'losses': dict(self.losses),
                'steps': self.steps, 'counts': dict(self.counts),
                'recalls': {str(k): v for k, v in self.recalls.items()}, 'lr': self.lr,
                'seconds': round(self.seconds, 3), 'best': self.best}


@dataclass
class TrainCallbacks:
    """Optional hooks for entry points (progress bars, printing); the library never prints.

    Attributes:
        on_epoch_start: called with ``(epoch, total, unit)`` before an epoch, where ``total``
            is how many ``unit`` (``'query'``, ``'step'``) it will report.
        on_progress: called with the number of units just done.
        on_epoch_end: called with the epoch's summary.
    """

    on_epoch_start: Callable[[int, int, str], None] | None = None
    on_progress: Callable[[int], None] | None = None
    on_epoch_end: Callable[[EpochSummary], None] | None = None

    def epoch_start(self, epoch: int, total: int, unit: str) -> None:
        if self.on_epoch_start:
            self.on_epoch_start(epoch, total, unit)

    def progress(self, n: int) -> None:
        if self.on_progress:
            self.on_progress(n)

    def epoch_end(self, summary: EpochSummary) -> None:
        if self.on_epoch_end:
            self.on_epoch_end(summary)


def selection_score(recalls: Mapping[int, float], k: int) -> tuple[float, float]:
    """Model-selection key: validation Recall@k, then Recall@1 (higher is better)."""
    return (float(recalls.get(k, 0.0)), float(recalls.get(1, 0.0)))


# --------------------------------------------------------------------------- evaluation


def recall_at(matches: Matches, ref_places: np.ndarray, query_places: np.ndarray,
              ref_valid: np.ndarray, radius: float, ks: tuple[int, ...]) -> dict[int, float]:
    """Recall@K of matches whose positives are the valid reference anchors within ``radius``.

    Args:
        matches: top-K reference anchors per query anchor.
        ref_places: ``(N, k)`` reference places.
        query_places: ``(M, k)`` query places.
        ref_valid: ``(N,)`` reference anchors that can be predicted.
        radius: positives within this distance (frames or metres).
        ks: the K values.
    """
    positives = [p[ref_valid[p]] for p in neighbours(ref_places, query_places, radius)]
    return compute_metrics(matches, positives, ks).recall_at


# --------------------------------------------------------------------------- run folder


@dataclass
class RunStart:
    """What both trainers set up before their first epoch."""

    manifest: Any
    config: dict[str, Any]
    state: dict[str, Any] | None
    run: RunFolder
    device: Any


def start_run(cfg: Any, kind: str, resume: str | Path | None,
              command_line: str | None) -> RunStart:
    """Load the manifest, resolve the config, load a resumed state, start the run folder
    (config, manifest, command line), pick the device and seed everything."""
    from vpr_seq_ros.training.config import to_dict
    from vpr_seq_ros.training.manifest import load_manifest

    manifest = load_manifest(cfg.data.manifest)
    config = to_dict(cfg)
    state = load_state(resume, kind, config) if resume is not None else None
    run = RunFolder(cfg.output_dir)
    run.start(config, plain(manifest), command_line, resuming=state is not None,
              previous=state.get('commands', ()) if state is not None else (),
              resumed_from=state['path'] if state is not None else None)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, device)
    return RunStart(manifest, config, state, run, device)


def update_best(best: dict[str, Any] | None, recalls: Mapping[int, float], k: int,
                has_validation: bool, epoch: int) -> tuple[bool, dict[str, Any] | None]:
    """Model selection: is this epoch (1-based) the best so far, and the updated record.

    Without a validation split every epoch is the best (the last one is kept); otherwise an
    epoch must be strictly better in validation Recall@k (ties: Recall@1), as the official code.
    """
    score = list(selection_score(recalls, k))
    is_best = not has_validation or best is None or score > list(best['score'])
    return is_best, ({'epoch': epoch, 'score': score} if is_best else best)


def close_epoch(run: RunFolder, kind: str, model: Any, state_tensors: dict[str, Any],
                config: dict[str, Any], meta: dict[str, Any], summary: EpochSummary,
                best: dict[str, Any] | None, history: list[dict[str, Any]],
                callbacks: TrainCallbacks) -> None:
    """End-of-epoch bookkeeping shared by the trainers: best and last checkpoints, resumable
    state, history, the summary line, the callback."""
    from vpr_seq_ros.models.checkpoints import save_checkpoint

    history.append(summary.as_dict())
    run.record(summary.epoch)
    epoch_meta = {**meta, 'epoch': summary.epoch,
                  'val_recall_at': {str(k): v for k, v in summary.recalls.items()},
                  'commands': run.commands()}
    if summary.best:
        save_checkpoint(run.best, kind, model.state_dict(), **epoch_meta)
    save_checkpoint(run.last, kind, model.state_dict(), **epoch_meta,
                    train_state=run.state.name)
    save_state(run.state, kind, summary.epoch, config, state_tensors, best, history,
               commands=run.commands())
    run.write_history(history)
    log.info('%s', summary.line())
    callbacks.epoch_end(summary)


def finish_run(run: RunFolder, kind: str, model: Any, meta: dict[str, Any]) -> Path:
    """The selected checkpoint; written from the current model when a resumed run had nothing
    left to do in a new folder."""
    from vpr_seq_ros.models.checkpoints import save_checkpoint

    if not run.best.is_file():
        run.record(None)
        save_checkpoint(run.best, kind, model.state_dict(), **meta, commands=run.commands())
    return run.best


def default_command_line() -> str:
    """The command line of this process (recorded with every run)."""
    return shlex.join(sys.argv) if sys.argv and sys.argv[0] else '(python)'


def resolve_device(name: str) -> Any:
    """``cpu``, ``cuda`` or ``auto`` -> a torch device.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    import torch

    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise ConfigError('device = cuda, but torch sees no CUDA device; use --device cpu or '
                          'auto')
    return torch.device(name)


def plain(value: Any) -> Any:
    """Dataclasses, tuples and paths -> plain dicts, lists and strings (YAML/JSON-ready)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def format_commands(attempts: Sequence[Mapping[str, Any]]) -> str:
    """``command.txt``: per attempt a comment line (epochs, start, folder, what it resumed)
    and the command line."""
    lines = []
    for attempt in attempts:
        epochs = list(attempt.get('epochs') or [])
        what = (f'epochs {epochs[0]}-{epochs[1]}' if epochs and epochs[0] != epochs[1] else
                f'epoch {epochs[0]}' if epochs else 'no epoch left to train')
        if attempt.get('resumed_from'):
            what += f', resumed from {attempt["resumed_from"]}'
        lines.append(f'# {what}; started {attempt.get("started_utc")} in {attempt.get("cwd")}')
        lines.append(str(attempt.get('command')))
    return '\n'.join(lines) + '\n' if lines else ''


def _yaml_bytes(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False).encode()


class RunFolder:
    """The files of one training run (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.best = self.path / BEST_NAME
        self.last = self.path / LAST_NAME
        self.state = self.path / STATE_NAME
        self.history = self.path / 'history.json'
        self.command_file = self.path / 'command.txt'
        self._previous: list[dict[str, Any]] = []
        self._attempt: dict[str, Any] | None = None
        self._files: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
        self._recorded = False

    def start(self, config: dict[str, Any], manifest: dict[str, Any],
              command_line: str | None, resuming: bool = False,
              previous: Sequence[Mapping[str, Any]] = (),
              resumed_from: str | None = None) -> None:
        """Create the folder and begin an attempt; nothing is recorded until :meth:`record`.

        Args:
            config: the resolved configuration (written to ``config.yaml``).
            manifest: the resolved manifest (written to ``manifest.yaml``).
            command_line: this attempt's command (default: this process's ``sys.argv``).
            resuming: whether the attempt continues a run (from its training state).
            previous: the attempts recorded in that state.
            resumed_from: the state file it continues.

        Raises:
            ConfigError: a new run would overwrite the run already in the folder.
        """
        if not resuming and self.state.is_file():
            raise ConfigError(f'{self.path} already holds a training run; continue it with '
                              f'--resume {self.path}, or write the new run elsewhere (--out)')
        self.path.mkdir(parents=True, exist_ok=True)
        self._files = (config, manifest)
        self._previous = [dict(a) for a in previous]
        self._attempt = {
            'command': command_line or default_command_line(), 'cwd': os.getcwd(),
            'started_utc': _dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'),
            'epochs': [], 'resumed_from': resumed_from}
        self._recorded = False

    def commands(self) -> list[dict[str, Any]]:
        """The recorded attempts (a copy): ``command``, ``cwd``, ``started_utc``, ``epochs``
        (``[first, last]`` trained, 1-based; empty when none) and ``resumed_from``."""
        current = [self._attempt] if self._recorded and self._attempt is not None else []
        return copy.deepcopy(self._previous + current)

    def record(self, epoch: int | None) -> None:
        """Count a finished epoch (None: no epoch, but a model was written) as this attempt's;
        on the attempt's first record also write ``config.yaml`` and ``manifest.yaml``; rewrite
        ``command.txt``."""
        if self._attempt is None:
            raise ConfigError('RunFolder.record before start')
        if not self._recorded:
            config, manifest = self._files
            atomic_write(self.path / 'config.yaml', lambda h: h.write(_yaml_bytes(config)))
            atomic_write(self.path / 'manifest.yaml', lambda h: h.write(_yaml_bytes(manifest)))
            self._recorded = True
        if epoch is not None:
            epochs = self._attempt['epochs']
            self._attempt['epochs'] = [epochs[0] if epochs else int(epoch), int(epoch)]
        text = format_commands(self.commands())
        atomic_write(self.command_file, lambda h: h.write(text.encode()))

    def write_history(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``history.json``."""
        text = json.dumps(history, indent=2) + '\n'
        atomic_write(self.history, lambda h: h.write(text.encode()))


# --------------------------------------------------------------------------- training state


def save_state(path: Path, kind: str, epoch: int, config: dict[str, Any],
               tensors: dict[str, Any], best: dict[str, Any] | None,
               history: list[dict[str, Any]],
               commands: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write the resumable training state atomically.

    Args:
        path: the state file.
        kind: ``seqmatchnet`` or ``jist-r18``.
        epoch: epochs finished.
        config: the resolved configuration (``to_dict``).
        tensors: state dicts by name (``model``, ``optimizer``, ...).
        best: ``{'epoch': e, 'score': [..]}`` of the selected model, or None.
        history: the epoch summaries so far.
        commands: the attempts that trained the state (:meth:`RunFolder.commands`).
    """
    import torch

    payload = {'format': STATE_FORMAT, 'version': STATE_VERSION, 'kind': kind, 'epoch': epoch,
               'config': config, 'best': best, 'history': history,
               'commands': [dict(c) for c in commands], **tensors}

    def write(handle: Any) -> None:
        torch.save(payload, handle)

    return atomic_write(path, write)


def resolve_state_path(path: str | Path) -> Path:
    """The training-state file for ``--resume``: the file itself, a run folder, or a run's
    ``last.pt`` / ``best.pt`` (the state beside it).

    Raises:
        ModelError: nothing resumable there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / STATE_NAME
    elif path.name in (BEST_NAME, LAST_NAME):
        path = path.with_name(STATE_NAME)
    if not path.is_file():
        raise ModelError(f'no training state at {path}; --resume takes a run folder or its '
                         f'{STATE_NAME} (written after every epoch)')
    return path


def load_state(path: str | Path, kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Read a training state and check that it belongs to this kind and configuration.

    Raises:
        ModelError: unreadable, another kind or format version.
        ConfigError: the configuration differs in more than :data:`RESUMABLE_CHANGES`.
    """
    import torch

    path = resolve_state_path(path)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelError(f'cannot read training state {path}: {err}') from err
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise ModelError(f'{path} is not a vpr_seq_ros training state; --resume takes a run '
                         f'folder or its {STATE_NAME}')
    if state.get('version') != STATE_VERSION:
        raise ModelError(f'{path} is a training state of version {state.get("version")!r}; '
                         f'this vpr_seq_ros resumes version {STATE_VERSION}')
    if state.get('kind') != kind:
        command = 'jist' if state.get('kind') == 'jist-r18' else 'seqmatchnet'
        raise ModelError(f'{path} is a {state.get("kind")} training state; resume it with '
                         f'vpr-seq train {command}')
    differences = _differences(state.get('config', {}), config)
    if differences:
        raise ConfigError(
            f'{path} was trained with another configuration (' + '; '.join(differences[:6]) +
            '); resume with the configuration of that run (its config.yaml). Only '
            f'{", ".join(RESUMABLE_CHANGES)} may change.')
    log.info('resuming from %s after epoch %d', path, state['epoch'])
    state['path'] = str(path)
    return state


def _differences(old: Any, new: Any, prefix: str = '') -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            name = f'{prefix}{key}'
            if name in RESUMABLE_CHANGES:
                continue
            out.extend(_differences(old.get(key), new.get(key), name + '.'))
        return out
    if old != new:
        return [f'{prefix.rstrip(".")}: {old!r} then, {new!r} now']
    return []


def seed_everything(seed: int, device: Any = None) -> None:
    """Seed torch's global RNG (the trainers draw their own choices from seeded generators);
    on CUDA also make cuDNN pick deterministic kernels (process-wide).

    Runs are bit-identical on the CPU. On CUDA, the backward pass of indexing uses atomic adds,
    so repeated runs can differ in the last bits.
    """
    import torch

    torch.manual_seed(seed)
    if device is not None and getattr(device, 'type', device) == 'cuda':
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def epoch_rng(seed: int, epoch: int, *extra: int) -> np.random.Generator:
    """The numpy generator of one epoch: a function of the seed and the epoch only, so that a
    resumed run draws exactly what an uninterrupted one does."""
    return np.random.default_rng([seed, epoch, *extra])


__all__ = ['EpochSummary', 'RunFolder', 'TrainCallbacks', 'epoch_rng', 'format_commands',
           'load_state', 'plain',
           'recall_at', 'resolve_device', 'resolve_state_path', 'save_state', 'seed_everything',
           'selection_score']
