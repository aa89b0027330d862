"""``vpr-seq export-onnx``: export a learnt frame encoder to ONNX with its model card."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import add_config_options, config_from_args

_EXPORTABLE = ('jist-r18',)  # kept in step with vpr_seq_ros.models.onnx_export.EXPORTABLE


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export-onnx`` parser."""
    parser = subparsers.add_parser(
        'export-onnx', help='export a learnt frame encoder to ONNX (with its model card)',
        description='Export the frame encoder, including its input normalisation, to an ONNX '
        'graph (input: uint8 RGB NCHW 0..255, dynamic batch, fixed height and width; output: '
        'unit-norm descriptors), check it against torch (max abs difference <= 1e-4) and write '
        'the model card <output>.yaml next to it. Use the card as --weights with --runtime '
        'onnx.')
    add_config_options(parser)
    parser.add_argument('--encoder', choices=_EXPORTABLE, default='jist-r18',
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then print the card path and the parity figure."""
    from vpr_seq_ros.models.onnx_export import (PARITY_IMAGES, PARITY_TOLERANCE, export_onnx,
                                                read_model_card)

    height, width = args.input_size if args.input_size else (None, None)
    cfg = config_from_args(args, {'encoder.input_height': height, 'encoder.input_width': width})
    card_path = export_onnx(cfg.encoder, args.output, opset=args.opset)
    card = read_model_card(card_path)
    print(f'wrote {card.onnx_path} ({card.input_height}x{card.input_width}, opset {card.opset})')
    print(f'model card: {card_path}')
    print(f'parity with torch: max abs descriptor difference {card.parity_max_abs_diff:.2e} '
          f'over {PARITY_IMAGES} seeded images (tolerance {PARITY_TOLERANCE:.0e})')
    if card.random_init:
        print('WARNING: exported seeded RANDOM weights (tests and benchmarks only)')
    if card.untrained_head:
        print('WARNING: the head of this model is untrained (torchvision trunk)')
    return 0
