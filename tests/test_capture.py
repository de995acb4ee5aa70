"""Console capture (record/capture.py), the `console` table, and extraction of printed metrics."""

from __future__ import annotations

import io
import logging
import math
import subprocess
import sys

import pytest

from conftest import base_env, q, readme_block, record, spawn

from flordb.record import capture
from flordb.record.capture import Capture, _handler
from flordb.record.streams import BlockTee, LineTee, raw
from flordb.record.context import MARK, Blocks

PRINTS = """
import logging, sys
import flordb as flor

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
log = logging.getLogger("train")
lr = flor.arg("lr", 0.5)
loss = 10.0
for epoch in flor.loop("epoch", range(3)):
    for step in flor.loop("step", range(4)):
        loss = loss * lr + 0.25
        print(f"| epoch {epoch} | step {step} | lr {lr:.2f} | loss {loss:.4f} | ppl {2.0 ** loss:.3f}")
    log.info("epoch %d done, acc=%.3f", epoch, 1.0 / (1.0 + loss))
    print("eval:", {"val_loss": round(loss * 1.1, 4)}, file=sys.stderr)
print("training finished")
"""


def truth(lr=0.5):
    """The values PRINTS printed, per (epoch, step)."""
    loss, out = 10.0, {}
    for epoch in range(3):
        for step in range(4):
            loss = loss * lr + 0.25
            out[(epoch, step)] = loss
    return out


# Python's own default (stdout to a pipe or file is block-buffered), and ``python -u``: each takes its own path.
STDOUT_MODES = pytest.mark.parametrize("unbuffered", ["", "1"], ids=["block-buffered", "unbuffered"])


@STDOUT_MODES
def test_console_table_has_lines_with_coordinates(project, unbuffered):
    proc = record(project, PRINTS, env={"PYTHONUNBUFFERED": unbuffered}, check=True)
    # The terminal still shows everything.
    assert proc.stdout.count("| epoch") == 12 and "training finished" in proc.stdout
    assert "epoch 2 done" in proc.stderr and "val_loss" in proc.stderr
    df = q(project, "SELECT path, coord, channel, logger, level, text FROM console ORDER BY seq")
    steps = df[df.text.str.startswith("| epoch")]
    assert len(steps) == 12
    assert [list(c) for c in steps.coord[:5]] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    assert set(steps.channel) == {"stdout"} and list(steps.path.iloc[0]) == ["epoch", "step"]
    logged = df[df.logger == "train"]
    assert len(logged) == 3 and set(logged.level) == {"INFO"}
    assert [list(c) for c in logged.coord] == [[0], [1], [2]]
    assert logged.text.iloc[0].startswith("epoch 0 done")
    # The record's stream copy (its handler predates the capture) is not a second row.
    assert df.text.str.contains("epoch 0 done").sum() == 1
    evals = df[df.text.str.startswith("eval:")]
    assert set(evals.channel) == {"stderr"} and [list(c) for c in evals.coord] == [[0], [1], [2]]
    last = df[df.text == "training finished"]
    assert list(last.coord.iloc[0]) == [] and last.channel.iloc[0] == "stdout"
    assert not df.text.str.startswith("flordb:").any()


def test_block_buffered_output_goes_out_while_the_run_runs(project):
    """A job's log file or pipe gets a printed line within a fraction of a second, not at the end."""
    import select
    import time

    script = """
import sys, time
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    print(f"epoch {epoch} started")
    time.sleep(8 if epoch == 0 else 0)
print("done")
"""
    proc = spawn(project, script, env={"PYTHONUNBUFFERED": ""})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 6.0)
        assert ready and proc.poll() is None, "the line waited for the end of the run"
        assert proc.stdout.readline() == "epoch 0 started\n"
        t0 = time.time()
        out, err = proc.communicate(timeout=60)
        assert out == "epoch 1 started\ndone\n" and time.time() - t0 > 0.5, err
    finally:
        proc.kill()
    df = q(project, "SELECT coord, text FROM console ORDER BY seq")
    assert list(df.text) == ["epoch 0 started", "epoch 1 started", "done"]
    assert [list(c) for c in df.coord] == [[0], [1], []]


def test_text_printed_outside_loops_does_not_pile_up(project):
    """Printed outside any loop (nothing marks or cuts there), block-buffered text is still cut every half second."""
    script = """
import sys, time
import flordb as flor
from flordb.record import api
flor.arg("x", 1)  # the run starts
cap = api.current_run().capture
t0, printed, most = time.time(), 0, 0
while time.time() - t0 < 2.0:
    for _ in range(1000):
        print("a line outside any loop")
    printed += 1000
    most = max(most, len(cap.text))
print(f"held at most {most} pieces of {2 * printed}", file=sys.stderr)
assert most < 2 * printed / 4, "the text piled up"  # two pieces a print: at most a quarter of them at once
"""
    proc = record(project, script, env={"PYTHONUNBUFFERED": ""}, check=True)
    assert proc.stdout.count("a line outside any loop\n") == int(proc.stderr.split(" of ")[1].split()[0]) // 2


@STDOUT_MODES
def test_a_forked_child_prints_through_and_nothing_twice(project, unbuffered):
    """A DataLoader worker (a forked child) prints as before; the parent's held text is the parent's alone."""
    script = """
import os, sys
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    print(f"parent {epoch}")
    pid = os.fork()
    if pid == 0:
        print(f"child {epoch}")
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    print(f"parent {epoch} again")
"""
    proc = record(project, script, env={"PYTHONUNBUFFERED": unbuffered}, check=True)
    # Each line once, in order. (Without capture, a child that flushes the block-buffered stdout
    # it inherited writes the parent's buffered lines once more; capture sends them out before a fork.)
    assert proc.stdout.splitlines() == ["parent 0", "child 0", "parent 0 again", "parent 1", "child 1",
                                        "parent 1 again"]
    df = q(project, "SELECT coord, text FROM console WHERE run_id = (SELECT max(run_id) FROM runs) ORDER BY seq")
    assert list(df.text) == ["parent 0", "parent 0 again", "parent 1", "parent 1 again"]


def test_logging_is_listened_to_once_the_script_imported_it(monkeypatch):
    """Capture never imports ``logging`` itself; once imported, records are captured from the next cut on."""
    cap = Capture([0], Blocks(), max_lines=100, line_chars=200)
    module = sys.modules["logging"]
    monkeypatch.delitem(sys.modules, "logging")
    cap.listen()
    assert cap.handler is None
    monkeypatch.setitem(sys.modules, "logging", module)
    cap.take()
    try:
        assert cap.handler in logging.getLogger().handlers
        logging.getLogger("late").warning("acc=%.2f", 0.6)
        cap.take()
        assert cap.lines == [0, "logging", "late", logging.WARNING, "acc=0.60"]
    finally:
        cap.close()
    assert cap.handler not in logging.getLogger().handlers


def test_capture_off(project):
    record(project, PRINTS, env={"FLORDB_CAPTURE": "0"}, check=True)
    assert len(q(project, "SELECT * FROM console")) == 0
    assert len(q(project, "SELECT * FROM runs")) == 1


def test_ceiling_keeps_a_print_per_step_loop_bounded(project):
    script = """
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    for step in flor.loop("step", range(50_000)):
        print(f"step {step} loss {1.0 / (step + 1):.6f}")
    print(f"epoch {epoch} summary")
"""
    record(project, script, env={"FLORDB_CAPTURE_MAX_LINES": "2000", "FLORDB_CAPTURE_LINE_CHARS": "20"},
           check=True, timeout=300)
    df = q(project, "SELECT coord, channel, text FROM console ORDER BY seq")
    assert len(df) <= 2000 + 1
    steps = df[df.text.str.startswith("step ")]
    # Kept at a halving rate: the whole run stays covered, not only its start.
    assert {c[0] for c in steps.coord} == {0, 1}
    assert max(c[1] for c in steps.coord if c[0] == 1) > 40_000
    # Lines of other loop paths keep their own share.
    assert list(df[df.text.str.startswith("epoch")].text) == ["epoch 0 summary", "epoch 1 summary"]
    note = df[df.channel == "capture"]
    assert len(note) == 1 and note.text.iloc[0].split()[0].isdigit()
    assert int(note.text.iloc[0].split()[0]) + len(df) - 1 == 100_002
    assert df[df.channel == "stdout"].text.str.len().max() <= 21  # cut at 20 characters, plus the ellipsis


def test_tee_writes_through_and_cuts_lines():
    blocks, cur = Blocks(), [0]
    cap = Capture(cur, blocks, max_lines=10_000, line_chars=30)
    out = io.StringIO()
    tee = LineTee.over(out, "stdout", cap)
    tee.write("partial ")
    assert out.getvalue() == ""  # held until its line ends, as a line-buffered terminal does
    tee.write("line\nsecond\r\n")
    assert out.getvalue() == "partial line\nsecond\r\n"
    tee.write("progress 10%\rprogress 100%\n")
    tee.write("flordb: our own message\n")
    tee.write("x" * 100 + "\n")
    tee.write("no newline at the end")
    tee.flush()
    assert out.getvalue().startswith("partial line\nsecond\r\nprogress 10%\rprogress 100%\n")
    assert out.getvalue().endswith("x" * 100 + "\nno newline at the end")
    lines, notes = cap.drain(final=True)
    texts = lines[4::5]
    assert notes == []
    assert texts[:3] == ["partial line", "second", "progress 100%"]
    assert texts[3] == "x" * 30 + "…" and texts[4] == "no newline at the end"
    assert raw(tee) is out


def test_logging_record_written_through_the_tee_is_one_row():
    cap = Capture([0], Blocks(), max_lines=100, line_chars=200)
    out = io.StringIO()
    tee = LineTee.over(out, "stderr", cap)
    logger = logging.getLogger("flordb-test-capture")
    handler = logging.StreamHandler(tee)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addHandler(handler_of_capture := _handler(cap))
    logger.propagate = False
    try:
        logger.warning("acc=%.2f", 0.93)
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(handler_of_capture)
    assert out.getvalue() == "WARNING acc=0.93\n"
    cap.take()
    assert cap.lines == [0, "stderr", "flordb-test-capture", logging.WARNING, "WARNING acc=0.93"]


def _block_capture(cur, blocks, **kw):
    """A capture whose stdout is block-buffered (a file, as in a training job's log), as ``install`` sets it up."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    cap = Capture(cur, blocks, **kw)
    cap.block = BlockTee(out, cap)
    cap.marking = (cap.text.append, cap.marks.append)
    cap.batch = capture.BATCH
    cap.encoding["stderr"] = "utf-8"
    return cap, cap.block, out


@pytest.mark.parametrize("stdout", ["block-buffered", "line-buffered"])
def test_sampling_whole_runs_at_once_keeps_what_one_by_one_keeps(monkeypatch, stdout):
    """take() samples runs of one-line chunks of one loop at once; every kept line, count and note is as before."""
    def feed(cur, blocks, cap, tee, out):
        err = LineTee.over(io.StringIO(), "stderr", cap)
        text, mark = cap.marking or (lambda _: None,) * 2
        epoch = blocks.open(("epoch",), ())
        for e in range(6):
            step = blocks.open(("epoch", "step"), (e,))
            for i in range(3000):
                cur[0] = step + i
                text(MARK)
                mark(cur[0])
                if i % 997 == 5:
                    print(f"two\nlines {i}", file=tee)
                elif i % 1499 == 7:
                    print(f"partial {i}", end=" ", file=tee)  # completed by the next print
                elif i % 1201 == 3:
                    cap.note("logging", (f"record {i}", "train", 20), cur[0])
                elif i % 701 == 9:
                    print(f"to stderr {i}", file=err)
                else:
                    print(f"step {e} {i}", file=tee)
                if i % 1000 == 999:
                    cap.take()  # as the watcher does, at any point
            cur[0] = epoch + e
            text(MARK)
            mark(cur[0])
            print(f"epoch {e} done", file=tee)
        plain = blocks.open(("plain",), ())
        for i in range(5000):  # nothing but one line per step: whole cuts of one-line pieces
            cur[0] = plain + i
            text(MARK)
            mark(cur[0])
            print(f"plain {i}", file=tee)
            if i % 700 == 699:
                cap.take()
        tee.flush()
        lines, notes = cap.drain(final=True)
        return lines, notes, (cap.seen, cap.kept, cap.dropped, cap.unkept), out.buffer.getvalue()

    def run():
        blocks, cur = Blocks(), [0]
        if stdout == "block-buffered":
            return feed(cur, blocks, *_block_capture(cur, blocks, max_lines=2000, line_chars=50))
        cap = Capture(cur, blocks, max_lines=2000, line_chars=50)
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", line_buffering=True)
        return feed(cur, blocks, cap, LineTee.over(out, "stdout", cap), out)

    bulk = run()
    monkeypatch.setattr(capture, "_one_line_each", lambda *a: False)
    monkeypatch.setattr(capture, "_one_line_each_part", lambda *a: False)
    monkeypatch.setattr(Capture, "_periodic", lambda *a: False)
    assert run() == bulk
    lines, _, (seen, kept, dropped, _), written = bulk
    assert 0 < kept < seen and dropped > 0 and "epoch 5 done" in lines[4::5]
    assert "to stderr 9" in lines[4::5] and "record 3" in lines[4::5]
    # The file got every line, in order, and no mark.
    expected = []
    for e in range(6):
        for i in range(3000):
            if i % 997 == 5:
                expected.append(f"two\nlines {i}\n")
            elif i % 1499 == 7:
                expected.append(f"partial {i} ")
            elif i % 1201 == 3 or i % 701 == 9:
                continue
            else:
                expected.append(f"step {e} {i}\n")
        expected.append(f"epoch {e} done\n")
    expected += [f"plain {i}\n" for i in range(5000)]
    assert written == "".join(expected).encode()
    assert "plain 4999" not in lines[4::5] and "plain 0" in lines[4::5]  # sampled, at its own path's rate
    # Each kept line is at the coordinates it was printed at.
    for ctx, text in zip(lines[0::5], lines[4::5]):
        if text.startswith("step "):
            e, i = map(int, text.split()[1:])
            assert (ctx & ((1 << 32) - 1)) == i


def test_a_held_back_block_tee_cuts_its_own_text():
    """What the watcher sets when text piles up: each print cuts once more than the limit waits."""
    blocks, cur = Blocks(), [0]
    cap, tee, out = _block_capture(cur, blocks, max_lines=100, line_chars=200)
    tee.hold_back(50)
    most = 0
    for i in range(1000):
        print(f"line {i}", file=tee)
        most = max(most, len(cap.text))
    assert most <= 51 and out.buffer.getvalue().startswith(b"line 0\nline 1\n")
    tee.hold_back(None)
    print("free again", file=tee)
    assert cap.text[-2:] == ["free again", "\n"] and tee.state == "capture"


def test_block_tee_holds_text_back_until_a_flush_and_keeps_the_stream_api():
    blocks, cur = Blocks(), [0]
    cap, tee, out = _block_capture(cur, blocks, max_lines=100, line_chars=200)
    print("one", file=tee)
    tee.write("two\n")
    tee.buffer.write("bytes \xe9\n".encode())
    tee.writelines(["three\n", "four\n"])
    assert out.buffer.getvalue() == b""  # block-buffered, as the stream itself was
    tee.flush()
    assert out.buffer.getvalue() == "one\ntwo\nbytes \xe9\nthree\nfour\n".encode()
    assert tee.encoding == "utf-8" and not tee.isatty() and tee.writable() and not tee.closed
    print("not encodable \ud800 in utf-8", file=tee)
    tee.flush()  # written escaped: the print returned long before; training never fails for it
    assert out.buffer.getvalue().endswith(b"not encodable \\ud800 in utf-8\n")
    tee.reconfigure(line_buffering=True)  # as a script may ask for, to see each line at once
    print("at once", file=tee)
    assert out.buffer.getvalue().endswith(b"at once\n")
    tee.stop()
    print("after the run", file=tee)
    assert out.buffer.getvalue().endswith(b"after the run\n")
    lines, _ = cap.drain(final=True)
    assert lines[4::5][:3] == ["one", "two", "bytes \xe9"] and "at once" in lines[4::5]
    assert "after the run" not in lines[4::5]
    assert raw(tee) is out


# -- extraction ----------------------------------------------------------------------------------

@pytest.fixture
def printed(project):
    record(project, PRINTS, check=True)
    record(project, PRINTS, "--kwargs", "lr=0.25", check=True)
    return project


def test_query_extracts_a_printed_metric(printed):
    from flordb.api import query
    from flordb.store.layout import locate

    df = query("SELECT run_id, lr, epoch, step, ppl, loss FROM logs ORDER BY lr, epoch, step", replay="yes",
               layout=locate(printed))
    assert len(df) == 24
    for lr in (0.25, 0.5):
        want = truth(lr)
        part = df[df.lr == lr]
        for (epoch, step), loss in want.items():
            row = part[(part.epoch == epoch) & (part.step == step)].iloc[0]
            assert row.loss == float(f"{loss:.4f}")
            assert row.ppl == float(f"{2.0 ** loss:.3f}")
    prov = q(printed, 'SELECT DISTINCT "replay.loss" AS p FROM logs')
    assert len(prov) == 2 and all(p.startswith("extract-") for p in prov.p)
    # Recorded in the catalog like a replay, with its own strategy.
    reps = q(printed, "SELECT strategy, status FROM replays WHERE list_contains(names, 'loss')")
    assert set(reps.strategy) == {"extract"} and set(reps.status) == {"extracted"}


def test_extract_cli_preview_pattern_and_comparison(printed):
    flordb = [sys.executable, "-m", "flordb"]
    env = base_env(printed)

    def run(*args):
        return subprocess.run([*flordb, *args], cwd=printed, env=env, capture_output=True, text=True, timeout=120)

    pre = run("extract", "acc", "--preview", "-f", "csv")
    assert pre.returncode == 0, pre.stderr
    lines = pre.stdout.strip().splitlines()
    assert lines[0].startswith("run_id,path,coord,acc") and len(lines) == 7
    assert len(q(printed, "SELECT * FROM records WHERE name = 'acc'")) == 0  # preview writes nothing
    bad = run("extract", "loss", "--pattern", "loss [0-9.]+")
    assert bad.returncode == 2 and bad.stderr.startswith("Error:") and "group" in bad.stderr
    nothing = run("extract", "grad_norm")
    assert nothing.returncode == 2 and "no captured console line" in nothing.stderr
    done = run("extract", "val_loss", "--pattern", r"'val_loss': ([0-9.]+)")
    assert done.returncode == 0, done.stderr
    vals = q(printed, "SELECT run_id, coord, num FROM records WHERE name = 'val_loss' ORDER BY run_id, coord")
    assert len(vals) == 6 and {tuple(c) for c in vals.coord} == {(0,), (1,), (2,)}
    # The current code logs acc: the replayed value is the reference the printed one is checked against.
    script = printed / "train.py"
    script.write_text(script.read_text().replace(
        '    log.info("epoch %d done', '    flor.log("acc", 1.0 / (1.0 + loss))\n    log.info("epoch %d done'))
    from flordb.hindsight.api import replay
    from flordb.store.layout import locate

    replay(["acc"], yes=True, layout=locate(printed), progress=False)
    same = run("extract", "acc")
    assert same.returncode == 0, same.stderr
    assert "6 printed values agree" in same.stderr
    # A pattern that reads another number disagrees, and says so with exit code 1.
    wrong = run("extract", "acc", "--preview", "--pattern", r"epoch (\d+) done")
    assert wrong.returncode == 1 and "disagree" in wrong.stderr


def test_the_first_printed_line_with_a_number_wins(project):
    record(project, """
import flordb as flor
for epoch in flor.loop("epoch", range(2)):
    print("loss: n/a (warming up)")
    print(f"loss: {0.5 + epoch}")
    print(f"loss: {9.5 + epoch}")
""", check=True)
    from flordb.hindsight.extract import rows, scan
    from flordb.store.catalog import Catalog
    from flordb.store.layout import locate

    with Catalog(locate(project)) as cat:
        cat.ingest()
        ex = scan(cat, "loss", r"loss: (\S+)")  # also matches "n/a": not a number, so the next line counts
        found = [(c, v, line) for _, _, c, v, line in rows(cat)]
    assert found == [((0,), "0.5", "loss: 0.5"), ((1,), "1.5", "loss: 1.5")]
    assert ex.values == 2 and ex.duplicates == 2  # two lines with a number at each coordinate


def test_extraction_beside_logged_names(project):
    """A run that logs some names and prints others: the printed one is extracted, a logged one never is."""
    record(project, """
import flordb as flor
for epoch in flor.loop("epoch", range(3)):
    loss = 1.0 / (1 + epoch)
    flor.log("loss", loss)
    print(f"epoch {epoch} loss {loss:.3f} ppl {2 ** loss:.3f}")
""", check=True)
    from flordb.hindsight.extract import extract
    from flordb.store.catalog import Catalog
    from flordb.store.layout import locate

    with Catalog(locate(project)) as cat:
        cat.ingest()
        ppl = extract(cat, "ppl")
        loss = extract(cat, "loss")
    assert len(ppl.written) == 1 and not ppl.skipped
    assert not loss.written and list(loss.skipped.values()) == ["the run logged it itself"]
    assert loss.comparison.compared == 3 and not loss.comparison.disagree
    df = q(project, 'SELECT epoch, loss, ppl, "replay.ppl" AS pp FROM logs ORDER BY epoch')
    assert df.ppl.tolist() == [2.0, 1.414, 1.26] and df.loss.tolist() == [1.0, 0.5, 1 / 3]
    assert all(p.startswith("extract-") for p in df.pp)
    assert len(q(project, "SELECT * FROM fidelity")) == 0


def test_default_pattern_names_with_like_wildcards(printed):
    """``_`` and ``%`` in a name are literal in the scan's cheap prefilter, as in the regex."""
    from flordb.hindsight.extract import scan
    from flordb.store.catalog import Catalog
    from flordb.store.layout import locate

    with Catalog(locate(printed)) as cat:
        cat.ingest()
        assert scan(cat, "val_loss").values == 6  # printed as {'val_loss': ...} on stderr
        assert scan(cat, "val%loss").values == 0 and scan(cat, "valXloss").values == 0
        assert scan(cat, "it's\\").values == 0  # a quote and a backslash in the SQL literal


def test_a_failed_segment_write_leaves_nothing_half_done(printed, monkeypatch):
    import pyarrow.parquet as pq

    from flordb.hindsight.extract import extract
    from flordb.store.catalog import Catalog
    from flordb.store.layout import locate

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    layout = locate(printed)
    with Catalog(layout) as cat:
        cat.ingest()
        with monkeypatch.context() as m:
            m.setattr(pq, "write_table", full)
            with pytest.raises(OSError, match="No space left"):
                extract(cat, "loss")
        # the catalog has none of it, and no directory is left behind
        assert cat.execute("SELECT count(*) FROM records WHERE name = 'loss'").fetchone()[0] == 0
        assert cat.execute("SELECT count(*) FROM replays WHERE strategy = 'extract'").fetchone()[0] == 0
        assert not [d for d in (layout.home / "segments").iterdir() if d.name.startswith("extract-")]
        done = extract(cat, "loss")  # the disk has room again
        assert len(done.written) == 2
    assert len(q(printed, "SELECT loss FROM logs WHERE loss IS NOT NULL")) == 24


def test_tolerance_follows_printed_digits():
    from flordb.hindsight.extract import default_pattern, tolerance
    import re

    assert math.isclose(tolerance("183.5"), 0.05) and math.isclose(tolerance("1e-3"), 0.0005)
    assert math.isclose(tolerance("2.50E+01"), 0.05)
    pat = re.compile(default_pattern("loss"))
    assert pat.search("| loss 5.21 | ppl 183.5").group(1) == "5.21"
    assert pat.search("{'loss': 0.001}").group(1) == "0.001"
    assert pat.search("Loss=3e-4,").group(1) == "3e-4"
    assert pat.search("val_loss 3.0 loss_scale 2") is None


def test_readme_console_and_extract_examples_run_as_written(project):
    record(project, readme_block("logging.basicConfig(level=logging.INFO, format="), check=True)
    df = q(project, "SELECT coord, channel, level, text FROM console ORDER BY seq")
    shown = [([int(x) for x in c], ch, lv if isinstance(lv, str) else None, t)
             for c, ch, lv, t in df.itertuples(index=False)][:3]
    assert shown == [([0], "stdout", None, "| epoch 0 | lr 0.50 | loss 0.5000 | ppl 1.65"),
                     ([0], "logging", "INFO", "epoch 0 done"),
                     ([1], "stdout", None, "| epoch 1 | lr 0.50 | loss 0.2500 | ppl 1.28")]
    env = base_env(project)
    for line in readme_block("flordb extract ppl --preview", "bash").splitlines():
        cmd = line.split("#")[0].strip()
        proc = subprocess.run(["bash", "-c", cmd.replace("flordb ", f"{sys.executable} -m flordb ", 1)],
                              cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (cmd, proc.stderr)
    df = q(project, 'SELECT epoch, ppl, perplexity, "replay.ppl" AS p FROM logs ORDER BY epoch')
    assert df.ppl.tolist() == [1.65, 1.28, 1.18] and df.perplexity.tolist() == df.ppl.tolist()
    assert all(p.startswith("extract-") for p in df.p)


def test_extracted_values_are_segments_and_survive_rebuild(printed):
    from flordb.hindsight.api import replay
    from flordb.hindsight.extract import extract
    from flordb.store.catalog import Catalog
    from flordb.store.doctor import rebuild
    from flordb.store.layout import locate

    layout = locate(printed)
    with Catalog(layout) as cat:
        cat.ingest()
        first = extract(cat, "loss")
        assert len(first.written) == 2
    with Catalog(layout) as cat:
        second = extract(cat, "loss")  # again: replaces the first extraction's values, no duplicates
    # The current code logs acc: replayed values are the reference; extraction keeps them.
    script = printed / "train.py"
    script.write_text(script.read_text().replace(
        '    log.info("epoch %d done', '    flor.log("acc", 1.0 / (1.0 + loss))\n    log.info("epoch %d done'))
    replay(["acc"], yes=True, layout=layout, progress=False, where="epoch = 0")
    with Catalog(layout) as cat:
        extract(cat, "acc")  # epochs 1, 2: printed values; epoch 0 keeps the replayed one
    # The values are segments: one directory per extraction, its rows naming their runs.
    dirs = sorted(d.name for d in (layout.home / "segments").iterdir() if d.name.startswith("extract-"))
    assert len(dirs) == 3 and all(any(v.startswith(d + "-") for d in dirs) for v in second.written.values())
    sql = ('SELECT run_id, epoch, step, loss, "replay.loss" AS pl FROM logs WHERE loss IS NOT NULL'
           " ORDER BY ALL")
    acc_sql = 'SELECT run_id, epoch, acc, "replay.acc" AS pa FROM logs WHERE acc IS NOT NULL ORDER BY ALL'
    before, acc_before = q(printed, sql), q(printed, acc_sql)
    assert len(before) == 24 and set(before.pl) == set(second.written.values())
    assert len(acc_before) == 6 and sum(not p.startswith("extract-") for p in acc_before.pa) == 2
    old, _, _ = rebuild(layout)
    assert old is not None
    after, acc_after = q(printed, sql), q(printed, acc_sql)
    assert after.equals(before) and acc_after.equals(acc_before)
