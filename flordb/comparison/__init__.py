"""Cross-run comparison: does run B log the same values as run A?

``compare(a, b)`` selects one recorded run per side, aligns every compared log
name on the loop coordinates the two sides share, checks the values with
``numpy.isclose`` semantics and says where they first diverge::

    c = flor.compare("20261126-060956-f3f131", "lr = 0.01", on=["loss"], rtol=1e-5)
    c.agree               # bool
    c.first_divergence    # Divergence(name, coordinates, a, b) or None
    c.frame               # aligned rows: name, loop coordinates, a, b, abs_diff, rel_diff, match, side
    c.summary             # one row per compared name
    c.plot("loss")        # matplotlib Figure: overlay and difference

A side is a run id (or a unique prefix), a version (prefix of the snapshot
commit) that was recorded by exactly one run, or a SQL predicate over the
columns of ``logs`` (``"lr = 0.01"``, ``"version = 'a81c0d2...'"``). A side
that selects several runs is an error that names them.

Alignment (:func:`align`): a name is joined on the loop names both sides'
paths share. Same path: one row per coordinate. One side deeper
(``acc`` per epoch vs per step): the shallower value is repeated on each
deeper coordinate, as in the ``logs`` view. Both sides deeper along
different loops (``epoch/step`` vs ``epoch/batch``): rows are paired in order
within each shared coordinate. Rows one side lacks are kept and counted.

Values: numbers are compared with ``isclose(a, b, rtol, atol)`` (tolerance
relative to B, like numpy); NaN equals NaN only when both are NaN; NULL counts
as NaN. Non-numeric values must be equal. ``rel_diff`` is ``abs_diff / |b|``.
"""

from flordb.comparison.align import DEFAULT_ATOL, DEFAULT_RTOL, align, check
from flordb.comparison.core import compare
from flordb.comparison.result import Comparison, Divergence, Side
from flordb.comparison.sides import parse_map, resolve_side

__all__ = ["compare", "Comparison", "Divergence", "Side", "align", "check", "parse_map", "resolve_side",
           "DEFAULT_ATOL", "DEFAULT_RTOL"]
