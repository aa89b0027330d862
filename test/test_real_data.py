"""The seqslam preset on real data (skipped when ../shared/data is absent)."""

from __future__ import annotations

from vpr_seq_ros.config import load_config, replace
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.pipeline import build_map, encode_run, evaluate_encoded
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.sources import open_source


def test_nordland_summer_to_winter_seqslam(shared_data, tmp_path):
    """Reference SeqSLAM figures (R@1, +-1 frame): 0.01 single, 0.48 L=5, 0.73 L=10."""
    root = shared_data / 'nordland_64x32'
    cfg = load_config('seqslam', overrides={'evaluation.tolerance_frames': 1})
    refmap = load_map(build_map(root / 'summer', cfg, tmp_path / 'nordland.npz'))
    query = encode_run(open_source(root / 'winter'), build_encoder(cfg.encoder))
    recall = {}
    for length in (5, 10):
        run_cfg = replace(cfg, **{'sequence.length': length})
        recall[length] = evaluate_encoded(refmap, query, run_cfg,
                                          keep_matrix=False).metrics.recall_at[1]
    assert recall[5] >= 0.48
    assert recall[10] >= 0.73
