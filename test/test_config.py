"""The configuration schema: layering, presets, validation, unknown keys."""

from __future__ import annotations

import dataclasses

import pytest

from vpr_seq_ros.config import (Config, available_presets, config_from_dict, flatten,
                                load_config, replace, to_dict, unflatten)
from vpr_seq_ros.errors import ConfigError


def test_defaults_round_trip_through_dict_and_flat_form():
    cfg = Config()
    assert config_from_dict(to_dict(cfg)) == cfg
    flat = flatten(cfg)
    assert flat['matching.contrast.window'] == 10
    assert flat['sequence.length'] == 5
    assert config_from_dict(unflatten(flat)) == cfg


@pytest.mark.parametrize('data, message', [
    ({'matching': {'methd': 'seqmatch'}}, 'matching.methd'),
    ({'sequnce': {}}, 'sequnce'),
    ({'matching': {'contrast': {'size': 3}}}, 'matching.contrast.size'),
])
def test_unknown_keys_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


@pytest.mark.parametrize('data, message', [
    ({'matching': {'method': 'dtw'}}, 'matching.method'),
    ({'sequence': {'length': 0}}, 'sequence.length'),
    ({'sequence': {'length': 'five'}}, 'integer'),
    ({'matching': {'slopes': []}}, 'slope'),
    ({'encoder': {'patchnorm': {'width': 60}}}, 'multiples'),
    ({'evaluation': {'radius_m': -1}}, 'radius_m'),
    ({'sequence': {'window': 'centred'}, 'matching': {'slopes': [1.0, 1.2]}}, 'velocity'),
    ({'matching': 3}, 'mapping'),
    ({'map': {'dtype': 'int8'}}, 'map.dtype'),
])
def test_invalid_values_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_seqslam_preset():
    assert 'seqslam' in available_presets()
    cfg = load_config('seqslam')
    assert cfg.encoder.name == 'patchnorm'
    assert cfg.matching.distance == 'sad'
    assert cfg.matching.contrast.enabled
    assert cfg.matching.method == 'seqmatch'
    assert cfg.sequence.length == 10


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match='seqslam'):
        load_config('nope')


def test_layering_order(tmp_path):
    file = tmp_path / 'c.yaml'
    file.write_text('sequence: {length: 7}\nmatching: {top_k: 3}\n')
    cfg = load_config('seqslam', file, {'matching.top_k': 9, 'matching.method': None},
                      base={'sequence': {'length': 2}, 'map': {'dtype': 'float16'}})
    assert cfg.sequence.length == 7      # file beats preset beats base
    assert cfg.matching.top_k == 9       # flags beat file
    assert cfg.matching.method == 'seqmatch'  # None overrides are ignored
    assert cfg.map.dtype == 'float16'    # base kept where nothing overrides it


def test_bad_yaml_file(tmp_path):
    file = tmp_path / 'c.yaml'
    file.write_text('sequence: [unclosed\n')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_config(file=file)
    with pytest.raises(ConfigError, match='cannot read'):
        load_config(file=tmp_path / 'missing.yaml')


def test_replace_and_coercion():
    cfg = replace(Config(), **{'matching.slopes': [1, 2], 'sequence.length': '4',
                               'matching.contrast.enabled': 'true'})
    assert cfg.matching.slopes == (1.0, 2.0)
    assert cfg.sequence.length == 4
    assert cfg.matching.contrast.enabled is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sequence.length = 3  # frozen


def test_model_presets():
    jist = load_config('jist')
    assert jist.encoder.name == 'jist-r18' and jist.matching.method == 'seqgem'
    assert (jist.encoder.input_height, jist.encoder.input_width) == (480, 640)
    smn = load_config('seqmatchnet')
    assert smn.encoder.transform.name == 'seqmatchnet' and smn.matching.method == 'seqmatch'
    assert smn.matching.distance == 'euclidean' and smn.sequence.length == 5
