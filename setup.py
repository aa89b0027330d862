"""vpr_seq_ros: an ament_python ROS 2 package that is also pip-installable.

All Python dependencies are listed here, once. Install torch first with the pin your platform
needs (``pip install torch==2.13.0`` takes a CPU build where one is cached); otherwise pip
picks the newest torch for your platform.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vpr_seq_ros'

INSTALL_REQUIRES = [
    'numpy>=1.23',
    'scipy>=1.9',
    'pillow>=9.0',
    'pyyaml>=6.0',
    'faiss-cpu>=1.7.3',
    'matplotlib>=3.5',
    'tqdm>=4.60',
    'opencv-python-headless>=4.5',
    'rosbags>=0.11,<0.12',
]

EXTRAS_REQUIRE = {
    # learnt encoders (JIST, SeqMatchNet transform), ONNX export and runtime
    'models': ['torch>=2.1', 'onnx>=1.14', 'onnxruntime>=1.16'],
    # pytest < 9: ROS 2 Jazzy's launch_testing pytest plugin fails to load under pytest 9
    'test': ['pytest>=7.0,<9', 'hypothesis>=6.0', 'ruff>=0.4'],
    # offline training (vpr-seq train): torch only; never imported by the node
    'train': ['torch>=2.1'],
}
EXTRAS_REQUIRE['all'] = sorted({r for reqs in EXTRAS_REQUIRE.values() for r in reqs})

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'benchmarks']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
        ('share/' + PACKAGE + '/config/presets', glob('config/presets/*.yaml')),
        ('share/' + PACKAGE + '/config/training', glob('config/training/*.yaml')),
        ('share/' + PACKAGE + '/models', glob('models/*.md')),
    ],
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    zip_safe=True,
    maintainer='vpr_seq_ros developers',
    maintainer_email='vpr-seq-ros@example.org',
    description='Sequential visual place recognition (JIST/SeqGeM, SeqMatchNet) for ROS 2',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'vpr-seq = vpr_seq_ros.cli:main',
            'vpr_node = vpr_seq_ros.ros.node:main',
        ],
    },
)
