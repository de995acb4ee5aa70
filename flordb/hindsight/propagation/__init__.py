"""Place a statement from the current code into an old version of the file.

Hindsight logging replays old runs with a statement they never had. The old
file must keep its text (decision 6 of DESIGN.md): one line is inserted and
every other line stays byte-identical, so tracebacks, line numbers and
comments of the replayed code are those of the original run.

``propagate`` is a pipeline of small steps over ``ast`` trees, one module each::

    target_path      where the statement sits in the current code
    match_frames     the enclosing functions/loops/blocks in the old code
    final_blocks     the block of the old code the statement belongs to
    rename_map       what the old code calls the variables the statement reads
    choose_gap       between which two old statements it goes
    check_defined    every name it reads exists there
    splice           the patched old text

Any step that is not confident raises ``PropagationError`` with a reason: a
refusal costs the user a question, a wrong placement costs them a wrong
answer they cannot see.
"""

from flordb.hindsight.propagation.pipeline import propagate
from flordb.hindsight.propagation.preview import preview

__all__ = ["propagate", "preview"]
