"""The speed machinery behind ``MAML(fast=True)`` and ``Reptile(fast=True)``; private: the
algorithms in :mod:`mlbook.meta` read without it. (``ProtoNet`` does not use it: its encoder
keeps running statistics in batch norm, which the interpreter does not update.)

* :mod:`~mlbook.meta._fast.interpreter`: a module's forward interpreted op by op (thread-safe)
  in a CPU-friendly layout;
* :mod:`~mlbook.meta._fast.bn_pool`: batch norm + max-pool (+ a first convolution) as one op;
* :mod:`~mlbook.meta._fast.tasks`: tasks split over Python threads, per-task meta-gradients,
  and ``torch.func.vmap`` over tasks for small nets without batch norm.

Every piece computes the same function as the readable path; the tests compare them to
1e-10 in float64 (``tests/test_meta_maml.py``, ``tests/test_meta_fast_bn_pool.py``).
Speed: ``benchmarks/results/maml_throughput.md``.
"""
