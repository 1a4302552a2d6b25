"""The book's conclusions as checks on its data.

Every conclusion a chapter draws from runs is a :class:`Claim`: a named check on the results
table that yields a verdict and its evidence (the numbers compared, how many seeds, their
spread). The chapter shows its claims as a table and writes its "What it means" from them, so
that the sentence a reader sees is the one the data supports; the tests evaluate every chapter's
claims, so a rerun that changes the data cannot leave the prose behind.

Two rules keep the evidence honest:

- a difference between two methods counts only when their seeds do not overlap: every seed of
  one is below every seed of the other (:func:`compare`); with one seed on either side the
  evidence says "one seed", and the verdict is that of the two numbers;
- the evidence names how many seeds and how many grid points a verdict rests on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from IPython.display import Markdown


@dataclass(frozen=True)
class Claim:
    """One conclusion and its verdict.

    ``text`` is the sentence the chapter states (already the one the verdict supports, see
    :func:`claim`), ``holds`` the verdict (None where the claim is a measurement rather than a
    yes-or-no statement), ``evidence`` the numbers it rests on, ``paper`` what the source paper
    reports for the same claim ("" where it reports nothing comparable)."""

    name: str
    text: str
    holds: bool | None
    evidence: str
    paper: str = ""


def claim(name: str, holds: bool | None, text: str, otherwise: str | None = None, *, evidence: str,
          paper: str = "") -> Claim:
    """A :class:`Claim` whose sentence is ``text`` where ``holds`` is true (or None) and
    ``otherwise`` where it is false (``"Not so: " + text`` when no ``otherwise`` is given).

    Raises ValueError for empty evidence: a claim without its numbers is not a claim."""
    if not evidence.strip():
        raise ValueError(f"claim {name!r} has no evidence: give the numbers it rests on")
    if holds is not None:
        holds = bool(holds)
    sentence = text if holds is not False else (otherwise or f"Not so: {text}")
    return Claim(name=name, text=sentence, holds=holds, evidence=evidence, paper=paper)


@dataclass(frozen=True)
class Summary:
    """Values over seeds: their mean, sample standard deviation (0 for one seed), count and range."""

    mean: float
    std: float
    n: int
    low: float
    high: float

    def describe(self, fmt: str = ".3g") -> str:
        """``mean ± std (n seeds)``, or ``value (one seed)``."""
        if self.n == 1:
            return f"{self.mean:{fmt}} (one seed)"
        return f"{self.mean:{fmt}} ± {self.std:{fmt}} ({self.n} seeds, {self.low:{fmt}} to {self.high:{fmt}})"


def summary(values: Iterable[float]) -> Summary:
    """:class:`Summary` of the finite ``values`` (one per seed). Raises ValueError if none is finite."""
    array = np.asarray([float(v) for v in values], dtype=float)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise ValueError("no finite value to summarise")
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return Summary(float(finite.mean()), std, int(finite.size), float(finite.min()), float(finite.max()))


@dataclass(frozen=True)
class Comparison:
    """Two sets of per-seed values compared: ``lower`` names the side whose every seed is below
    every seed of the other ("a", "b"), or is None when their ranges overlap (a difference inside
    the seeds' spread is no difference). With one seed on both sides the two values decide, and
    ``one_seed`` says so."""

    a: Summary
    b: Summary
    names: tuple[str, str]
    lower: str | None
    one_seed: bool

    @property
    def ratio(self) -> float:
        """mean of a / mean of b."""
        return self.a.mean / self.b.mean if self.b.mean else math.inf

    def evidence(self, fmt: str = ".3g") -> str:
        verdict = {None: "ranges overlap", "a": f"{self.names[0]} lower", "b": f"{self.names[1]} lower"}[self.lower]
        return (f"{self.names[0]} {self.a.describe(fmt)} vs {self.names[1]} {self.b.describe(fmt)}: {verdict}"
                + ("; one seed, no spread to compare with" if self.one_seed else ""))


def compare(a: Iterable[float], b: Iterable[float], names: Sequence[str] = ("a", "b")) -> Comparison:
    """Compare per-seed values ``a`` and ``b`` (finite values only) by the rule of the module."""
    sa, sb = summary(a), summary(b)
    one_seed = sa.n == 1 or sb.n == 1
    lower = lower_side([sa.low, sa.high], [sb.low, sb.high])
    return Comparison(sa, sb, (names[0], names[1]), lower, one_seed)


def lower_side(a: Iterable[float], b: Iterable[float]) -> str | None:
    """The module's rule on per-seed values: "a" when every value of ``a`` is below every value
    of ``b``, "b" for the reverse, None when their ranges overlap. NaN counts as +inf (a diverged
    run is the worst); :func:`compare` passes only the finite values."""
    a = np.nan_to_num(np.asarray([float(v) for v in a]), nan=math.inf, posinf=math.inf)
    b = np.nan_to_num(np.asarray([float(v) for v in b]), nan=math.inf, posinf=math.inf)
    if a.max() < b.min():
        return "a"
    if b.max() < a.min():
        return "b"
    return None


def per_seed(table: pd.DataFrame, metric: str, **where) -> pd.Series:
    """The final ``metric`` of each run of ``table`` matching ``where`` (column == value; floats
    compared to 1e-9 relative): one value per seed. A diverged run gives its last recorded value,
    which may be NaN or inf; :func:`summary` and :func:`compare` use the finite ones. Raises
    ValueError when no run matches."""
    from .plots import final_rows

    rows = final_rows(table, metric)
    for column, value in where.items():
        if isinstance(value, float):
            rows = rows[np.isclose(rows[column].astype(float), value, rtol=1e-9, atol=0)]
        else:
            rows = rows[rows[column] == value]
    if rows.empty:
        raise ValueError(f"no run matches {where}")
    return rows[metric]


def table(claims: Sequence[Claim]):
    """The claims as a table: claim, the paper's figure, our evidence, verdict."""
    verdict = {True: "holds", False: "does not hold", None: "(a measurement)"}
    frame = pd.DataFrame([(c.text, c.paper, c.evidence, verdict[c.holds]) for c in claims],
                         columns=["claim", "paper", "evidence (reduced scale)", "verdict"])
    return frame.style.hide(axis="index")


def markdown(claims: Sequence[Claim]) -> Markdown:
    """The claims as a bulleted list for the chapter's prose: each sentence, its evidence after it."""
    return Markdown("\n".join(f"- {c.text} *({c.evidence})*" for c in claims))


def verdicts(claims: Sequence[Claim]) -> dict[str, bool | None]:
    """``{name: verdict}``; raises ValueError on a repeated name."""
    names = [c.name for c in claims]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"claims named twice: {repeated}")
    return {c.name: c.holds for c in claims}
