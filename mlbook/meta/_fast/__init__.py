"""The speed machinery behind ``MAML(fast=True)``, ``Reptile(fast=True)`` and
``ProtoNet(fast=True)``; private: the algorithms in :mod:`mlbook.meta` read without it.

* :mod:`~mlbook.meta._fast.interpreter`: a module's forward interpreted op by op (thread-safe)
  in a CPU-friendly layout;
* :mod:`~mlbook.meta._fast.bn_pool`: batch norm + max-pool (+ a first convolution) as one op;
* :mod:`~mlbook.meta._fast.tasks`: tasks split over Python threads, per-task meta-gradients,
  and ``torch.func.vmap`` over tasks for small nets without batch norm;
* :mod:`~mlbook.meta._fast.encoder`: ProtoNet's encoder through the interpreter, with batch
  norm's running averages updated as the module's forward updates them.

Every piece computes the same function as the readable path; the tests compare them to
1e-10 in float64 (``tests/test_meta_maml.py``, ``tests/test_meta_fast_bn_pool.py``,
``tests/test_meta_protonets.py``).
Speed: ``benchmarks/results/maml_throughput.md``.
"""
