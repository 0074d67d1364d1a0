"""What the machine can do: ISA flags, the measured throughput of the dominant convolution,
and FLOP counts, so that a benchmark reports the fraction of the hardware's floor it reaches
and not only a ratio to peers (which depends on the CPU: see benchmarks/results/).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

#: Flags of /proc/cpuinfo that decide which oneDNN kernels a CPU gets.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
             "amx_bf16")


def isa_flags() -> list[str]:
    """The vector-ISA flags of this CPU that matter for oneDNN (Linux; [] elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in ISA_FLAGS if f in flags]
    return []


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of ``fn()`` as ``torch.utils.flop_counter`` counts them
    (matmuls and convolutions, forward and backward, double backward included; a
    multiply-add counts as two)."""
    return sum(flops_by_kind(fn).values())


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn()`` (no autograd) after five untimed ones."""
    times = []
    with torch.no_grad():
        for i in range(5 + repeats):
            start = time.perf_counter()
            fn()
            if i >= 5:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def conv_gflops(batch: int = 75, channels: int = 64, size: int = 14, repeats: int = 30,
                threads: int | None = None) -> float:
    """Measured GFLOP/s of the forward 3x3 convolution that dominates Conv4 on Omniglot
    (``batch`` images, ``channels`` -> ``channels``, ``size`` x ``size``, float32): the
    median over ``repeats`` timed calls after five untimed ones."""
    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=g)
    w = torch.randn(channels, channels, 3, 3, generator=g)
    flops = count_flops(lambda: F.conv2d(x, w, padding=1))
    return flops / _median_seconds(lambda: F.conv2d(x, w, padding=1), repeats) / 1e9


def flops_by_kind(fn: Callable[[], object]) -> dict[str, int]:
    """FLOPs of ``fn()`` split into ``"conv"`` (convolutions, forward and backward) and
    ``"matmul"`` (everything else the counter knows: mm, bmm, addmm, attention), so that each
    part can be set against the rate the machine reaches on it."""
    with FlopCounterMode(display=False) as counter:
        fn()
    counts = {"conv": 0, "matmul": 0}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        counts["conv" if "convolution" in str(op) else "matmul"] += int(flops)
    return counts


def matmul_gflops(rows: int = 240, inner: int = 128, cols: int = 512, repeats: int = 50,
                  threads: int | None = None) -> float:
    """Measured GFLOP/s of a float32 ``[rows, inner] @ [inner, cols]`` product (the default
    is the feed-forward layer of the zoo's in-context learner on 8 tasks of 30 tokens): the
    median over ``repeats`` timed calls after five untimed ones."""
    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=g), torch.randn(inner, cols, generator=g)
    return 2 * rows * inner * cols / _median_seconds(lambda: a @ b, repeats) / 1e9
