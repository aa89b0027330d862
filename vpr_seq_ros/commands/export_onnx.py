"""``vpr-seq export-onnx``: export a learnt frame encoder to ONNX with its model card."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import add_config_options, config_from_args
from vpr_seq_ros.encoders.registry import encoder_names, get_encoder_plugin


def _exportable() -> list[str]:
    return [name for name in encoder_names() if get_encoder_plugin(name).exportable]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-onnx`` parser."""
    parser = subparsers.add_parser(
        'export-onnx', help='export a learnt frame encoder to ONNX (with its model card)',
        description='Export the frame encoder, including its input normalisation, to an ONNX '
        'graph (input: uint8 RGB NCHW 0..255, dynamic batch, fixed height and width; output: '
        'descriptors), check it against torch (max abs difference <= 1e-4) and write the model '
        'card <output>.yaml next to it. With --precision int8 also write <output>.int8.onnx, '
        'statically quantised on frames spread over --calibration-run (your own run) and kept '
        'only if its descriptors agree with fp32 (cosine >= 0.999 on every frame, same top-1 '
        'match among the frames). Use the card as --weights with --runtime onnx.')
    add_config_options(parser)
    exportable = _exportable()
    parser.add_argument('--encoder', choices=exportable, default=exportable[0],
                        help='the encoder to export (default: %(default)s)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--weights', metavar='PATH',
                         help='torch checkpoint to export (official JIST, CosPlace, torchvision '
                         "resnet18 or this project's; see models/README.md)")
    weights.add_argument('--random-init', action='store_true', default=None,
                         help='export seeded random weights (tests and benchmarks only; the '
                         'card says so)')
    parser.add_argument('-o', '--output', required=True, metavar='MODEL.onnx',
                        help='ONNX file to write; the card goes to the same name with .yaml')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='fixed input height and width in pixels (default: '
                        'encoder.input_height/input_width of the configuration, 480 640)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default: 17)')
    parser.add_argument('--precision', choices=('fp32', 'int8'), default='fp32',
                        help='fp32 graph only, or also a statically quantised int8 graph '
                        '(default: %(default)s)')
    parser.add_argument('--calibration-run', metavar='SOURCE',
                        help='image folder or bag of your own run: frames spread over it '
                        'calibrate the int8 graph and check it against fp32')
    parser.add_argument('--calibration-frames', type=int, metavar='N',
                        help='number of calibration frames (default 16)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then print the card path and the parity figures."""
    from vpr_seq_ros.models.onnx_export import (PARITY_IMAGES, PARITY_TOLERANCE, export_onnx,
                                                read_model_card)

    height, width = args.input_size if args.input_size else (None, None)
    cfg = config_from_args(args, {
        'encoder.name': args.encoder, 'encoder.input_height': height,
        'encoder.input_width': width, 'encoder.precision': args.precision,
        'encoder.calibration_run': args.calibration_run,
        'encoder.calibration_frames': args.calibration_frames})
    card_path = export_onnx(cfg.encoder, args.output, opset=args.opset)
    card = read_model_card(card_path)
    print(f'wrote {card.onnx_path} ({card.input_height}x{card.input_width}, opset {card.opset})')
    print(f'model card: {card_path}')
    print(f'parity with torch: max abs descriptor difference {card.parity_max_abs_diff:.2e} '
          f'over {PARITY_IMAGES} seeded images (tolerance {PARITY_TOLERANCE:.0e})')
    if card.int8_parity is not None:
        p = card.int8_parity
        print(f'int8 graph: {card.int8_onnx_path}; against fp32 on {p["calibration"]}: '
              f'min cosine {p["min_cosine"]:.5f} (>= 0.999), top-1 mismatches '
              f'{p["top1_mismatches"]} of {p["frames"]}')
    if card.random_init:
        print('WARNING: exported seeded RANDOM weights (tests and benchmarks only)')
    if card.untrained_head:
        print('WARNING: the head of this model is untrained (torchvision trunk)')
    return 0
