"""Step 3: the old block holding the code around the statement, found by content."""

from __future__ import annotations

import ast

from flordb.errors import PropagationError
from flordb.hindsight.astmatch import ABSTRACT, BLOCK_FIELDS, EXACT
from flordb.hindsight.propagation.computation import align_blocks
from flordb.hindsight.propagation.frames import called_statements
from flordb.hindsight.propagation.model import Frame, Match, Version, describe


def search_block(new_block: list[ast.stmt], t: int, match: Match, new: Version, old: Version) -> Frame:
    """Find the old block holding the code around the statement, when no header says where.

    Used for statements in a function the old code lacks (an extracted
    helper): the old block must contain the statement's immediate neighbour
    and most of its siblings, and no other block may do as well.
    """
    region = [match.region] + [n for n in ast.walk(match.region) if isinstance(n, ast.stmt) and n is not match.region]
    region += called_statements(match.region, old)
    others = new_block[:t] + new_block[t + 1:]
    scored: list[tuple[int, Frame]] = []
    for node in region:
        for f in BLOCK_FIELDS:
            block = getattr(node, f, None)
            if isinstance(block, list) and block:
                score = _support(others, t, block, new, old)
                if score:
                    scored.append((score, Frame(node, f)))
    where = describe(match.searched.node)
    if not scored:
        raise PropagationError(
            f"the code around the statement in {where} has no counterpart in the old version")
    best = max(s for s, _ in scored)
    winners = [fr for s, fr in scored if s == best]
    if len(winners) > 1:
        lines = ", ".join(str(fr.block[0].lineno) for fr in winners)
        raise PropagationError(
            f"the code around the statement in {where} appears in several places in the old "
            f"version (blocks starting at lines {lines})")
    return winners[0]


def _support(others: list[ast.stmt], t: int, block: list[ast.stmt], new: Version, old: Version) -> int:
    """How many siblings a candidate block shares, or 0 when that is not convincing.

    Convincing means: an immediate neighbour is matched (renamed at most),
    and at least a third of the siblings, and at least two of them when
    there are two, are matched (a function that grew, like ``main_worker``
    with its distributed set-up, keeps fewer of its old statements).
    """
    strong = {p.new for p in align_blocks(others, block, new, old) if p.strength in (EXACT, ABSTRACT)}
    neighbours = {t - 1, t} & set(range(len(others)))
    if not neighbours & strong:
        return 0
    if len(strong) < min(2, len(others)) or 3 * len(strong) < len(others):
        return 0
    return len(strong)


