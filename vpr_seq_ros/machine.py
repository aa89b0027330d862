"""What a speed or memory figure was measured on: the CPU, its SIMD flags, the load, and the
process's resident memory. For benchmarks and reports; Linux ``/proc`` where available."""

from __future__ import annotations

import os
from pathlib import Path

from vpr_seq_ros.encoders.precision import cpu_flags

SIMD_PREFIXES = ('avx2', 'fma', 'sse4', 'avx512', 'amx')
"""The flags that matter for the figures (numpy/BLAS, onnxruntime, OpenCV, oneDNN)."""


def simd_flags(cpuinfo: str | Path = '/proc/cpuinfo') -> str:
    """The SIMD flags of this CPU that matter for the figures, space separated ('-' if none
    or unreadable)."""
    return ' '.join(sorted(f for f in cpu_flags(cpuinfo) if f.startswith(SIMD_PREFIXES))) or '-'


def cpu_model(cpuinfo: str | Path = '/proc/cpuinfo') -> str:
    """The processor's model name ('unknown' if unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return 'unknown'
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
            return value.strip()
    return 'unknown'


def cpu_line() -> str:
    """One line for a benchmark's output: model, cores, SIMD flags, load average."""
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    return (f'CPU: {cpu_model()}, {os.cpu_count()} cores, flags {simd_flags()}; load average '
            f'{load:.1f} (other work on the machine slows the figures)')


def proc_status(keys: tuple[str, ...] = ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile')
                ) -> dict[str, int]:
    """Memory figures of this process from ``/proc/self/status``, in bytes (empty where
    ``/proc`` is missing). ``VmRSS``: resident now; ``VmHWM``: peak resident; ``RssAnon`` /
    ``RssFile``: anonymous and file-backed parts of the resident set."""
    out: dict[str, int] = {}
    try:
        with open('/proc/self/status') as handle:
            for line in handle:
                key, _, value = line.partition(':')
                if key in keys:
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def rss_mib() -> float:
    """Resident set size of this process in MiB (NaN where ``/proc`` is missing)."""
    return proc_status(('VmRSS',)).get('VmRSS', float('nan')) / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (NaN where ``/proc`` is missing)."""
    return proc_status(('VmHWM',)).get('VmHWM', float('nan')) / 2**20


__all__ = ['cpu_line', 'cpu_model', 'peak_rss_mib', 'proc_status', 'rss_mib', 'simd_flags']
