"""Propagation accuracy over the hand-written corpus of code-version pairs.

The number we promise is zero silent misplacements: a refusal costs the user
a question, a wrong placement a wrong answer. Each case in
tests/fixtures/propagate/<case>/ has new.py, old.py, case.json
({"lineno", "description", "expect": "insert" | "unchanged" | "refuse", and
for some refusals "reason", a fragment the reason must contain}) and, for
inserts, expected.py written by hand. A refusal for another reason counts as
a wrong refusal; a placement differing from expected.py, or any placement
where the corpus says refuse, is a silent error. "unchanged" cases (the old version
already has the statement) count as correct placements when the old text
comes back untouched.

    python benchmarks/propagation_accuracy.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flordb.errors import PropagationError  # noqa: E402
from flordb.hindsight.propagation import propagate  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "propagate"


def read(path: Path) -> str:
    """Read without newline translation: the patch must be byte-exact."""
    with open(path, newline="", encoding="utf-8") as f:
        return f.read()


def run_case(case_dir: Path) -> tuple[str, str, str]:
    """(expected, outcome, detail); outcome is one of the summary categories."""
    case = json.loads(read(case_dir / "case.json"))
    new, old = read(case_dir / "new.py"), read(case_dir / "old.py")
    expect = case["expect"]
    try:
        patched = propagate(new, case["lineno"], old)
    except PropagationError as exc:
        if expect == "refuse" and case.get("reason", "") not in exc.reason:
            return expect, "wrong refusal", f"refused for another reason than {case['reason']!r}: {exc.reason}"
        return expect, ("correct refusal" if expect == "refuse" else "wrong refusal"), exc.reason
    if expect == "refuse":
        return expect, "silent error", "placed a statement the corpus says to refuse"
    wanted = old if expect == "unchanged" else read(case_dir / "expected.py")
    if patched == wanted:
        return expect, "correct placement", ""
    return expect, "silent error", "differs from the expected file"


def main() -> int:
    cases = sorted(p for p in CORPUS.iterdir() if (p / "case.json").exists())
    counts = dict.fromkeys(
        ("correct placement", "correct refusal", "wrong refusal", "silent error"), 0)
    started, cpu0 = time.perf_counter(), time.process_time()
    width = max(len(p.name) for p in cases)
    print(f"{'case':<{width}}  {'expect':<9}  {'outcome':<17}  detail")
    for case_dir in cases:
        expect, outcome, detail = run_case(case_dir)
        counts[outcome] += 1
        print(f"{case_dir.name:<{width}}  {expect:<9}  {outcome:<17}  {detail[:100]}")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    print()
    print(f"pairs {len(cases)}, correct placements {counts['correct placement']}, "
          f"correct refusals {counts['correct refusal']}, wrong refusals {counts['wrong refusal']}, "
          f"silent errors {counts['silent error']}, total time {elapsed:.2f} s "
          f"({1000 * elapsed / len(cases):.1f} ms a pair; {cpu:.2f} s CPU; one thread)")
    return 1 if counts["silent error"] else 0


if __name__ == "__main__":
    sys.exit(main())
