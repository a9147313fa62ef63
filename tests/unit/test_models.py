import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.errors import ModelError
from fluoden_batch.models import (
    DnCNN,
    fold_batch_norm,
    load_model,
    read_metadata,
    resolve_weights,
    shipped_models,
)
from fluoden_batch.models.normalise import denormalise, normalise, percentile_range
from fluoden_batch.restore.inference import infer_plane


def test_folded_batch_norm_computes_the_same_function(tiny_weights):
    from fluoden_batch.models import load_trainable

    trained, _ = load_trainable(tiny_weights)
    folded = fold_batch_norm(trained.eval())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 1, 40, 33)
    with torch.no_grad():
        assert torch.allclose(trained.eval()(x), folded(x), atol=1e-5)


def test_receptive_radius_is_depth():
    model = DnCNN(depth=5, width=4, batch_norm=False).eval()
    x = torch.zeros(1, 1, 31, 31)
    x[0, 0, 15, 15] = 1.0
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()  # positive weights: the impulse reaches every pixel in range
        response = (model.body(x)[0, 0] - model.body(torch.zeros_like(x))[0, 0]).abs() > 0
    ys, xs = np.nonzero(response.numpy())
    assert ys.min() == 15 - model.receptive_radius and ys.max() == 15 + model.receptive_radius
    assert xs.min() == 15 - model.receptive_radius


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 90),
    w=st.integers(1, 90),
    tile=st.integers(8, 48),
    seed=st.integers(0, 2**16),
)
def test_tiled_inference_equals_whole_plane(tiny_weights, h, w, tile, seed):
    module = load_model(tiny_weights).module
    plane = np.random.default_rng(seed).random((h, w), dtype=np.float32)
    whole = infer_plane(module, plane)
    tiled = infer_plane(module, plane, tile=tile)
    assert np.abs(whole - tiled).max() < 1e-5


def test_load_model_resolves_paths_and_reports_unknown_names(tiny_weights):
    loaded = load_model(str(tiny_weights))
    assert loaded.digest.startswith("sha256:") and loaded.metadata.name == "tiny-test"
    assert resolve_weights(tiny_weights) == tiny_weights.resolve()
    with pytest.raises(ModelError, match="neither a file nor a shipped model"):
        resolve_weights("no-such-model")


def test_read_metadata_takes_a_path_or_a_string(tiny_weights):
    assert read_metadata(str(tiny_weights)) == read_metadata(tiny_weights)
    assert read_metadata(str(tiny_weights)).name == "tiny-test"


def test_pickle_checkpoints_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(DnCNN(3, 4).state_dict(), path)
    with pytest.raises(ModelError, match="pickle"):
        load_model(path)
    renamed = tmp_path / "model.safetensors"
    path.rename(renamed)
    with pytest.raises(ModelError, match="pickle"):
        load_model(renamed)


def test_shipped_models_load():
    for name in shipped_models():
        loaded = load_model(name)
        assert loaded.metadata.name and loaded.receptive_radius >= 2


@given(st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=50))
def test_normalisation_round_trip(values):
    x = np.array(values, dtype=np.float32)
    lo, hi = percentile_range(x, 0.1, 99.9)
    assert hi > lo
    back = denormalise(normalise(x, lo, hi), lo, hi)
    assert np.allclose(back, x, atol=1e-3 * max(1.0, hi - lo))


def test_reduced_precision_is_refused_on_cpu(tiny_weights):
    from fluoden_batch.errors import InputError

    with pytest.raises(InputError, match="needs a CUDA device"):
        infer_plane(load_model(tiny_weights).module, np.zeros((8, 8), np.float32), None, "bf16")
