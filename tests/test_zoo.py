"""mlbook.zoo: the shipped index is complete, loading verifies, and train_zoo.py writes models."""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

import mlbook
from mlbook import zoo
from mlbook.meta import MAML, InContextLearner, ProtoNet, Reptile

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_model_is_complete_and_loads():
    names = zoo.available()
    total = 0
    for name in names:
        meta = zoo.info(name)
        missing = [k for k in zoo.REQUIRED_KEYS if k not in meta]
        assert not missing, f"{name} lacks {missing}"
        assert meta["method"] in zoo.METHODS and meta["split"] in zoo.SPLITS
        assert not meta.get("dirty"), f"{name} was trained with uncommitted changes"
        path = zoo.weights_dir() / meta["file"]
        total += path.stat().st_size
        learner = zoo.load(name)
        expected = {"protonet": ProtoNet, "transfer": ProtoNet, "reptile": Reptile,
                    "icl": InContextLearner}.get(meta["method"], MAML)
        assert isinstance(learner, expected) and not learner.training
        network = (learner.encoder if isinstance(learner, (ProtoNet, InContextLearner))
                   else learner.model)
        assert isinstance(network, torch.nn.Module)
    assert total <= 15 * 2**20, f"the zoo's weights take {total} bytes, more than 15 MB"
    # one model per method, and one that never saw Lake's evaluation alphabets
    assert {zoo.info(name)["method"] for name in names} == set(zoo.METHODS)
    assert "lake-background" in {zoo.info(name)["split"] for name in names}


def fake_zoo(tmp_path: Path, monkeypatch, method: str = "protonet", learner=None) -> Path:
    """A zoo folder with one model ``m`` (untrained weights), used by the package."""
    learner = learner or zoo.build_learner(method, n_way=5)
    (tmp_path / "weights").mkdir()
    path = tmp_path / "weights" / "m.pt"
    torch.save(learner.state_dict(), path)
    entry = {k: None for k in zoo.REQUIRED_KEYS}
    entry.update(method=method, split="standard", n_way=5, k_shot=1, image_size=28, file="m.pt",
                 sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    (tmp_path / "models.json").write_text(json.dumps({"m": entry}))
    monkeypatch.setattr(zoo, "zoo_dir", lambda: tmp_path)
    return path


@pytest.mark.parametrize("method", ["protonet", "maml", "fomaml", "anil", "metasgd", "reptile",
                                    "icl"])
def test_load_builds_the_recorded_learner(tmp_path, monkeypatch, method):
    fake_zoo(tmp_path, monkeypatch, method)
    assert zoo.available() == ["m"]
    learner = zoo.load("m")
    original = zoo.build_learner(method, n_way=5)
    assert type(learner) is type(original)
    assert learner.state_dict().keys() == original.state_dict().keys()


def test_unknown_name_lists_the_available_ones(tmp_path, monkeypatch):
    fake_zoo(tmp_path, monkeypatch)
    with pytest.raises(zoo.ZooError, match=r"no zoo model named 'nope'; available: \['m'\]"):
        zoo.load("nope")


def test_altered_or_missing_file_is_refused(tmp_path, monkeypatch):
    path = fake_zoo(tmp_path, monkeypatch)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match="sha256.*damaged or was replaced"):
        zoo.load("m")
    path.unlink()
    with pytest.raises(zoo.ZooError, match="missing"):
        zoo.load("m")


def test_weights_of_another_architecture_are_refused(tmp_path, monkeypatch):
    # MAML weights recorded as a ProtoNet: the sha256 matches, the shapes do not
    fake_zoo(tmp_path, monkeypatch, "protonet", learner=zoo.build_learner("maml", n_way=5))
    with pytest.raises(zoo.ZooError, match="do not fit a protonet learner"):
        zoo.load("m")


def test_a_pickle_that_is_not_a_state_dict_is_refused(tmp_path, monkeypatch):
    path = fake_zoo(tmp_path, monkeypatch)
    torch.save({"when": datetime.date(2026, 1, 1)}, path)  # weights_only may not unpickle it
    index = json.loads((tmp_path / "models.json").read_text())
    index["m"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "models.json").write_text(json.dumps(index))
    with pytest.raises(zoo.ZooError, match="not a plain state dict"):
        zoo.load("m")


@pytest.mark.parametrize("flag", ["--steps", "--test-episodes"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_train_zoo_refuses_counts_below_one(flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("train_zoo", None)
    import train_zoo

    with pytest.raises(SystemExit):
        train_zoo.main(["anil-5w1s", flag, value, "--out", str(tmp_path), "--allow-dirty"])
    assert f"{flag} must be at least 1, got {value}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was written


@pytest.mark.slow
def test_train_zoo_writes_a_loadable_model_with_its_record(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("MLBOOK_DATA", str(shared_data))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("train_zoo", None)
    import train_zoo

    record = train_zoo.main(["protonet-5shot", "--steps", "2", "--test-episodes", "3",
                             "--threads", "1", "--out", str(tmp_path), "--allow-dirty"])
    assert record["steps"] == 2 and set(record["test"]) == {"5w5s", "20w5s"}
    assert (tmp_path / "runs" / "protonet-5shot" / "checkpoint.pt").is_file()
    assert (tmp_path / "results" / "protonet-5shot.md").read_text().startswith("# Zoo model")
    monkeypatch.setattr(zoo, "zoo_dir", lambda: tmp_path)
    meta = zoo.info("protonet-5shot")
    assert {k: meta[k] for k in ("method", "split", "n_way", "k_shot", "steps", "seed")} == {
        "method": "protonet", "split": "standard", "n_way": 5, "k_shot": 5, "steps": 2, "seed": 0}
    assert meta["train_command"].startswith("python benchmarks/train_zoo.py protonet-5shot")
    learner = zoo.load("protonet-5shot")
    assert isinstance(learner, ProtoNet)
    # the shipped weights are the trained ones: the same scores on the same episodes
    from mlbook.data import fixed_episodes, omniglot_standard_split
    from mlbook.meta import evaluate

    test = omniglot_standard_split(28)[1]
    acc, _ = evaluate(learner, fixed_episodes(test, 5, 5, 15, 3, seed=0))
    assert acc == pytest.approx(meta["test"]["5w5s"]["acc"], abs=1e-5)


@pytest.mark.slow
def test_train_zoo_transfer_recipe_trains_a_classifier_and_resumes_its_curve(
        tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("MLBOOK_DATA", str(shared_data))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    sys.modules.pop("train_zoo", None)
    import train_zoo

    args = ["transfer", "--test-episodes", "2", "--threads", "1", "--out", str(tmp_path),
            "--allow-dirty"]
    first = train_zoo.main([*args, "--steps", "2"])
    assert [c["step"] for c in first["curve"]] == [2]
    mlbook.seed_everything(0)  # as train_zoo.main does before it builds the learner
    before = zoo.build_learner("transfer", 5).state_dict()
    monkeypatch.setattr(zoo, "zoo_dir", lambda: tmp_path)
    trained = zoo.load("transfer").state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in before if "running" not in k)
    # the same command with a larger budget continues from step 2: the curve grows by one point
    second = train_zoo.main([*args, "--steps", "4"])
    assert [c["step"] for c in second["curve"]] == [2, 4]
    assert second["curve"][0] == first["curve"][0]
    assert zoo.info("transfer")["method"] == "transfer" and zoo.info("transfer")["steps"] == 4


def test_readme_zoo_table_is_generated_from_the_index(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from zoo_table import load_protocols, readme_with_table, zoo_table

    readme = (REPO / "README.md").read_text()
    table = zoo_table(json.loads((REPO / "mlbook" / "zoo" / "models.json").read_text()),
                      load_protocols())
    assert readme_with_table(readme, table) == readme, (
        "README.md's zoo table is stale: run python benchmarks/zoo_table.py --write")
    index = {"m": {"method": "maml", "split": "standard", "steps": 1234, "train_seconds": 600,
                   "sha256": "abc", "test": {"5w1s": {"acc": 0.5, "ci95": 0.01}},
                   "test_episodes": 50}}
    assert zoo_table(index).splitlines()[-1] == (
        "| `m` | maml | standard | 1,234 | 10 | 5w1s 50.00 ± 1.00 (50 episodes) | pending "
        "| batch statistics (transductive) | 5w1s 98.7 (Finn et al. 2017: rotated test classes, "
        "transductive batch norm) |")
    # the rotated score shows only for the weights it was measured on
    scored = {"m": {"status": "done", "sha256": "abc", "test_episodes": 50,
                    "rotated": {"5w1s": {"acc": 0.6, "ci95": 0.02}}}}
    assert "| 5w1s 60.00 ± 2.00 (50 episodes) |" in zoo_table(index, scored)
    scored["m"]["sha256"] = "retrained since"
    assert "| pending |" in zoo_table(index, scored)
    with pytest.raises(ValueError, match="markers"):
        readme_with_table("no markers here", table)
