"""The rules by which the book's conclusions are decided (ibtools.claims)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibtools import claims

values = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=6)


@given(values, values)
def test_a_difference_counts_only_when_every_seed_of_one_side_is_below_the_other(a, b):
    result = claims.compare(a, b, ("A", "B"))
    assert result.lower == ("a" if max(a) < min(b) else "b" if max(b) < min(a) else None)
    mirrored = claims.compare(b, a, ("B", "A"))
    assert mirrored.lower == {"a": "b", "b": "a", None: None}[result.lower]
    assert result.one_seed == (len(a) == 1 or len(b) == 1)


def test_overlapping_seeds_are_no_difference_even_with_different_means():
    result = claims.compare([1.0, 2.0, 3.0], [2.5, 3.5, 4.5], ("IB", "EB"))
    assert result.a.mean < result.b.mean and result.lower is None
    assert "ranges overlap" in result.evidence()


def test_one_seed_is_said():
    result = claims.compare([0.41], [0.8, 0.9], ("IB", "EB"))
    assert result.lower == "a" and result.one_seed
    assert "one seed" in result.evidence()


def test_summary_ignores_non_finite_values_and_refuses_none():
    s = claims.summary([1.0, 3.0, math.nan, math.inf])
    assert (s.mean, s.n, s.low, s.high) == (2.0, 2, 1.0, 3.0)
    assert s.std == pytest.approx(math.sqrt(2.0))
    assert claims.summary([5.0]).describe() == "5 (one seed)"
    with pytest.raises(ValueError, match="no finite value"):
        claims.summary([math.nan])


def test_a_claim_states_the_sentence_its_verdict_supports():
    yes = claims.claim("c", True, "IB trains further.", "IB does not train further.", evidence="2.15x")
    no = claims.claim("c", False, "IB trains further.", "IB does not train further.", evidence="1x")
    assert (yes.text, yes.holds) == ("IB trains further.", True)
    assert (no.text, no.holds) == ("IB does not train further.", False)
    assert claims.claim("m", None, "IB costs 1.2x.", evidence="1.2x").text == "IB costs 1.2x."
    with pytest.raises(ValueError, match="no evidence"):
        claims.claim("c", True, "x", evidence=" ")
    with pytest.raises(ValueError, match="named twice"):
        claims.verdicts([yes, no])


def test_per_seed_reads_the_final_row_of_each_matching_run():
    rows = [dict(method=m, lr=lr, seed=s, kind="epoch", step=t, epoch=float(t), train_loss=10.0 * lr + s - t,
                 diverged=False) for m in ("eb", "ib") for lr in (0.1, 1.0) for s in range(3) for t in range(2)]
    table = pd.DataFrame(rows)
    got = claims.per_seed(table, "train_loss", method="ib", lr=1.0)
    np.testing.assert_allclose(sorted(got), [9.0, 10.0, 11.0])
    with pytest.raises(ValueError, match="no run matches"):
        claims.per_seed(table, "train_loss", method="sgd")


def test_table_and_markdown_show_every_claim_with_its_evidence():
    found = [claims.claim("a", True, "A holds.", evidence="1 vs 2", paper="yes"),
             claims.claim("b", None, "B measured.", evidence="3")]
    frame = claims.table(found).data
    assert list(frame["verdict"]) == ["holds", "(a measurement)"] and list(frame["paper"]) == ["yes", ""]
    text = claims.markdown(found).data
    assert "- A holds. *(1 vs 2)*" in text and "- B measured. *(3)*" in text


def test_lower_side_counts_a_diverged_seed_as_the_worst():
    assert claims.lower_side([0.1, 0.2], [0.3, math.nan]) == "a"
    assert claims.lower_side([0.1, math.inf], [0.3, 0.4]) is None
    assert claims.lower_side([math.nan], [0.3]) == "b"
    assert claims.lower_side([0.1, 0.5], [0.3]) is None
