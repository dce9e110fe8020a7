"""The rare-object simulator and the oracle-marks protocol of ``ulisse benchmark anomalies`` (benchmarks/anomalies.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ulisse
from ulisse.plugins.anomalies.artefacts import artefact_kind
from ulisse_bench.anomalies import LEARN_DRAWS, check_cost, learnability, oracle_loop, run_strategies
from ulisse_bench.sim.agn import to_rgb
from ulisse_bench.sim.rare import ARTEFACTS, INTERESTING, class_of, kinds_of, saturate, simulate_object, simulate_rare_set


def test_kinds_are_placed_at_seeded_positions():
    kinds = kinds_of(500, seed=0)
    assert len(kinds) == 500 and kinds == kinds_of(500, seed=0) and kinds != kinds_of(500, seed=1)
    for table in (INTERESTING, ARTEFACTS):
        for kind, count in table.items():
            assert kinds.count(kind) == count
    assert {class_of(k) for k in set(kinds)} == {"interesting", "artefact", "ordinary"}
    with pytest.raises(ValueError):
        kinds_of(50)


@pytest.mark.parametrize("kind", ["galaxy", "arc", "ring", "merger", "trail", "bleed", "edge", "bad_column"])
def test_each_kind_renders_and_the_artefacts_are_flagged(kind):
    cube, row = simulate_object(np.random.default_rng([3, 7]), kind)
    assert cube.shape == (3, 64, 64) and cube.dtype == np.float32 and np.isfinite(cube).all()
    assert row["kind"] == kind and row["class"] == class_of(kind)
    again, _ = simulate_object(np.random.default_rng([3, 7]), kind)
    np.testing.assert_array_equal(cube, again)
    flagged = artefact_kind(to_rgb(cube))
    if kind in ("bleed", "edge", "bad_column"):
        assert flagged, kind
    elif kind in ("galaxy", "arc", "ring", "merger"):
        assert flagged == "", (kind, flagged)


def test_structured_population_adds_arms_and_field_stars_to_ordinary_galaxies_only():
    """The structured set's ordinary galaxies get spiral arms and foreground stars; the smooth set is unchanged."""
    structures = []
    for k in range(60):
        smooth, row = simulate_object(np.random.default_rng([5, k]), "galaxy")
        structured, srow = simulate_object(np.random.default_rng([5, k]), "galaxy", "structured")
        assert set(row["structure"].split("+")) <= {"", "companion"}
        assert row["structure"] in srow["structure"]  # the companion draw comes first, the same in both
        structures.append(srow["structure"])
        if srow["structure"] == row["structure"]:  # nothing added: the same pixels
            np.testing.assert_array_equal(smooth, structured)
        else:  # arms or a star add flux, never take it
            assert structured.sum() > smooth.sum()
    assert any("arms" in s for s in structures) and any("star" in s for s in structures)
    star_share = np.mean(["star" in s for s in structures])
    assert 0.1 < star_share < 0.5
    ring, row = simulate_object(np.random.default_rng([5, 1]), "ring", "structured")
    np.testing.assert_array_equal(ring, simulate_object(np.random.default_rng([5, 1]), "ring")[0])
    with pytest.raises(ValueError, match="population 'spiky'"):
        simulate_object(np.random.default_rng(0), "galaxy", "spiky")


def test_simulated_set_refuses_an_unknown_population(tmp_path):
    with pytest.raises(ValueError, match="population"):
        simulate_rare_set(tmp_path / "s", n=200, population="spiky", progress=False)
    assert not (tmp_path / "s").exists()


def test_saturation_conserves_charge_in_the_column():
    cube = np.zeros((3, 64, 64))
    cube[:, 32, 20] = 2000.0
    out = saturate(cube)
    assert np.allclose(out.sum(axis=(1, 2)), cube.sum(axis=(1, 2)))
    assert (out[:, :, 20] > 0).sum(axis=1).min() > 5 and (out[:, :, 21] == 0).all()  # bled along the column only


@pytest.mark.slow
def test_oracle_protocol_on_separated_kinds(tmp_path):
    """Artefacts are the most anomalous; once marked, feedback shows the interesting kind instead."""
    rng = np.random.default_rng(0)
    n, dim = 300, 16
    classes = np.array(["artefact"] * 40 + ["interesting"] * 40 + ["ordinary"] * (n - 80))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:40, :4] += rng.normal(0, 4.0, size=(40, 4)) + 6.0  # scattered far out: the most anomalous
    x[40:80, 4:8] += 3.0 + rng.normal(0, 1.5, size=(40, 4))  # a looser clump
    meta = pd.DataFrame({"id": [f"o{i:03d}" for i in range(n)], "class": classes})
    index = ulisse.create_index(tmp_path / "idx", x, meta, ulisse.EncoderSpec("synthetic", "random", None, 32, dim=dim),
                                device="cpu")
    from ulisse.plugins.anomalies import anomaly_scores

    scores = anomaly_scores(index, k=5, progress=False)["score"].to_numpy()
    runs = {r.name: r for r in run_strategies(index, classes, {"kth": scores}, x, ("product", "relevance"))}
    plain = runs["plain anomaly list (kth), artefacts show"]
    feedback = runs["anomalies with feedback (kth; product; relevance from vectors), artefacts show"]
    # no cutouts in this index: the default relevance is the vectors' alone, the same ranking
    default = runs["anomalies with feedback (kth; product; relevance from vectors + morphology), artefacts show"]
    assert default.interesting == feedback.interesting
    assert plain.interesting[0] == feedback.interesting[0]  # nothing marked before round 1
    assert feedback.total > plain.total and feedback.artefacts[1:] < plain.artefacts[1:]
    assert sum(feedback.found.count(k) for k in set(feedback.found)) == feedback.total
    shown = oracle_loop(index, classes, lambda pos, neg, r: list(meta["id"][r * 20:(r + 1) * 20]), "first ids")
    assert shown.artefacts == [20, 20, 0] and shown.interesting == [0, 0, 20]


def test_learnability_tells_a_kind_marks_can_teach_from_one_they_cannot(tmp_path):
    """A kind in a clump of its own is found again after 5 marks; one drawn like the ordinary galaxies is not."""
    rng = np.random.default_rng(1)
    n, dim = 400, 16
    kinds = np.array(["clump"] * 20 + ["hidden"] * 20 + ["galaxy"] * (n - 40))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:20, :4] += 4.0  # the learnable kind; "hidden" is drawn exactly as the galaxies are
    meta = pd.DataFrame({"id": [f"o{i:03d}" for i in range(n)], "kind": kinds,
                         "class": np.where(kinds == "galaxy", "ordinary", "interesting")})
    index = ulisse.create_index(tmp_path / "idx", x, meta, ulisse.EncoderSpec("synthetic", "random", None, 32, dim=dim),
                                device="cpu")
    rows = {r["kind"]: r for r in learnability(index, kinds, kinds, x, None)}
    assert set(rows) == {"clump", "hidden"} and all(r["from"] == "vectors" for r in rows.values())
    assert len(rows["clump"]["counts"]) == LEARN_DRAWS
    assert min(rows["clump"]["counts"]) >= 12  # 15 of its kind are left to find, all in one clump
    assert max(rows["hidden"]["counts"]) <= 5  # chance: 15 of 375 unmarked objects
    assert "galaxy" in rows["hidden"]["others"]
    stats = rng.normal(size=(n, 6)).astype(np.float32)  # statistics in which "hidden" stands out and "clump" does not
    stats[20:40, :2] += 4.0
    rows = {(r["kind"], r["from"]): r for r in learnability(index, kinds, kinds, x, stats)}
    default = "the default (weight chosen)"
    assert {way for _, way in rows} == {"vectors", "vectors + morphology (0.5)", default}
    assert np.mean(rows["hidden", default]["counts"]) > np.mean(rows["hidden", "vectors"]["counts"]) + 5
    assert min(rows["hidden", default]["weights"]) > 0 and max(rows["clump", default]["weights"]) < 0.5
    assert min(rows["clump", default]["counts"]) >= 12


def test_check_cost_times_the_same_ranking_with_and_without_the_check(tmp_path):
    rng = np.random.default_rng(3)
    n, dim = 300, 16
    classes = np.array(["interesting"] * 30 + ["ordinary"] * (n - 30))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:30, :4] += 5.0  # the interesting objects: far out, so the plain list's first 20 holds some
    meta = pd.DataFrame({"id": [f"o{i:03d}" for i in range(n)], "class": classes})
    index = ulisse.create_index(tmp_path / "idx", x, meta, ulisse.EncoderSpec("synthetic", "random", None, 32, dim=dim),
                                device="cpu")
    from ulisse.plugins.anomalies import anomaly_scores

    scores = anomaly_scores(index, k=5, progress=False)["score"].to_numpy()
    cost = check_cost(index, classes, scores, x, repeats=1)
    assert cost["positives"] + cost["negatives"] == 20 and cost["positives"] >= 2
    assert cost["with"] > 0 and cost["without"] > 0
    assert cost["check"]["held_out"] == min(cost["positives"], 10) and cost["check"]["page"] == 20
