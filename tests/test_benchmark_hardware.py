"""The benchmarks' floor arithmetic: FLOP counts split by kind, and the rendered record."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def _import(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return __import__(name)


def test_flops_by_kind_counts_a_convolution_and_a_product_exactly(monkeypatch):
    hardware = _import(monkeypatch, "_hardware")
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    a, b = torch.randn(5, 6), torch.randn(6, 7)
    counts = hardware.flops_by_kind(lambda: (F.conv2d(x, w, padding=1), a @ b))
    assert counts == {"conv": 2 * 2 * 4 * 8 * 8 * 3 * 3 * 3, "matmul": 2 * 5 * 6 * 7}


def test_protonet_step_renders_the_fraction_of_the_floor(monkeypatch):
    bench = _import(monkeypatch, "protonet_step")
    record = {"command": "python benchmarks/protonet_step.py", "commit": "abc", "dirty": False,
              "cpu": "Some CPU", "cores": 2, "torch": "2.x", "threads": 1,
              "isa_flags": ["avx2"], "load_before": "0.1", "load_after": "0.2", "wall_s": 10.0,
              "timed_steps": 20, "conv_gflops": 100.0, "matmul_gflops": 50.0,
              "rows": [{"episode": "60-way 1-shot (ProtoNet)", "plain_s": 1.0, "fast_s": 0.4,
                        "gflop": 20.0, "floor_s": 0.2}]}
    text = bench.render(record)
    assert "| 60-way 1-shot (ProtoNet) | 1.000 | 0.400 | 2.50x | 20.0 | 0.200 | 50% |" in text
    assert "Some CPU" in text and "(clean)" in text and "avx2" in text
