"""``ulisse_bench.feedback.oracle_rounds`` (benchmarks/feedback.md): simulated rounds of oracle marks."""

from __future__ import annotations

import pandas as pd

from marked_kinds import two_kinds_index
from ulisse_bench.feedback import oracle_rounds


def test_oracle_rounds_on_two_separated_kinds(tmp_path):
    """Round 1 shows the kNN neighbours either way; re-ranking by the oracle's marks finds the rest of the kind."""
    index = two_kinds_index(tmp_path / "idx", n=120, dim=16)
    x, meta = index.all_vectors(), index.metadata
    label = meta["label"].to_numpy()
    table = oracle_rounds(index, "label", "AGN", prototypes=4, rounds=3, per_round=8, seed=0)
    assert list(table.columns) == ["prototype", "knn_1", "knn_2", "knn_3", "feedback_1", "feedback_2", "feedback_3"]
    assert len(table) == 4 and table["prototype"].isin(meta["id"][label == "AGN"]).all()
    values = table.drop(columns="prototype").to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    assert (table["feedback_1"] == table["knn_1"]).all()  # the first round is the prototype's neighbours
    assert table["feedback_2"].mean() >= 0.8  # the marks teach the kind
    again = oracle_rounds(index, "label", "AGN", prototypes=4, rounds=3, per_round=8, seed=0, vectors=x)
    pd.testing.assert_frame_equal(again, table)


def test_expansion_rounds_compare_with_direct_knn_at_equal_count(tmp_path):
    """Each expansion's AGN fraction and direct kNN's at as many objects; confirmed expansion beats plain here."""
    from ulisse_bench.feedback import EXPANSIONS, draw_prototypes, expansion_rounds

    index = two_kinds_index(tmp_path / "idx", seed=2)
    meta = index.metadata
    protos = draw_prototypes(index, "label", "AGN", 3, seed=0)
    assert protos == draw_prototypes(index, "label", "AGN", 3, seed=0) and set(protos) <= set(meta["id"][:30])
    table = expansion_rounds(index, "label", "AGN", protos, budget=30)
    assert list(table["prototype"]) == protos
    for name in EXPANSIONS:
        assert (table[f"{name}|n"] <= 30).all()
        assert table[[f"{name}|found", f"{name}|direct"]].stack().between(0, 1).all()
    guided = "confirmed + relevance (k 16, 8 per iteration)"
    assert table[f"{guided}|found"].mean() > table["recursive|found"].mean() + 0.1
    assert table[f"{guided}|found"].mean() >= table[f"{guided}|direct"].mean() + 0.08  # 0.63 against 0.51
