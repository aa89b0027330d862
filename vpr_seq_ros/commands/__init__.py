"""Sub-commands of the ``vpr-seq`` CLI.

Each module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a
``run(args) -> int`` function. Modules import heavy dependencies inside ``run`` so that
``vpr-seq --help`` stays fast.
"""

COMMAND_MODULES = (
    'build_map',
    'evaluate',
    'describe',
    'export_onnx',
    'demo',
    'images_to_bag',
    'inspect',
    'replay',
    'train',
)
