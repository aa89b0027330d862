"""JIST training: the sequence branch and the image branch, jointly (Berton et al., RA-L 2024).

Facts of the method (official ``train_double_dataset.py`` and ``jist/utils/parser.py``):

* sequence branch: SeqGeM descriptors of L = 5 frames (not normalised), triplet margin loss
  (margin 0.1, p = 2, summed, divided by ``batch * negatives``) x 1e4; per sub-epoch, 1000
  random training queries and 3000 random database sequences are encoded without gradients
  (fp16 autocast on CUDA); the best positive is the nearest in descriptor space among the
  database sequences within the positive radius, the 5 hard negatives the nearest cached ones
  beyond the negative radius; 4 triplets per step;
* image branch: CosFace (s = 30, m = 0.4) with cross-entropy x 100 on place classes grouped as
  CosPlace does (:mod:`vpr_seq_ros.training.groups`), one group and its own classifier per
  epoch; here on the training frames of the manifest (the official code uses SF-XL), with
  CosPlace's colour jitter and random resized crops (hue jitter left out);
* Adam, lr 1e-5 for the network and 1e-2 for the classifiers; conv1 .. layer3 frozen (their
  BatchNorm statistics still update, as the official code runs the whole model in train mode);
  gradient scaling and fp16 autocast on CUDA; no learning-rate schedule;
* selection by validation Recall@5 of SeqGeM nearest-neighbour search.

The result is a ``jist-r18`` checkpoint of this project (the 124 official keys): ``--encoder
jist-r18 --weights best.pt`` in ``build-map``, ``evaluate``, ``export-onnx`` and the node.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vpr_seq_ros.errors import ConfigError, SourceError
from vpr_seq_ros.matching.index import FlatL2Index, search_matches
from vpr_seq_ros.matching.seqgem import seqgem, sequence_descriptors
from vpr_seq_ros.models.checkpoints import load_jist
from vpr_seq_ros.models.jist import JistNet, new_jist_net
from vpr_seq_ros.training.common import (BEST_NAME, EpochSummary, TrainCallbacks, close_epoch,
                                         epoch_rng, finish_run, recall_at, start_run,
                                         update_best)
from vpr_seq_ros.training.config import JistInitConfig, JistTrainConfig
from vpr_seq_ros.training.data import (Side, Split, full_windows, image_loader, load_splits,
                                       neighbours, warn_place_overlap)
from vpr_seq_ros.training.groups import PlaceGroup, place_groups
from vpr_seq_ros.training.losses import CosFace, seqgem_triplet_loss
from vpr_seq_ros.training.manifest import GroundTruthSpec

log = logging.getLogger(__name__)

KIND = 'jist-r18'
WINDOW = 'trailing'  # SeqGeM ignores frame order; maps are built with trailing windows
_STAGES = {'conv1': 0, 'layer1': 4, 'layer2': 5, 'layer3': 6, 'layer4': 7, 'head': 8}
_JITTER = 0.7
_CROP_SCALE = (0.5, 1.0)
_CROP_RATIO = (3 / 4, 4 / 3)


# --------------------------------------------------------------------------- model


def initial_network(init: JistInitConfig, seed: int) -> JistNet:
    """The network training starts from: a checkpoint, or seeded random weights on request.

    Raises:
        ConfigError: neither weights nor an explicit ``random_init``.
        ModelError: unreadable or unfitting weights.
    """
    if init.weights is not None:
        return load_jist(init.weights).net
    if not init.random_init:
        raise ConfigError('init.weights is not set: give a checkpoint, or set '
                          'init.random_init: true to train from random weights on purpose')
    log.warning('JIST training starts from seeded RANDOM weights (seed %d)', seed)
    return new_jist_net(seed=seed)


def freeze_before(net: JistNet, first_trainable: str) -> list[torch.nn.Parameter]:
    """Freeze the trunk stages before ``first_trainable``; returns the trainable parameters.

    ``head`` freezes the whole trunk (the GeM, Linear and SeqGeM exponents still train).
    """
    first = _STAGES[first_trainable]
    for index, stage in enumerate(net.model.backbone):
        for param in stage.parameters():
            param.requires_grad_(index >= first)
    trainable = [p for p in net.parameters() if p.requires_grad]
    total = sum(p.numel() for p in net.parameters())
    log.info('JIST: %d of %d parameters train (from %s on)',
             sum(p.numel() for p in trainable), total, first_trainable)
    return trainable


def _to_images(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` uint8 on the device (channels-last view)."""
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(device)


def _autocast(device: torch.device, amp: bool) -> Any:
    if device.type == 'cuda' and amp:
        return torch.autocast('cuda', dtype=torch.float16)
    return contextlib.nullcontext()


def encode_frames(net: JistNet, images: np.ndarray, device: torch.device, batch_size: int,
                  amp: bool = False) -> np.ndarray:
    """Frame descriptors without gradients, eval mode: ``(n, H, W, 3)`` uint8 -> ``(n, 512)``."""
    was_training = net.training
    net.eval()
    out = np.empty((len(images), net.dim), dtype=np.float32)
    with torch.no_grad(), _autocast(device, amp):
        for lo in range(0, len(images), batch_size):
            out[lo:lo + batch_size] = net(_to_images(images[lo:lo + batch_size], device)) \
                .float().cpu().numpy()
    net.train(was_training)
    return out


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CosPlace-style augmentation: brightness, contrast and saturation jitter (factors in
    [0.3, 1.7]), then a random resized crop (area 0.5 .. 1, aspect 3/4 .. 4/3) back to the size.

    Args:
        images: ``(B, 3, H, W)`` uint8.
        gen: CPU generator of every random draw.

    Returns:
        ``(B, 3, H, W)`` float in [0, 1].
    """
    b, _, h, w = images.shape
    x = images.float() / 255.0
    factors = (1 - _JITTER + 2 * _JITTER * torch.rand(3, b, 1, 1, 1, generator=gen)).to(x.device)
    x = (x * factors[0]).clamp(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    x = ((x - grey.mean(dim=(2, 3), keepdim=True)) * factors[1]
         + grey.mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    x = ((x - grey) * factors[2] + grey).clamp(0, 1)
    draws = torch.rand(b, 4, generator=gen).numpy()
    out = torch.empty_like(x)
    for i in range(b):
        area = h * w * (_CROP_SCALE[0] + (_CROP_SCALE[1] - _CROP_SCALE[0]) * draws[i, 0])
        log_ratio = np.log(_CROP_RATIO[0]) + (np.log(_CROP_RATIO[1]) -
                                              np.log(_CROP_RATIO[0])) * draws[i, 1]
        ratio = float(np.exp(log_ratio))
        cw = int(min(w, max(1, round(np.sqrt(area * ratio)))))
        ch = int(min(h, max(1, round(np.sqrt(area / ratio)))))
        top = int(draws[i, 2] * (h - ch + 1)) if h > ch else 0
        left = int(draws[i, 3] * (w - cw + 1)) if w > cw else 0
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode='bilinear', align_corners=False)[0]
    return out


# --------------------------------------------------------------------------- sequence data


@dataclass(frozen=True, eq=False)
class _SeqTriplets:
    """Cached triplets of one sub-epoch: ``(T,)`` queries, positives, ``(T, K)`` negatives."""

    queries: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


class _SequenceSet:
    """Training queries, positive candidates, negative pools and window frames."""

    def __init__(self, split: Split, gt: GroundTruthSpec, length: int) -> None:
        self.ref, self.query, self.length = split.ref, split.query, length
        self.ref_starts, self.ref_valid = full_windows(self.ref.segments, length, WINDOW)
        self.query_starts, query_valid = full_windows(self.query.segments, length, WINDOW)
        positives = neighbours(self.ref.places, self.query.places, gt.positive_radius)
        self.positives = [p[self.ref_valid[p]] for p in positives]
        self.near = neighbours(self.ref.places, self.query.places, gt.negative_radius)
        has_positive = np.array([len(p) > 0 for p in self.positives], dtype=bool)
        self.queries = np.flatnonzero(query_valid & has_positive)
        self.ref_anchors = np.flatnonzero(self.ref_valid)
        if len(self.queries) == 0:
            raise SourceError(
                'no training query has a full sequence window and a positive reference within '
                f'ground_truth.positive_radius = {gt.positive_radius}; check the train ranges, '
                'the radii and sequence.length')

    def ref_rows(self, anchors: np.ndarray) -> np.ndarray:
        """``(...)`` reference anchors -> ``(..., L)`` frame rows."""
        return self.ref_starts[anchors][..., None] + np.arange(self.length)

    def query_rows(self, anchors: np.ndarray) -> np.ndarray:
        """``(...)`` query anchors -> ``(..., L)`` frame rows."""
        return self.query_starts[anchors][..., None] + np.arange(self.length)


# --------------------------------------------------------------------------- trainer


class _Trainer:
    """One JIST training run."""

    def __init__(self, cfg: JistTrainConfig, train: Split, gt: GroundTruthSpec, by: str,
                 device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.amp = cfg.amp and device.type == 'cuda'
        self.seq = _SequenceSet(train, gt, cfg.sequence.length)
        self.net = initial_network(cfg.init, cfg.seed).to(device)
        self.optimizer = torch.optim.Adam(freeze_before(self.net, cfg.first_trainable),
                                          lr=cfg.lr)
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp)
        self.pool: tuple[Side, Side] = (train.ref, train.query)
        self.groups: list[PlaceGroup] = []
        self.classifiers: list[CosFace] = []
        self.classifier_optimizers: list[torch.optim.Optimizer] = []
        if cfg.image.enabled:
            places = np.concatenate([train.ref.places, train.query.places])
            yaw = np.concatenate([train.ref.yaw, train.query.yaw])
            self.groups = place_groups(places, yaw, by, cfg.image)
            if not self.groups:
                log.warning('image branch: no group has two classes with at least %d images; '
                            'training the sequence branch alone (lower '
                            'image.min_images_per_class or image.cell_size)',
                            cfg.image.min_images_per_class)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                for group in self.groups:
                    head = CosFace(self.net.dim, group.num_classes, cfg.image.scale,
                                   cfg.image.margin).to(device)
                    self.classifiers.append(head)
                    self.classifier_optimizers.append(
                        torch.optim.Adam(head.parameters(), lr=cfg.image.lr))

    # ------------------------------------------------------------------ caching and mining
    def _window_descriptors(self, side: Side, rows: np.ndarray, p: float) -> np.ndarray:
        """SeqGeM descriptors ``(..., D)`` of windows given as ``(..., L)`` frame rows."""
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        frames = encode_frames(self.net, side.data[unique], self.device,
                               self.cfg.eval_batch_size, self.amp)
        return seqgem(frames[inverse.reshape(rows.shape)], p)

    def cache(self, rng: np.random.Generator) -> _SeqTriplets:
        """Encode a random sample of queries and database sequences; mine their triplets."""
        seq, cfg = self.seq, self.cfg.sequence
        queries = np.sort(rng.choice(seq.queries, min(cfg.cached_queries, len(seq.queries)),
                                     replace=False))
        pool = np.sort(rng.choice(seq.ref_anchors, min(cfg.cached_negatives,
                                                       len(seq.ref_anchors)), replace=False))
        p = float(self.net.seq_gem.p.detach().cpu())
        candidates = np.unique(np.concatenate([pool] + [seq.positives[j] for j in queries]))
        q_desc = self._window_descriptors(seq.query, seq.query_rows(queries), p)
        r_desc = self._window_descriptors(seq.ref, seq.ref_rows(candidates), p)
        where = {int(a): i for i, a in enumerate(candidates)}
        pool_rows = np.array([where[int(a)] for a in pool])
        kept_q, kept_p, kept_n = [], [], []
        for i, j in enumerate(queries):
            pos = seq.positives[j]
            d_pos = np.linalg.norm(r_desc[[where[int(a)] for a in pos]] - q_desc[i], axis=1)
            allowed = ~np.isin(pool, seq.near[j])
            if allowed.sum() < cfg.num_negatives:
                continue
            d_neg = np.linalg.norm(r_desc[pool_rows[allowed]] - q_desc[i], axis=1)
            order = np.argsort(d_neg, kind='stable')[:cfg.num_negatives]
            kept_q.append(j)
            kept_p.append(pos[int(np.argmin(d_pos))])
            kept_n.append(pool[allowed][order])
        if not kept_q:
            raise SourceError('no training query has enough negatives beyond '
                              'ground_truth.negative_radius among the cached database '
                              'sequences; lower sequence.num_negatives or add training frames')
        return _SeqTriplets(np.array(kept_q), np.array(kept_p), np.stack(kept_n))

    # ------------------------------------------------------------------ one step
    def step(self, triplets: _SeqTriplets, batch: np.ndarray, group: int,
             rng: np.random.Generator, gen: torch.Generator) -> tuple[float, float]:
        """One optimiser step on ``batch`` (rows of ``triplets``) and an image batch."""
        cfg, seq = self.cfg, self.seq
        b, k, length = len(batch), cfg.sequence.num_negatives, cfg.sequence.length
        q_rows = seq.query_rows(triplets.queries[batch])                       # (B, L)
        r_rows = seq.ref_rows(np.concatenate([triplets.positives[batch][:, None],
                                              triplets.negatives[batch]], axis=1))  # (B, 1+K, L)
        images = np.concatenate([seq.query.data[q_rows.ravel()],
                                 seq.ref.data[r_rows.ravel()]])
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        for opt in self.classifier_optimizers:
            opt.zero_grad(set_to_none=True)
        with _autocast(self.device, self.amp):
            frames = self.net(_to_images(images, self.device)).float()
            q = self.net.aggregate(frames[:b * length].view(b, length, -1))
            r = self.net.aggregate(frames[b * length:].view(b * (1 + k), length, -1))
            r = r.view(b, 1 + k, -1)
            seq_loss = seqgem_triplet_loss(q, r[:, 0], r[:, 1:], cfg.sequence.margin)
            loss = cfg.sequence.weight * seq_loss
            img_loss = torch.zeros(())
            if self.groups:
                rows, labels = self.groups[group].sample(rng, cfg.image.batch_size)
                pics = self._pool_images(rows)
                x = augment(pics, gen) if cfg.image.augment else pics
                logits = self.classifiers[group](self.net(x).float(),
                                                 torch.from_numpy(labels).to(self.device))
                img_loss = F.cross_entropy(logits, torch.from_numpy(labels).to(self.device))
                loss = loss + cfg.image.weight * img_loss
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        if self.groups:
            self.scaler.step(self.classifier_optimizers[group])
        self.scaler.update()
        return float(seq_loss.detach()), float(img_loss.detach())

    def _pool_images(self, rows: np.ndarray) -> torch.Tensor:
        """Images of the image pool (reference rows first, then query rows)."""
        n_ref = len(self.pool[0])
        batch = np.stack([self.pool[0].data[r] if r < n_ref else self.pool[1].data[r - n_ref]
                          for r in rows])
        return _to_images(batch, self.device)

    # ------------------------------------------------------------------ one epoch
    def epoch(self, epoch: int, callbacks: TrainCallbacks) -> tuple[dict[str, float], int]:
        cfg = self.cfg.sequence
        group = epoch % len(self.groups) if self.groups else 0
        per_sub = max(1, min(cfg.cached_queries, len(self.seq.queries)) // cfg.batch_size)
        callbacks.epoch_start(epoch + 1, cfg.sub_epochs * per_sub, 'step')
        seq_losses: list[float] = []
        img_losses: list[float] = []
        for sub in range(cfg.sub_epochs):
            rng = epoch_rng(self.cfg.seed, epoch, sub)
            gen = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
            triplets = self.cache(rng)
            order = rng.permutation(len(triplets.queries))
            for i in range(per_sub):
                batch = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                if len(batch) == 0:
                    break
                s_loss, i_loss = self.step(triplets, batch, group, rng, gen)
                seq_losses.append(s_loss)
                img_losses.append(i_loss)
                callbacks.progress(1)
        losses = {'seq_loss': float(np.mean(seq_losses)) if seq_losses else 0.0}
        if self.groups:
            losses['img_loss'] = float(np.mean(img_losses))
        return losses, len(seq_losses)

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Any]:
        return {'model': self.net.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'classifiers': [c.state_dict() for c in self.classifiers],
                'classifier_optimizers': [o.state_dict() for o in self.classifier_optimizers],
                'scaler': self.scaler.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state['model'])
        self.optimizer.load_state_dict(state['optimizer'])
        if len(state['classifiers']) != len(self.classifiers):
            raise ConfigError('the training data gives other place groups than the resumed '
                              'run had; resume with the same manifest and traverses')
        for head, sd in zip(self.classifiers, state['classifiers']):
            head.load_state_dict(sd)
        for opt, sd in zip(self.classifier_optimizers, state['classifier_optimizers']):
            opt.load_state_dict(sd)
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])


def _evaluate(net: JistNet, split: Split, cfg: JistTrainConfig, radius: float,
              device: torch.device) -> dict[int, float]:
    """Validation Recall@K: SeqGeM of trailing windows, nearest neighbour under L2."""
    p = float(net.seq_gem.p.detach().cpu())
    length = cfg.sequence.length
    amp = cfg.amp and device.type == 'cuda'
    ref = encode_frames(net, split.ref.data, device, cfg.eval_batch_size, amp)
    query = encode_frames(net, split.query.data, device, cfg.eval_batch_size, amp)
    ref_seq, ref_valid = sequence_descriptors(ref, length, p, split.ref.segments, WINDOW)
    q_seq, q_valid = sequence_descriptors(query, length, p, split.query.segments, WINDOW)
    if not ref_valid.any():
        return {k: 0.0 for k in cfg.validation.recall_at}
    matches = search_matches(FlatL2Index(ref_seq, ref_valid), q_seq, q_valid,
                             max(cfg.validation.recall_at))
    return recall_at(matches, split.ref.places, split.query.places, ref_valid, radius,
                     tuple(cfg.validation.recall_at))


def train_jist(cfg: JistTrainConfig, resume: str | Path | None = None,
               callbacks: TrainCallbacks | None = None, command_line: str | None = None) -> Path:
    """Train JIST on the traverses of a manifest.

    Args:
        cfg: the training configuration.
        resume: a run folder or its ``train_state.pt`` (see :func:`train_seqmatchnet`).
        callbacks: progress and per-epoch hooks for entry points.
        command_line: recorded in ``command.txt`` (default: this process's ``sys.argv``).

    Returns:
        The selected checkpoint (``<output_dir>/best.pt``, kind ``jist-r18``).

    Raises:
        ConfigError: a bad manifest or configuration, no starting weights, or a resume with
            another configuration.
        SourceError: unreadable traverses, no usable training query.
        ModelError: unreadable weights or training state.
    """
    callbacks = callbacks or TrainCallbacks()
    started = start_run(cfg, KIND, resume, command_line)
    manifest, config, state, run, device = (started.manifest, started.config, started.state,
                                            started.run, started.device)
    splits = load_splits(manifest, ('train', 'val'),
                         image_loader(cfg.input_height, cfg.input_width, cfg.data.cache_dir))
    if 'train' not in splits:
        raise ConfigError('the manifest has no train range on both a reference and a query '
                          'traverse')
    warn_place_overlap(splits, manifest.ground_truth)
    val = splits.get('val')
    if val is None:
        log.warning('no validation split: best.pt is the model of the last epoch')
    trainer = _Trainer(cfg, splits['train'], manifest.ground_truth, manifest.ground_truth.by,
                       device)
    start, best, history = 0, None, []
    if state is not None:
        trainer.load(state)
        start, best, history = int(state['epoch']), state['best'], list(state['history'])
        previous = Path(state['path']).parent / BEST_NAME
        if previous.is_file() and previous.resolve() != run.best.resolve():
            shutil.copyfile(previous, run.best)
    meta = {'trained_with': 'vpr_seq_ros.training.jist', 'input_height': cfg.input_height,
            'input_width': cfg.input_width, 'sequence_length': cfg.sequence.length,
            'train_config': config}
    radius = manifest.ground_truth.eval_radius
    for epoch in range(start, cfg.epochs):
        started = time.perf_counter()
        losses, steps = trainer.epoch(epoch, callbacks)
        recalls = _evaluate(trainer.net, val, cfg, radius, device) if val is not None else {}
        is_best, best = update_best(best, recalls, cfg.validation.select_recall_at,
                                    val is not None, epoch + 1)
        summary = EpochSummary(epoch + 1, cfg.epochs, losses, steps, {}, recalls, cfg.lr,
                               time.perf_counter() - started, is_best)
        close_epoch(run, KIND, trainer.net, trainer.state_tensors(), config, meta, summary,
                    best, history, callbacks)
    return finish_run(run, KIND, trainer.net, meta)


__all__ = ['augment', 'encode_frames', 'freeze_before', 'initial_network', 'train_jist']
