"""Fine-tuned heads: real torch and timm on a few 32-px cutouts (timm's tiny test_efficientnet, random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

import ulisse
from ulisse.errors import InputError
from ulisse.plugins.heads import columns_of, head_report, load_head, predict_head, train_head
from ulisse.plugins.heads.finetune import FinetuneConfig
from ulisse.plugins.heads.ftnet import view

TINY = FinetuneConfig(mode="last", input_size=32, epochs=2, warmup_epochs=1, train_from=1, batch_size=8, members=2,
                      threads=1)


def test_views_are_the_eight_symmetries_of_the_square():
    import torch

    x = torch.arange(16.0).view(1, 1, 4, 4)
    seen = {tuple(view(x, v).flatten().tolist()) for v in range(8)}
    assert len(seen) == 8
    assert torch.equal(view(view(x, 1), 3), x)


@pytest.mark.slow  # about 2 s: two members, 8 views, derived columns, a report
def test_finetuned_ensemble_stores_only_trained_stages_and_predicts_from_pixels(tiny_index):
    trained = train_head(tiny_index, "r_mag", "rm", finetune=TINY)
    cfg = trained.config
    assert cfg["finetune"]["mode"] == "last" and cfg["members"] == 2 and cfg["nan_events"] == 0
    assert set(cfg["calibration_ids"]) <= set(cfg["validation_ids"])
    assert not set(cfg["training_ids"]) & set(cfg["validation_ids"])
    keys = load_file(trained.path / "head.safetensors")
    assert {k.split(".")[0] for k in keys} == {"member0", "member1"}
    # the stem and blocks[0] stay as the index's encoder has them: not stored
    n_blocks = len(load_head(tiny_index, "rm").trunks[0].layers)
    assert any(k.startswith("member0.mlp.") for k in keys) and not any("conv_stem" in k for k in keys)
    assert n_blocks == len(ulisse.Encoder.from_spec(tiny_index.encoder_spec, device="cpu").model.blocks) - 1 + 2
    cols = tiny_index.derived("heads")
    assert list(cols.columns) == columns_of("rm") and np.isfinite(cols.to_numpy()).all()
    np.testing.assert_allclose(cols["rm_std"] ** 2, cols["rm_std_aleatoric"] ** 2 + cols["rm_std_epistemic"] ** 2,
                               rtol=1e-5)
    assert (cols["rm_std_epistemic"] > 0).all()  # two members, two seeds and batch orders
    # reloaded from disk, the head predicts what the derived columns hold
    again = predict_head(tiny_index, "rm", ids=["obj000", "obj005"])
    direct = load_head(tiny_index, "rm").predict_rows(tiny_index, [tiny_index.row_of("obj000"),
                                                                  tiny_index.row_of("obj005")])
    np.testing.assert_allclose(again["rm"], direct["rm"], rtol=1e-5)
    rep = head_report(tiny_index, "rm", "r_mag")
    assert rep.metrics["n"] >= 2 and np.isfinite(rep.metrics["rmse"])


@pytest.mark.slow
def test_mc_dropout_whole_network_without_augmentation(tiny_index):
    ft = FinetuneConfig(**{**TINY.to_dict(), "mode": "all", "augment": "none", "mc_samples": 4, "hidden": (16,)})
    trained = train_head(tiny_index, "r_mag", "rm_mc", method="mc-dropout", finetune=ft)
    assert trained.config["members"] == 1
    keys = load_file(trained.path / "head.safetensors")
    assert any("layers.0." in k for k in keys)  # mode all: the stem is trained and stored too
    cols = tiny_index.derived("heads")
    assert (cols["rm_mc_std_epistemic"] > 0).all() and np.isfinite(cols.to_numpy()).all()


def test_nan_guard_skips_and_recovers(tiny_index, caplog):
    ft = FinetuneConfig(**{**TINY.to_dict(), "members": 1, "backbone_lr": 1e12, "lr": 1e12, "max_nan_restarts": 3})
    with caplog.at_level("WARNING"):
        trained = train_head(tiny_index, "r_mag", "rm_nan", finetune=ft, update_columns=False)
    assert trained.config["nan_events"] > 0
    assert "member 1: non-finite" in caplog.text and "epoch" in caplog.text
    cols = tiny_index.derived("heads", recompute=True)
    assert np.isfinite(cols["rm_nan"]).all()


def test_whole_network_draws_views_on_the_fly_exactly_as_cached_views(tiny_index):
    import torch

    from ulisse.plugins.heads.finetune import train_one
    from ulisse.plugins.heads.ftnet import Prefix, base_network, prefix_maps
    from ulisse.plugins.heads.models import torch_threads

    spec, cpu = tiny_index.encoder_spec, torch.device("cpu")
    model = base_network(spec)
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    y = torch.linspace(-1, 1, 12)
    ft = FinetuneConfig(**{**TINY.to_dict(), "mode": "all", "batch_size": 4, "members": 1})
    with torch_threads(1):
        cached, once = (prefix_maps(Prefix(model, None), images, spec, v, cpu) for v in (8, 1))
        assert once.shape[0] == 1 and cached.shape[0] == 8  # 8x less memory for the whole network's pixels
        a, _ = train_one(model, None, cached, y, once[:, :4], y[:4], ft, 5, 0.1, cpu)
        b, _ = train_one(model, None, once, y, once[:, :4], y[:4], ft, 5, 0.1, cpu, draw_views=8)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a.layers[0].weight, model.conv_stem.weight)  # it trained: the stem moved


def test_each_mode_has_its_own_default_members_and_epochs():
    from ulisse.plugins.heads.finetune import MODE_DEFAULTS

    whole, last = FinetuneConfig(), FinetuneConfig(mode="last")
    assert whole.mode == "all" and (whole.members, whole.epochs) == MODE_DEFAULTS["all"]
    assert (last.members, last.epochs) == MODE_DEFAULTS["last"]
    assert (FinetuneConfig(mode="last", members=5, epochs=7).members, FinetuneConfig(epochs=7).epochs) == (5, 7)
    # a stored config comes back with the values it was trained with, whatever the defaults are now
    assert FinetuneConfig.from_dict({**whole.to_dict(), "members": 4}).members == 4


def test_bad_settings_are_one_line_errors(tiny_index):
    with pytest.raises(InputError, match="train-from 9"):
        train_head(tiny_index, "r_mag", "h", finetune=FinetuneConfig(mode="last", train_from=9, input_size=32,
                                                                             epochs=1))
    with pytest.raises(InputError, match="expected one of ensemble, mc-dropout"):
        train_head(tiny_index, "r_mag", "h", method="ridge", finetune=FinetuneConfig(input_size=32, epochs=1))


@pytest.mark.slow
def test_cli_finetune(tiny_index, cli):
    d = str(tiny_index.path)
    code, out, err = cli("-q", "head", "train", d, "--target", "r_mag", "--name", "rmf", "--finetune", "last",
                         "--epochs", "2", "--input-size", "32", "--train-from", "1", "--members", "2",
                         "--augment", "none")
    assert code == 0, err
    assert "fine-tuned (last, 32 px, augment none)" in out and "non-finite steps" in out
    cfg = json.loads((tiny_index.path / "derived" / "heads" / "rmf" / "head.json").read_text())
    assert cfg["finetune"]["augment"] == "none" and cfg["members"] == 2
    code, out, err = cli("head", "list", d)
    assert code == 0 and "rmf" in out


@pytest.mark.slow  # a few seconds: one fine-tuned head, then a ridge head trained and removed beside it
def test_another_head_trained_or_removed_never_runs_the_fine_tuned_network_again(tiny_index, monkeypatch):
    import pandas as pd

    import ulisse.progress as progress
    from ulisse.plugins.heads import remove_head
    from ulisse.plugins.heads.finetune import FinetunedHead

    monkeypatch.setattr(progress, "WATCH_EVERY_SECONDS", 0.0)  # every step heard
    states = []
    with progress.watching(states.append):
        train_head(tiny_index, "r_mag", "rm", finetune=TINY)
    passes = [s for s in states if s.desc == "head rm: predicting from the cutouts"]
    assert passes and {s.unit for s in passes} == {"cutout"}  # its own pass over every cutout says how far it is
    assert passes[-1].n == passes[-1].total == len(tiny_index)
    before = tiny_index.derived("heads")
    runs, real = [], FinetunedHead.predict_standardised
    monkeypatch.setattr(FinetunedHead, "predict_standardised",
                        lambda self, *a, **kw: runs.append(self.name) or real(self, *a, **kw))
    train_head(tiny_index, "r_mag", "rr", method="ridge")
    assert list(tiny_index.derived("heads").columns) == columns_of("rm") + columns_of("rr")
    remove_head(tiny_index, "rr")
    assert runs == []  # neither the training nor the removal ran the fine-tuned network over the cutouts
    assert tiny_index.derived_is_fresh("heads")
    pd.testing.assert_frame_equal(tiny_index.derived("heads"), before)
    # the stored columns are those of the stored head, reloaded
    again = load_head(tiny_index, "rm").predict_rows(tiny_index, np.arange(len(tiny_index)))
    np.testing.assert_allclose(again.to_numpy(), before.to_numpy(), rtol=1e-5)
