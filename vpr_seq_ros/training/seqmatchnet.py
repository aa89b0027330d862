"""SeqMatchNet training: the transform ``y = L2norm(W x + b)`` on frozen frame descriptors.

Facts of the method (Garg et al., CoRL 2021; official ``train.py``, ``datasets.py``):

* base frame descriptors come from a frozen encoder (here any of ``npy``, ``patchnorm``,
  ``jist-r18``), computed once and optionally cached on disk;
* the transform starts as the identity (``W = I``, ``b = 0``);
* loss: ``mean(max(d(q, p) - d(q, n) + margin, 0))`` over (query, negative) pairs, with the
  sequence distance ``d`` = mean aligned Euclidean distance of the L transformed frames, margin
  ``sqrt(0.1)``;
* mining over the whole training map with the same sequence distance, computed as a
  convolution of the frame-distance matrix (:mod:`vpr_seq_ros.training.mining`), refreshed every
  ``refresh_every`` queries with the current transform; up to 10 margin-violating negatives;
  the best positive has the smallest sequence distance within the positive radius;
* SGD (lr 1e-3, momentum 0.9, weight decay 1e-3), StepLR(5, 0.5), 16 queries per batch;
  selection by validation Recall@5;
* ablation switches ``loss.distance`` and ``mining.distance``: ``single`` uses the anchor frame
  only (L = 1), ``seqmatch`` the sequence.

The result is a ``seqmatchnet`` checkpoint of this project: ``--transform seqmatchnet
--transform-weights best.pt`` with the same base encoder in ``build-map``, ``evaluate`` and the
node.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.errors import ConfigError, SourceError
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.models.seqmatchnet import SeqMatchNetTransform
from vpr_seq_ros.training.common import (BEST_NAME, EpochSummary, RunFolder, TrainCallbacks,
                                         close_epoch, epoch_rng, finish_run, recall_at,
                                         start_run, update_best)
from vpr_seq_ros.training.config import SeqMatchNetTrainConfig
from vpr_seq_ros.training.data import (Split, descriptor_loader, full_windows,
                                       load_splits, neighbours, warn_place_overlap,
                                       window_offset)
from vpr_seq_ros.training.losses import sequence_distance, triplet_hinge
from vpr_seq_ros.training.manifest import GroundTruthSpec
from vpr_seq_ros.training.mining import Triplet, mine_triplets, mining_columns

log = logging.getLogger(__name__)

KIND = 'seqmatchnet'
_TRANSFORM_BATCH = 8192


def transform_descriptors(model: SeqMatchNetTransform, x: np.ndarray,
                          device: torch.device) -> np.ndarray:
    """Apply the transform without gradients: ``(N, D_in)`` -> ``(N, D_out)`` float32."""
    out = np.empty((x.shape[0], model.out_dim), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for lo in range(0, x.shape[0], _TRANSFORM_BATCH):
            chunk = torch.from_numpy(np.ascontiguousarray(x[lo:lo + _TRANSFORM_BATCH]))
            out[lo:lo + _TRANSFORM_BATCH] = model(chunk.to(device)).cpu().numpy()
    model.train(was_training)
    return out


@dataclass(frozen=True)
class _Frames:
    """Which frames of a window a distance uses: ``anchor - offset + arange(length)``."""

    length: int
    offset: int

    def of(self, anchors: np.ndarray) -> np.ndarray:
        """``(B,)`` anchors -> ``(B, length)`` frame rows."""
        return np.asarray(anchors, np.int64)[:, None] - self.offset + np.arange(self.length)


class _TrainingSet:
    """Training queries, their positive candidates and negative pools."""

    def __init__(self, split: Split, gt: GroundTruthSpec, length: int, window: str) -> None:
        self.ref, self.query = split.ref, split.query
        _, self.ref_valid = full_windows(self.ref.segments, length, window)
        _, query_valid = full_windows(self.query.segments, length, window)
        positives = neighbours(self.ref.places, self.query.places, gt.positive_radius)
        near = neighbours(self.ref.places, self.query.places, gt.negative_radius)
        self.positives = [p[self.ref_valid[p]] for p in positives]
        self.near = near
        has_positive = np.array([len(p) > 0 for p in self.positives], dtype=bool)
        self.queries = np.flatnonzero(query_valid & has_positive)
        if len(self.queries) == 0:
            raise SourceError(
                'no training query has a full sequence window and a positive reference within '
                f'ground_truth.positive_radius = {gt.positive_radius}; check the train ranges, '
                'the radii and the sequence length')
        log.info('training set: %d queries (of %d query frames), %d reference anchors',
                 len(self.queries), len(self.query), int(self.ref_valid.sum()))

    def negative_mask(self, j: int) -> np.ndarray:
        """``(N,)`` bool: reference anchors that may be negatives of query ``j``."""
        mask = self.ref_valid.copy()
        mask[self.near[j]] = False
        return mask


def _evaluate(model: SeqMatchNetTransform, split: Split, cfg: SeqMatchNetTrainConfig,
              radius: float, device: torch.device) -> dict[int, float]:
    """Validation Recall@K with the sequence matcher (L = ``cfg.sequence.length``)."""
    ref = transform_descriptors(model, split.ref.data, device)
    query = transform_descriptors(model, split.query.data, device)
    result = seqmatch_batch(ref, query, SeqMatchSettings(length=cfg.sequence.length,
                                                         window=cfg.sequence.window),
                            top_k=max(cfg.validation.recall_at),
                            ref_segments=split.ref.segments,
                            query_segments=split.query.segments)
    return recall_at(result.matches, split.ref.places, split.query.places, result.ref_valid,
                     radius, tuple(cfg.validation.recall_at))


class _Trainer:
    """One SeqMatchNet training run (state between epochs lives in the optimiser and model)."""

    def __init__(self, cfg: SeqMatchNetTrainConfig, train: Split, gt: GroundTruthSpec,
                 device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        length, window = cfg.sequence.length, cfg.sequence.window
        self.data = _TrainingSet(train, gt, length, window)
        full = _Frames(length, window_offset(length, window))
        single = _Frames(1, 0)
        self.loss_frames = full if cfg.loss.distance == 'seqmatch' else single
        self.mine_frames = full if cfg.mining.distance == 'seqmatch' else single
        dim = int(train.ref.data.shape[1])
        self.model = SeqMatchNetTransform.identity(dim).to(device)
        opt = cfg.optimizer
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=opt.lr,
                                         momentum=opt.momentum, weight_decay=opt.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, opt.step_size,
                                                         opt.gamma)
        self.ref_x = torch.from_numpy(np.ascontiguousarray(train.ref.data, dtype=np.float32))
        self.query_x = torch.from_numpy(np.ascontiguousarray(train.query.data,
                                                             dtype=np.float32))

    # ------------------------------------------------------------------ mining
    def mine(self, queries: np.ndarray) -> list[Triplet]:
        """Triplets of a chunk of queries, mined with the current transform."""
        data = self.data
        frames = self.mine_frames
        ref = transform_descriptors(self.model, data.ref.data, self.device)
        rows = frames.of(queries)
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        q = transform_descriptors(self.model, data.query.data[unique], self.device)
        windows = q[inverse.reshape(rows.shape)]
        columns = mining_columns(ref, data.ref.segments, windows, self.cfg.sequence.window)
        return mine_triplets(columns, queries, [data.positives[j] for j in queries],
                             [data.negative_mask(j) for j in queries], self.cfg.loss.margin,
                             self.cfg.mining.num_negatives)

    # ------------------------------------------------------------------ one step
    def step(self, triplets: list[Triplet]) -> float:
        """One SGD step on a batch of triplets; returns the loss."""
        frames = self.loss_frames
        b, length = len(triplets), frames.length
        q_rows = frames.of(np.array([t.query for t in triplets]))
        p_rows = frames.of(np.array([t.positive for t in triplets]))
        n_rows = frames.of(np.concatenate([t.negatives for t in triplets]))
        pair_query = torch.from_numpy(np.repeat(np.arange(b), [len(t.negatives)
                                                               for t in triplets]))
        # Every distinct frame is transformed once per step.
        uq, iq = np.unique(q_rows.ravel(), return_inverse=True)
        ur, ir = np.unique(np.concatenate([p_rows.ravel(), n_rows.ravel()]),
                           return_inverse=True)
        self.model.train()
        tq = self.model(self.query_x[torch.from_numpy(uq)].to(self.device))
        tr = self.model(self.ref_x[torch.from_numpy(ur)].to(self.device))
        q = tq[torch.from_numpy(iq).to(self.device)].view(b, length, -1)
        ir_t = torch.from_numpy(ir).to(self.device)
        p = tr[ir_t[:b * length]].view(b, length, -1)
        n = tr[ir_t[b * length:]].view(len(pair_query), length, -1)
        pair_query = pair_query.to(self.device)
        d_pos = sequence_distance(q, p)[pair_query]
        d_neg = sequence_distance(q[pair_query], n)
        loss = triplet_hinge(d_pos, d_neg, self.cfg.loss.margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ------------------------------------------------------------------ one epoch
    def epoch(self, epoch: int, callbacks: TrainCallbacks) -> tuple[float, int, int, int]:
        """Train one epoch; returns (mean loss, steps, triplets, skipped queries)."""
        cfg = self.cfg
        order = epoch_rng(cfg.seed, epoch).permutation(self.data.queries)
        losses: list[float] = []
        n_triplets = skipped = 0
        callbacks.epoch_start(epoch + 1, len(order), 'query')
        for lo in range(0, len(order), cfg.mining.refresh_every):
            chunk = order[lo:lo + cfg.mining.refresh_every]
            triplets = {t.query: t for t in self.mine(chunk)}
            for b in range(0, len(chunk), cfg.batch_size):
                batch = [triplets[j] for j in chunk[b:b + cfg.batch_size] if j in triplets]
                skipped += min(cfg.batch_size, len(chunk) - b) - len(batch)
                if batch:
                    losses.append(self.step(batch))
                    n_triplets += len(batch)
                callbacks.progress(min(cfg.batch_size, len(chunk) - b))
        mean = float(np.mean(losses)) if losses else 0.0
        return mean, len(losses), n_triplets, skipped

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Any]:
        return {'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'scheduler': self.scheduler.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])


def train_seqmatchnet(cfg: SeqMatchNetTrainConfig, resume: str | Path | None = None,
                      callbacks: TrainCallbacks | None = None,
                      command_line: str | None = None) -> Path:
    """Train SeqMatchNet's transform on the traverses of a manifest.

    Args:
        cfg: the training configuration.
        resume: a run folder or its ``train_state.pt``: continue after its last finished epoch
            (the configuration must be that run's, except ``epochs``, ``output_dir``,
            ``device``, ``data.cache_dir``).
        callbacks: progress and per-epoch hooks for entry points.
        command_line: recorded in ``command.txt`` (default: this process's ``sys.argv``).

    Returns:
        The selected checkpoint (``<output_dir>/best.pt``, kind ``seqmatchnet``).

    Raises:
        ConfigError: a bad manifest or configuration, or a resume with another configuration.
        SourceError: unreadable traverses or no usable training query.
        ModelError: an unreadable training state.
    """
    callbacks = callbacks or TrainCallbacks()
    started = start_run(cfg, KIND, resume, command_line)
    manifest, config, state, run, device = (started.manifest, started.config, started.state,
                                            started.run, started.device)
    encoder = build_encoder(cfg.encoder)
    splits = load_splits(manifest, ('train', 'val'),
                         descriptor_loader(encoder, cfg.data.cache_dir, cfg.encoder.batch_size))
    if 'train' not in splits:
        raise ConfigError('the manifest has no train range on both a reference and a query '
                          'traverse')
    _check_dims(splits)
    warn_place_overlap(splits, manifest.ground_truth)
    val = splits.get('val')
    if val is None:
        log.warning('no validation split: best.pt is the model of the last epoch')
    trainer = _Trainer(cfg, splits['train'], manifest.ground_truth, device)
    start, best, history = 0, None, []
    if state is not None:
        trainer.load(state)
        start, best, history = int(state['epoch']), state['best'], list(state['history'])
        _carry_best(Path(state['path']).parent, run)
    meta = {'trained_with': 'vpr_seq_ros.training.seqmatchnet',
            'base_encoder': encoder.settings(), 'sequence_length': cfg.sequence.length,
            'train_config': config}
    if start == 0 and val is not None:
        recalls = _evaluate(trainer.model, val, cfg, manifest.ground_truth.eval_radius, device)
        log.info('before training (identity transform): val %s',
                 ' '.join(f'R@{k} {v:.3f}' for k, v in recalls.items()))
    for epoch in range(start, cfg.epochs):
        started = time.perf_counter()
        lr = float(trainer.scheduler.get_last_lr()[0])
        loss, steps, n_triplets, skipped = trainer.epoch(epoch, callbacks)
        trainer.scheduler.step()
        recalls = _evaluate(trainer.model, val, cfg, manifest.ground_truth.eval_radius,
                            device) if val is not None else {}
        is_best, best = update_best(best, recalls, cfg.validation.select_recall_at,
                                    val is not None, epoch + 1)
        summary = EpochSummary(epoch + 1, cfg.epochs, {'loss': loss}, steps,
                               {'triplets': n_triplets, 'skipped': skipped}, recalls, lr,
                               time.perf_counter() - started, is_best)
        close_epoch(run, KIND, trainer.model, trainer.state_tensors(), config, meta, summary,
                    best, history, callbacks)
    return finish_run(run, KIND, trainer.model, meta)


def _check_dims(splits: dict[str, Split]) -> None:
    dims = {int(side.data.shape[1]) for split in splits.values()
            for side in (split.ref, split.query)}
    if len(dims) != 1:
        raise SourceError(f'the traverses give descriptors of different dimensions {sorted(dims)};'
                          ' use one base encoder for all of them')


def _carry_best(previous: Path, run: RunFolder) -> None:
    """Bring the selected model of a resumed run into a new run folder."""
    source = previous / BEST_NAME
    if source.is_file() and source.resolve() != run.best.resolve():
        shutil.copyfile(source, run.best)


__all__ = ['train_seqmatchnet', 'transform_descriptors']

