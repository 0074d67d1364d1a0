"""The coding exercises: every checker accepts the book's solution and rejects wrong code with
a message in words; every chapter has at least two; the student edition holds no solution.

The solutions are read from the chapters themselves (their ``solution`` cells), so these tests
check what the book shows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from mlbook.exercises import EXERCISES, ExerciseFailed
from mlbook.exercises.__main__ import (
    CHECK,
    SOLUTION,
    STUB,
    main,
    student_edition,
    tags,
    toc_notebooks,
)

#: Chapters whose coding exercises are still to be written (none now).
NOT_YET: set[str] = set()
#: Appendix notebooks (how the zoo was trained, how fast a step is): reference, not chapters.
APPENDICES = {"under_the_hood"}

#: Solutions tested outside the chapters (all chapters now carry their own).
IN_CONTEXT_SOLUTIONS: dict[str, str] = {}

#: checker -> [(wrong implementation, a fragment of the message it must get)], at least two.
WRONG = {
    "check_episode_sampler": [
        ('''
def f(images, n_way, k_shot, q_queries, generator):
    classes = torch.randperm(images.shape[0], generator=generator)[:n_way].sort().values
    sx, sy, qx, qy = [], [], [], []
    for label, c in enumerate(classes.tolist()):
        drawn = torch.randperm(images.shape[1], generator=generator)[:k_shot + q_queries]
        sx.append(images[c, drawn[:k_shot]]); qx.append(images[c, drawn[k_shot:]])
        sy += [label] * k_shot; qy += [label] * q_queries
    return torch.cat(sx), torch.tensor(sy), torch.cat(qx), torch.tensor(qy)
''', "random order"),
        ('''
def f(images, n_way, k_shot, q_queries, generator):
    classes = torch.randperm(images.shape[0], generator=generator)[:n_way]
    sx, sy, qx, qy = [], [], [], []
    for label, c in enumerate(classes.tolist()):
        s = torch.randint(images.shape[1], (k_shot,), generator=generator)
        q = torch.randint(images.shape[1], (q_queries,), generator=generator)
        sx.append(images[c, s]); qx.append(images[c, q])
        sy += [label] * k_shot; qy += [label] * q_queries
    return torch.cat(sx), torch.tensor(sy), torch.cat(qx), torch.tensor(qy)
''', "appears twice"),
        ('''
def f(images, n_way, k_shot, q_queries, generator):
    sx = images[:n_way, :k_shot].flatten(0, 1)
    qx = images[:n_way, k_shot:k_shot + q_queries].flatten(0, 1)
    return (sx, torch.arange(n_way).repeat_interleave(k_shot), qx,
            torch.arange(n_way).repeat_interleave(q_queries))
''', "same classes"),
    ],
    "check_confidence_interval": [
        ("def f(v):\n    return v.mean(), 1.96 * v.std() / np.sqrt(len(v))", "ddof=0"),
        ("def f(v):\n    return v.mean(), 1.96 * v.std(ddof=1)", "sqrt(n)"),
        ("def f(v):\n    return v.mean(), v.std(ddof=1) / np.sqrt(len(v))", "1.96"),
    ],
    "check_prototype_head": [
        ('''
def f(z, y, n):
    mu = torch.stack([z[y == c].mean(0) for c in range(n)])
    return mu, -mu.pow(2).sum(1)
''', "should be 2 mu_c"),
        ('''
def f(z, y, n):
    mu = torch.stack([z[y == c].mean(0) for c in range(n)])
    return 2 * mu, mu.pow(2).sum(1)
''', "+||mu_c||^2"),
    ],
    "check_l2sp_penalty": [
        ('''
def f(model, ref, new, alpha, beta):
    total = 0.0
    for n, p in model.named_parameters():
        if any(n.startswith(m + ".") for m in new):
            total = total + beta * p.pow(2).sum()
        else:
            total = total + alpha * (p - ref[n]).pow(2).sum()
    return total
''', "factor 1/2"),
        ('''
def f(model, ref, new, alpha, beta):
    total = 0.0
    for n, p in model.named_parameters():
        w = alpha if not any(n.startswith(m + ".") for m in new) else beta
        total = total + 0.5 * w * (p - ref[n]).pow(2).sum()
    return total
''', "pulled towards its initial values"),
        ('''
def f(model, ref, new, alpha, beta):
    return 0.5 * alpha * sum((p - ref[n]).pow(2).sum().item()
                             for n, p in model.named_parameters())
''', "penalty"),
    ],
    "check_linear_probe": [
        ('''
from sklearn.linear_model import LogisticRegression
def f(xtr, ytr, xte, yte):
    unit = lambda x: (x / x.norm(dim=1, keepdim=True)).double().numpy()
    return LogisticRegression(C=10, max_iter=1000).fit(unit(xte), yte).score(unit(xte), yte)
''', "fitted on the test set"),
        ('''
from sklearn.linear_model import LogisticRegression
def f(xtr, ytr, xte, yte):
    return LogisticRegression(C=10, max_iter=1000).fit(xtr.numpy(), ytr).score(xte.numpy(), yte)
''', "unnormalised"),
        ('''
from sklearn.linear_model import LogisticRegression
def f(xtr, ytr, xte, yte):
    unit = lambda x: (x / x.norm(dim=1, keepdim=True)).double().numpy()
    return 100 * LogisticRegression(C=10, max_iter=1000).fit(unit(xtr), ytr).score(unit(xte), yte)
''', "in percent"),
    ],
    "check_param_groups": [
        ('''
def f(model, base_lr, decay):
    blocks = [list(c.parameters()) for _, c in model.named_children()]
    blocks = [b for b in blocks if b]
    return [{"params": b, "lr": base_lr * decay ** (len(blocks) - 1 - i)}
            for i, b in enumerate(blocks)]
''', "frozen parameters"),
        ('''
def f(model, base_lr, decay):
    blocks = [[p for p in c.parameters() if p.requires_grad] for _, c in model.named_children()]
    blocks = [b for b in blocks if b]
    return [{"params": b, "lr": base_lr * decay ** i} for i, b in enumerate(blocks)]
''', "reversed"),
    ],
    "check_gradient_reversal": [
        ("def f(x, scale):\n    return -x", "forward pass negates"),
        ('''
class R(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()
    @staticmethod
    def backward(ctx, g):
        return -g
def f(x, scale):
    return R.apply(x)
''', "negated but not scaled"),
        ("def f(x, scale):\n    return x.detach()", "no gradient reaches x"),
        ("def f(x, scale):\n    return x * 1.0", "passes through unchanged"),
    ],
    "check_pcgrad": [
        ('''
def f(g1, g2):
    d = g1.dot(g2)
    return (g1 - d / g2.dot(g2) * g2 if d < 0 else g1) + g2
''', "only g1 was projected"),
        ('''
def f(g1, g2):
    d = g1.dot(g2)
    return (g1 - d / g2.dot(g2) * g2) + (g2 - d / g1.dot(g1) * g1)
''', "although they agree"),
        ("def f(g1, g2):\n    return g1 + g2", "the update"),
    ],
    "check_inner_update": [
        ('''
def f(fmodel, params, sx, sy, loss_fn, lr, steps):
    phi = dict(params)
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(fmodel(phi, sx), sy), list(phi.values()))
        phi = {n: p - lr * g for (n, p), g in zip(phi.items(), grads)}
    return phi
''', "misses the Hessian term"),
        ('''
def f(fmodel, params, sx, sy, loss_fn, lr, steps):
    grads = torch.autograd.grad(loss_fn(fmodel(params, sx), sy), list(params.values()),
                                create_graph=True)
    return {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
''', "one step from theta"),
        ('''
def f(fmodel, params, sx, sy, loss_fn, lr, steps):
    phi = dict(params)
    for _ in range(steps):
        grads = torch.autograd.grad(loss_fn(fmodel(phi, sx), sy), list(phi.values()),
                                    create_graph=True)
        phi = {n: p + lr * g for (n, p), g in zip(phi.items(), grads)}
    return phi
''', "uphill"),
    ],
    "check_quadratic_meta_gradient": [
        ('''
def f(theta, A, c, alpha, steps):
    m = torch.linalg.matrix_power(torch.eye(len(theta), dtype=A.dtype) - alpha * A, steps)
    return A @ m @ (theta - c)
''', "first-order"),
        ("def f(theta, A, c, alpha, steps):\n    return A @ (theta - c)", "without the inner"),
    ],
    "check_fomaml_gradient": [
        ('''
def f(fmodel, params, sx, sy, qx, qy, loss_fn, lr, steps):
    theta = {n: p.detach().requires_grad_() for n, p in params.items()}
    phi = dict(theta)
    for _ in range(steps):
        g = torch.autograd.grad(loss_fn(fmodel(phi, sx), sy), list(phi.values()),
                                create_graph=True)
        phi = {n: p - lr * gi for (n, p), gi in zip(phi.items(), g)}
    return dict(zip(theta, torch.autograd.grad(loss_fn(fmodel(phi, qx), qy),
                                               list(theta.values()))))
''', "second-order"),
        ('''
def f(fmodel, params, sx, sy, qx, qy, loss_fn, lr, steps):
    theta = {n: p.detach().requires_grad_() for n, p in params.items()}
    return dict(zip(theta, torch.autograd.grad(loss_fn(fmodel(theta, qx), qy),
                                               list(theta.values()))))
''', "before adaptation"),
    ],
    "check_reptile_step": [
        ('''
def f(fmodel, params, tasks, loss_fn, lr, steps, eps):
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in tasks:
        phi = {n: p.detach().requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            g = torch.autograd.grad(loss_fn(fmodel(phi, x), y), list(phi.values()))
            phi = {n: (p - lr * gi).detach().requires_grad_() for (n, p), gi in zip(phi.items(), g)}
        for n in total:
            total[n] += phi[n].detach() - params[n]
    return {n: p + eps * total[n] for n, p in params.items()}
''', "summed over tasks"),
        ('''
def f(fmodel, params, tasks, loss_fn, lr, steps, eps):
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for x, y in tasks:
        phi = {n: p.detach().requires_grad_() for n, p in params.items()}
        for _ in range(steps):
            g = torch.autograd.grad(loss_fn(fmodel(phi, x), y), list(phi.values()))
            phi = {n: (p - lr * gi).detach().requires_grad_() for (n, p), gi in zip(phi.items(), g)}
        for n in total:
            total[n] += phi[n].detach()
    return {n: total[n] / len(tasks) for n in params}
''', "scale the step by epsilon"),
    ],
    "check_prototypes": [
        ("def f(z, y, n):\n"
         "    return torch.zeros(n, z.shape[1], dtype=z.dtype).index_add_(0, y, z)",
         "sum of the class's support embeddings"),
        ("def f(z, y, n):\n    return z.view(n, -1, z.shape[1]).mean(1)", "sorted by class"),
    ],
    "check_protonet_loss": [
        ('''
def f(sz, sy, qz, qy, n):
    protos = torch.stack([sz[sy == c].mean(0) for c in range(n)])
    return F.cross_entropy(-torch.cdist(qz, protos), qy)
''', "not squared"),
        ('''
def f(sz, sy, qz, qy, n):
    protos = torch.stack([sz[sy == c].mean(0) for c in range(n)])
    return F.cross_entropy((qz[:, None] - protos[None]).pow(2).sum(-1), qy)
''', "NEAREST"),
        ('''
def f(sz, sy, qz, qy, n):
    protos = torch.stack([sz[sy == c].mean(0) for c in range(n)])
    logits = -(qz[:, None] - protos[None]).pow(2).sum(-1)
    return F.cross_entropy(logits, qy, reduction="sum")
''', "summed over the queries"),
        ('''
def f(sz, sy, qz, qy, n):
    protos = torch.stack([sz[sy == c].mean(0) for c in range(n)]).detach()
    return F.cross_entropy(-(qz[:, None] - protos[None]).pow(2).sum(-1), qy)
''', "no gradient reaches them"),
    ],
    "check_attention_mask": [
        ('''
def f(s, q):
    n = s + q
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:, :s] = True
    allowed[s:, s:] = torch.eye(q, dtype=torch.bool)
    return ~allowed
''', "complement"),
        ('''
def f(s, q):
    allowed = torch.zeros(s + q, s + q, dtype=torch.bool)
    allowed[:, :s] = True
    allowed[s:, s:] = True
    return allowed
''', "attend to each other"),
        ("def f(s, q):\n    return torch.ones(s + q, s + q).tril()", "bool tensor"),
    ],
    "check_cnp_summary": [
        ("def f(enc, x, y):\n    return enc(torch.cat([x, y], dim=-1)).sum(dim=-2)", "summed"),
        ("def f(enc, x, y):\n    return enc(torch.cat([y, x], dim=-1)).mean(dim=-2)", "(y, x)"),
    ],
}


def _function(source: str):
    """The last top-level function that ``source`` defines."""
    namespace = {"torch": torch, "np": np, "F": F}
    exec(compile(source, "<exercise>", "exec"), namespace)
    return namespace[re.findall(r"^def (\w+)", source, re.MULTILINE)[-1]]


def _chapter_exercises(path) -> list[dict]:
    """The coding exercises of a chapter: each check cell with the stub and solution before it."""
    nb = nbformat.read(path, as_version=4)
    found, stub, solution = [], None, None
    for cell in nb.cells:
        cell_tags = tags(cell)
        if STUB in cell_tags:
            stub, solution = cell.source, None
        elif SOLUTION in cell_tags:
            solution = cell.source
        elif CHECK in cell_tags:
            checker = re.findall(r"\b(check_\w+)\(", cell.source)[-1]
            found.append({"checker": checker, "stub": stub, "solution": solution,
                          "check": cell.source, "chapter": path.stem})
            stub = solution = None
    return found


CHAPTERS = toc_notebooks(REPO)
BOOK = [ex for path in CHAPTERS for ex in _chapter_exercises(path)]


def _check(name: str, fn) -> None:
    EXERCISES[name].checker_fn(fn)


def test_every_chapter_has_two_coding_exercises():
    assert CHAPTERS, "no chapters found in _toc.yml"
    for path in CHAPTERS:
        if path.stem in NOT_YET | APPENDICES:
            continue
        exercises = _chapter_exercises(path)
        assert len(exercises) >= 2, f"{path.name} has {len(exercises)} coding exercises, needs 2"
        for ex in exercises:
            assert ex["stub"] and ex["solution"], f"{path.name}: {ex['checker']} lacks a stub or " \
                                                  "a solution cell before its check cell"
            assert ex["checker"] in EXERCISES, f"{path.name} calls unknown {ex['checker']}"
            assert EXERCISES[ex["checker"]].chapter == path.stem, ex["checker"]


def test_every_checker_is_used_and_registered_once():
    used = {ex["checker"] for ex in BOOK} | set(IN_CONTEXT_SOLUTIONS)
    assert used == set(EXERCISES), (sorted(used ^ set(EXERCISES)))
    assert len(BOOK) == len({ex["checker"] for ex in BOOK}), "a checker is used twice"
    import mlbook.exercises as package
    assert set(EXERCISES) <= set(package.__all__)


def _solutions():
    return [(ex["checker"], ex["solution"]) for ex in BOOK] + list(IN_CONTEXT_SOLUTIONS.items())


@pytest.mark.parametrize(("checker", "solution"), _solutions(), ids=[c for c, _ in _solutions()])
def test_checker_accepts_the_solution(checker, solution, capsys):
    _check(checker, _function(solution))
    assert f"{checker}: passed" in capsys.readouterr().out


@pytest.mark.parametrize("checker", sorted(EXERCISES))
def test_checker_rejects_wrong_implementations_in_words(checker):
    wrong = WRONG[checker]
    assert len(wrong) >= 2, f"{checker} needs at least two wrong implementations tested"
    for source, fragment in wrong:
        with pytest.raises(ExerciseFailed) as failure:
            _check(checker, _function(source))
        message = str(failure.value)
        assert fragment in message, f"{checker}: expected {fragment!r} in {message!r}"
        assert "Traceback" not in message and len(message) < 600, message


@pytest.mark.parametrize("checker", sorted(EXERCISES))
def test_checker_explains_a_float32_answer_and_a_crash(checker):
    # A crash inside the student's function becomes an ExerciseFailed naming the error.
    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")

    with pytest.raises(ExerciseFailed, match="broken raised IndexError: index 7"):
        _check(checker, broken)
    with pytest.raises(ExerciseFailed, match="returned None"):
        _check(checker, lambda *args, **kwargs: None)


def test_float32_implementations_pass():
    # A correct float32 implementation is within the tolerances.
    def protonet_loss(sz, sy, qz, qy, n):
        sz, qz = sz.float(), qz.float()
        protos = torch.stack([sz[sy == c].mean(0) for c in range(n)])
        return F.cross_entropy(-(qz[:, None] - protos[None]).pow(2).sum(-1), qy)

    def inner(fmodel, params, sx, sy, loss_fn, lr, steps):
        phi = {n: p.float() for n, p in params.items()}
        sx = sx.float()
        sy = sy.float() if sy.is_floating_point() else sy
        for _ in range(steps):
            grads = torch.autograd.grad(loss_fn(fmodel(phi, sx), sy), list(phi.values()),
                                        create_graph=True)
            phi = {n: p - lr * g for (n, p), g in zip(phi.items(), grads, strict=True)}
        return {n: p.double() for n, p in phi.items()}

    _check("check_protonet_loss", protonet_loss)
    _check("check_inner_update", inner)


def test_the_stubs_fail_with_a_message():
    for ex in BOOK:
        with pytest.raises(ExerciseFailed, match="not written yet"):
            _check(ex["checker"], _function(ex["stub"]))


def test_student_edition_has_stubs_and_checks_but_no_solution(tmp_path):
    assert main(["student-edition", str(tmp_path / "out"), *map(str, CHAPTERS)]) == 0
    for path in CHAPTERS:
        written = tmp_path / "out" / path.name
        text = written.read_text()
        nb = nbformat.read(written, as_version=4)
        assert not [c for c in nb.cells if SOLUTION in tags(c)]
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        student = _chapter_exercises(written)
        for ex in _chapter_exercises(path):
            body = [line for line in ex["solution"].splitlines()
                    if line.strip() and line not in ex["stub"]]
            assert not any(line in nb.cells[i].source for line in body[-2:]
                           for i in range(len(nb.cells))), (path.name, ex["checker"])
            assert ex["stub"] in text or ex["stub"] in [s["stub"] for s in student]
        # every stub there fails its checker with a message, not a traceback from torch
        for ex in student:
            assert ex["solution"] is None
            with pytest.raises(ExerciseFailed, match="not written yet"):
                _check(ex["checker"], _function(ex["stub"]))
    # the cells of the book itself are unchanged
    original = nbformat.read(CHAPTERS[0], as_version=4)
    assert len(student_edition(original).cells) < len(original.cells)


def test_teaching_page_lists_every_exercise():
    page = (REPO / "book" / "teaching.md").read_text()
    missing = [name for name in EXERCISES if f"`{name}`" not in page]
    assert not missing, f"book/teaching.md does not list {missing}"
    assert "book/teaching" in (REPO / "_toc.yml").read_text()


def test_grade_prints_a_table(tmp_path):
    """grade --exercises-only runs a chapter's exercise cells in a kernel: the book's
    solutions pass, the student edition's stubs fail."""
    chapter = REPO / "book" / "maml_math.ipynb"
    main(["student-edition", str(tmp_path), str(chapter)])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mlbook.exercises", "grade", "--exercises-only"]
    book = subprocess.run(command + [str(chapter)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert book.returncode == 0, book.stdout + book.stderr
    assert "2 of 2 exercises pass" in book.stdout
    student = subprocess.run(command + [str(tmp_path / chapter.name)], capture_output=True,
                             text=True, env=env, timeout=300)
    assert student.returncode == 1, student.stdout + student.stderr
    assert "0 of 2 exercises pass" in student.stdout
    assert student.stdout.count("FAIL") == 2 and "not written yet" in student.stdout
