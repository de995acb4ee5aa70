"""Place a statement from the current code into an old version of the file.

Hindsight logging replays old runs with a statement they never had. The old
file must keep its text (decision 6 of DESIGN.md): one line is inserted and
every other line stays byte-identical, so tracebacks, line numbers and
comments of the replayed code are those of the original run.

``propagate`` (pipeline.py) is a pipeline of small steps over ``ast`` trees::

    target.py       target_path       where the statement sits in the current code
    frames.py       match_frames      its enclosing functions, loops and blocks in the old code
    computation.py                    (loops, ifs, functions matched by what they compute)
    search.py       search_block      the old block, by content, inside a function the old code lacks
    names.py        rename_map        what the old code calls the names the statement reads
    place.py        choose_gap        between which two old statements it goes
    check.py        check_defined     everything it reads exists there, on every path
    text.py         splice            the patched old text

model.py holds the shared types; preview.py the ``--dry-run`` diffs. No
module is named ``propagate``: importing it would replace the function
``flordb.hindsight.propagate`` with a module.

Any step that is not confident raises ``PropagationError`` with a reason: a
refusal costs the user a question, a wrong placement costs them a wrong
answer they cannot see.
"""

from flordb.hindsight.propagation.pipeline import propagate
from flordb.hindsight.propagation.preview import preview

__all__ = ["propagate", "preview"]
