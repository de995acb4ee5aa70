"""``flordb compare A B``: do two runs log the same values?

Registered on the ``flordb`` group by :mod:`flordb.cli.main`. Exit codes: 0 when
every compared value agrees within tolerance, 1 when some value diverges (or
nothing could be compared), 2 on bad input, so it can gate CI.
"""

from __future__ import annotations

import json
import sys

import click

from flordb.cli.common import handle_errors
from flordb.comparison import DEFAULT_ATOL, DEFAULT_RTOL
from flordb.errors import CompareError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--on", "on", default=None, metavar="NAMES",
              help="Log names to compare, comma-separated (side A's names). Default: every name both sides log.")
@click.option("--map", "mapping", multiple=True, metavar="A_NAME=B_NAME",
              help="A metric the B side logs under another name, e.g. --map loss=train_loss (repeatable).")
@click.option("--rtol", type=float, default=DEFAULT_RTOL, show_default=True,
              help="Relative tolerance (numpy.isclose: |a-b| <= atol + rtol*|b|).")
@click.option("--atol", type=float, default=DEFAULT_ATOL, show_default=True, help="Absolute tolerance.")
@click.option("--strict", is_flag=True, help="Rows or names present on one side only count as a divergence.")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE.png", help="Write an overlay and difference plot of the compared names.")
@click.option("--yes", "-y", "replay", flag_value="yes",
              help="Replay names neither run recorded (but the current code logs) without asking.")
@click.option("--no-replay", "replay", flag_value="no", help="Never replay; fail on names neither run recorded.")
@handle_errors
def compare(a: str, b: str, on: str | None, mapping: tuple[str, ...], rtol: float, atol: float, strict: bool,
            fmt: str, plot_path: str | None, replay: str | None) -> None:
    """Compare the values two runs logged, step by step.

    A and B are each a run id (a unique prefix is enough), a version (prefix
    of the snapshot commit) or a SQL predicate over run and arg columns:

    \b
    flordb compare 20261126-0609 20261126-0610
    flordb compare RUN_A RUN_B --on loss,acc --rtol 1e-5 --atol 1e-8
    flordb compare "version = 'a81c0d2...'" "lr = 0.01" --on loss
    flordb compare RUN_A RUN_B --map loss=train_loss --plot loss.png

    Exit code 0: all agree; 1: some value diverges; 2: bad input.
    """
    from flordb.comparison import compare as run_compare

    result = run_compare(a, b, on=on, rtol=rtol, atol=atol, map=list(mapping), strict=strict,
                         replay=replay or "ask")
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=1, ensure_ascii=False, default=str))
    else:
        click.echo(result.report())
    if plot_path:
        fig = result.plot()
        try:
            fig.savefig(plot_path, dpi=110)
        except (OSError, ValueError) as exc:
            raise CompareError(f"cannot write the plot to {plot_path}: {getattr(exc, 'strerror', None) or exc}")
        click.echo(f"Wrote {plot_path}", err=True)
    sys.exit(0 if result.agree else 1)
