"""The demo pipeline: generated route -> map -> single-frame vs sequence matching."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vpr_seq_ros.config import Config, load_config, replace
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.evaluation import Metrics, plot_results, write_json
from vpr_seq_ros.pipeline import Evaluation, build_map, encode_run, evaluate_encoded
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.sources import open_source

DEMO_RUNS: tuple[tuple[str, dict], ...] = (
    ('single', {'matching.method': 'single'}),
    ('seqmatch L=5', {'matching.method': 'seqmatch', 'sequence.length': 5}),
    ('seqmatch L=10', {'matching.method': 'seqmatch', 'sequence.length': 10}),
    ('seqslam L=10', {'matching.method': 'seqmatch', 'sequence.length': 10,
                      'matching.distance': 'sad', 'matching.contrast.enabled': True}),
)
"""Label and configuration changes of every method the demo compares."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced."""

    table: str
    plot: Path
    report: Path
    metrics: dict[str, Metrics]


def format_table(rows: dict[str, Metrics]) -> str:
    """A markdown table of Recall@1/5, AP and counted queries per method."""
    lines = ['| method | R@1 | R@5 | AP | queries counted |', '|---|---|---|---|---|']
    for label, m in rows.items():
        lines.append(f'| {label} | {m.recall_at[1]:.3f} | {m.recall_at[5]:.3f} | '
                     f'{m.average_precision:.3f} | {m.num_evaluated} / {m.num_queries} |')
    return '\n'.join(lines)


def run_demo(out: Path, seed: int = 0, length_m: float = 400.0, radius_m: float = 3.0,
             log: Callable[[str], object] = lambda s: None) -> DemoResult:
    """Generate the route, build the map, evaluate every method of :data:`DEMO_RUNS`."""
    from vpr_seq_ros.demo_data import RouteSpec, generate_route

    out.mkdir(parents=True, exist_ok=True)
    log(f'generating a {length_m:.0f} m route seen under two conditions (seed {seed}) ...')
    ref_dir, query_dir = generate_route(out / 'route', RouteSpec(length_m=length_m, seed=seed))
    base: Config = load_config(overrides={
        'encoder.name': 'patchnorm', 'evaluation.gt': 'radius', 'evaluation.radius_m': radius_m,
        'evaluation.recall_at': [1, 5, 10]})
    log(f'building the map from {ref_dir} ...')
    map_path = build_map(ref_dir, base, out / 'map.npz')
    refmap = load_map(map_path)
    log(f'encoding the query run {query_dir} ...')
    query = encode_run(open_source(query_dir, base.source), build_encoder(base.encoder))
    results: dict[str, Evaluation] = {}
    for label, changes in DEMO_RUNS:
        cfg = replace(base, **changes)
        results[label] = evaluate_encoded(refmap, query, cfg, keep_matrix=True,
                                          context={'label': label})
    metrics = {label: r.metrics for label, r in results.items()}
    best = max(results, key=lambda k: results[k].metrics.recall_at[1])
    shown = results[best]
    plot = plot_results(out / 'demo.png', shown.metrics, shown.output.matches,
                        shown.output.matrix, shown.positives,
                        f'demo route: matches of {best} (right); PR curves of all methods (left)',
                        curves=metrics)
    report = write_json({'map': str(map_path), 'query': str(query_dir),
                         'runs': {label: r.report for label, r in results.items()}},
                        out / 'demo_report.json')
    return DemoResult(format_table(metrics), plot, report, metrics)
