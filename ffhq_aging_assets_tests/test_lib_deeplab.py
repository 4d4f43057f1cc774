import json
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from ffhq_aging_assets.lib.deeplab import (
    CheckpointError,
    build_deeplab,
    fold_weight_standardization,
    load_deeplab,
)
from ffhq_aging_assets.lib.masks import CLASS_NAMES
from ffhq_aging_assets_tests.synthetic import seeded_deeplab_state

DATA = Path(__file__).parent / "data" / "deeplab"


def test_state_dict_keys_and_shapes_are_the_published_ones() -> None:
    published = json.loads((DATA / "deeplab_keys.json").read_text())
    state = build_deeplab().state_dict()
    assert list(state) == list(published)
    assert {k: list(v.shape) for k, v in state.items()} == published


def test_the_model_classifies_into_the_mask_classes() -> None:
    assert build_deeplab().aspp.conv3.out_channels == len(CLASS_NAMES) == 19


@pytest.fixture(scope="module")
def seeded_model() -> torch.nn.Module:
    model = build_deeplab()
    model.load_state_dict(seeded_deeplab_state())
    return model.eval()


def test_logits_match_the_reference(seeded_model: torch.nn.Module) -> None:
    x = torch.from_numpy(np.load(DATA / "deeplab_input.npy"))
    reference = np.load(DATA / "deeplab_logits.npy")
    with torch.no_grad():
        logits = seeded_model(x).numpy()
    assert logits.shape == reference.shape == (1, 19, 113, 113)
    assert np.abs(logits - reference).max() <= 1e-3 * np.abs(reference).max()


def test_folding_keeps_the_logits(seeded_model: torch.nn.Module) -> None:
    import copy

    x = torch.from_numpy(np.load(DATA / "deeplab_input.npy"))
    folded = fold_weight_standardization(copy.deepcopy(seeded_model))
    assert not any(type(m).__name__ == "WSConv2d" for m in folded.modules())
    with torch.no_grad():
        a, b = seeded_model(x), folded(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_published_checkpoint_loads(seeded_checkpoint: Path) -> None:
    raw = torch.load(seeded_checkpoint, weights_only=True)
    assert all(k.startswith("module.") for k in raw["state_dict"])
    model = load_deeplab(seeded_checkpoint)
    assert not model.training
    assert torch.equal(
        model.state_dict()["aspp.conv3.bias"], seeded_deeplab_state()["aspp.conv3.bias"]
    )


def test_tracked_keys_are_dropped(tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in seeded_deeplab_state().items()}
    state["module.bn1.num_batches_tracked"] = torch.tensor(7)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    load_deeplab(tmp_path / "ckpt.pth")


class Exploit:
    def __reduce__(self):
        return (print, ("code ran while loading",))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: p.write_bytes(b"<html>quota exceeded</html>"),
            "not a loadable torch checkpoint",
        ),
        (lambda p: p.write_bytes(pickle.dumps(Exploit())), "not a loadable torch checkpoint"),
        (lambda p: torch.save({"state_dict": {"module.x": torch.zeros(1)}}, p), "missing keys"),
        (lambda p: torch.save([1, 2, 3], p), "no state_dict"),
    ],
)
def test_bad_checkpoints_are_named(tmp_path: Path, make, message: str, capsys) -> None:
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_deeplab(path)
    assert str(path) in str(err.value)
    assert "code ran" not in capsys.readouterr().out


def test_unexpected_and_misshaped_keys_are_listed(tmp_path: Path) -> None:
    state = seeded_deeplab_state()
    state["aspp.conv3.weight"] = torch.zeros(21, 256, 1, 1)
    state["aspp.extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError) as err:
        load_deeplab(tmp_path / "c.pth")
    text = str(err.value)
    assert "1 unexpected keys: aspp.extra.weight" in text
    assert "aspp.conv3.weight (21, 256, 1, 1) (expected (19, 256, 1, 1))" in text


def test_unloadable_checkpoints_never_advise_weights_only(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"module.x": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    files = {
        "half.pth": data[: len(data) // 2],
        "short.pth": data[:-10],
        "empty.pth": b"",
        "pickled.pth": pickle.dumps({"epoch": Fraction(1, 3)}),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save(
        {"state_dict": {"module.x": torch.zeros(4)}, "epoch": Fraction(1, 3)},
        tmp_path / "objects.pth",
    )
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(tmp_path / "objects.pth", weights_only=True)  # what torch itself would say
    for name in [*files, "objects.pth"]:
        path = tmp_path / name
        with pytest.raises(CheckpointError) as err:
            load_deeplab(path)
        text = str(err.value)
        assert str(path) in text and "not a loadable torch checkpoint" in text
        assert "truncated, or not the published file" in text
        assert "weights_only" not in text and "torch.load" not in text
