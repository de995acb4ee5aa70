"""Unit tests of :mod:`flordb.hindsight.analyze`: where a statement sits, and
whether replay may skip the nested loop (DESIGN decision 5), on source strings."""

from __future__ import annotations

import textwrap

import pytest

from flordb.errors import HindsightError
from flordb.hindsight.analyze import AFTER, BEFORE, NESTED, PREFIX, SUFFIX, placement


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(source: str, needle: str) -> int:
    hits = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def place(source: str, needle: str, **kw):
    return placement(source, line_of(source, needle), **kw)


TRAIN = src('''
    import torch
    import flordb as flor

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    flor.log("prefix_stmt", 1)
    with flor.checkpointing(net=net, opt=opt):
        for epoch in flor.loop("epoch", range(3)):
            net.train()
            flor.log("before_stmt", net.weight.norm().item())
            for x, y in flor.loop("step", [(torch.ones(2), torch.ones(1))]):
                opt.zero_grad()
                loss = ((net(x) - y) ** 2).mean()
                loss.backward()
                flor.log("inside_stmt", torch.nn.utils.clip_grad_norm_(net.parameters(), 1e9).item())
                opt.step()
            flor.log("after_stmt", net.weight.norm().item())
    flor.log("suffix_stmt", net.weight.norm().item())
''')


@pytest.mark.parametrize("needle, position", [
    ('"prefix_stmt"', PREFIX),
    ('"before_stmt"', BEFORE),
    ('"inside_stmt"', NESTED),
    ('"after_stmt"', AFTER),
    ('"suffix_stmt"', SUFFIX),
])
def test_positions(needle, position):
    p = place(TRAIN, needle)
    assert p.position == position
    assert p.main_loop == "epoch"


def test_main_level_statement_may_skip_when_only_checkpointed_objects_change():
    for needle in ('"before_stmt"', '"after_stmt"'):
        p = place(TRAIN, needle)
        assert p.skip_nested, p.reason
        assert p.nested_loop == "step"
    assert "step" in place(TRAIN, '"after_stmt"').describe()


def test_inside_nested_loop_never_skips():
    p = place(TRAIN, '"inside_stmt"')
    assert not p.skip_nested
    assert p.nested_loop == "step"
    assert "inside" in p.describe()


def test_running_total_read_after_the_loop_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                total = 0.0
                for s in flor.loop("step", range(4)):
                    loss = 1.0 / (s + 1)
                    total += loss
                    w[0] += loss
                flor.log("avg", total / 4)
    ''')
    p = place(s, '"avg"')
    assert p.position == AFTER
    assert not p.skip_nested
    assert "total" in p.reason


def test_body_variable_read_by_next_iterations_pre_code_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        loss = None
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                flor.log("prev", loss)
                for s in flor.loop("step", range(4)):
                    loss = s * 2.0
                    w[0] += loss
                flor.log("w", w[0])
    ''')
    p = place(s, '"w", w[0]')
    assert not p.skip_nested
    assert "loss" in p.reason


def test_body_variable_read_after_the_main_loop_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(4)):
                    last = s * 2.0
                    w[0] += last
                flor.log("w", w[0])
        flor.log("final", last)
    ''')
    assert not place(s, '"w", w[0]').skip_nested
    assert not place(s, '"final"').skip_nested


def test_body_variable_read_after_the_main_loop_at_top_level_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        flor.checkpointing  # noqa
        for epoch in flor.loop("epoch", range(3)):
            for s in flor.loop("step", range(4)):
                last = s * 2.0
                w[0] += last
            flor.log("w", w[0])
        flor.log("final", last)
    ''')
    assert not place(s, '"w", w[0]').skip_nested


def test_mutating_a_plain_container_in_the_body_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        history = []
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(4)):
                    history.append(s)
                    w[0] += s
                flor.log("hist_len", len(history))
    ''')
    p = place(s, '"hist_len"')
    assert not p.skip_nested
    assert "history" in p.reason


def test_item_assignment_on_a_plain_dict_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        stats = {"n": 0}
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(4)):
                    stats["n"] += 1
                    w[0] += s
                flor.log("n", stats["n"])
    ''')
    assert not place(s, '"n", stats').skip_nested


def test_body_locals_not_read_outside_and_module_calls_do_not_block_skipping():
    # `loss`, `x`, `y` are body locals nobody reads outside; `torch.nn.utils...` is a call
    # on a module (not a change to a user variable) and the post-code reads `torch` too.
    s = src('''
        import torch
        import flordb as flor
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        with flor.checkpointing(net=net, opt=opt):
            for epoch in flor.loop("epoch", range(3)):
                for x, y in flor.loop("step", [(torch.ones(2), torch.ones(1))]):
                    loss = ((net(x) - y) ** 2).mean()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                with torch.no_grad():
                    flor.log("out", net(torch.ones(2)).item())
    ''')
    p = place(s, '"out"')
    assert p.position == AFTER
    assert p.skip_nested, p.reason


def test_checkpointed_scheduler_stepped_after_the_loop_is_skippable():
    s = src('''
        import torch
        import flordb as flor
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1)
        with flor.checkpointing(net=net, opt=opt, sched=sched):
            for epoch in flor.loop("epoch", range(3)):
                for x in flor.loop("step", range(2)):
                    opt.step()
                    sched.last_epoch  # read only
                sched.step()
                flor.log("cur_lr", opt.param_groups[0]["lr"])
    ''')
    p = place(s, '"cur_lr"')
    assert p.position == AFTER and p.skip_nested, p.reason


def test_without_checkpointing_the_model_is_not_skippable():
    s = src('''
        import flordb as flor
        w = [0.0]
        for epoch in flor.loop("epoch", range(3)):
            for s in flor.loop("step", range(4)):
                w[0] += s
            flor.log("w", w[0])
    ''')
    p = place(s, '"w"')
    assert p.position == AFTER
    assert not p.skip_nested
    assert "w" in p.reason


def test_flat_main_loop_has_no_nested_loop():
    s = src('''
        import flordb as flor
        w = [0.0]
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                w[0] += 1
                flor.log("w", w[0])
    ''')
    p = place(s, '"w"')
    assert p.position == BEFORE
    assert p.nested_loop is None
    assert not p.skip_nested
    assert "no nested loop" in p.reason


def test_plain_python_inner_loop_is_not_a_nested_flor_loop():
    s = src('''
        import flordb as flor
        w = [0.0]
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in range(4):
                    w[0] += s
                    flor.log("w_inner", w[0])
    ''')
    p = place(s, '"w_inner"')
    assert p.position == BEFORE and p.nested_loop is None


def test_main_loop_inside_a_function():
    s = src('''
        import torch
        import flordb as flor

        def train(net, opt):
            with flor.checkpointing(net=net, opt=opt):
                for epoch in flor.loop("epoch", range(3)):
                    for x in flor.loop("step", range(2)):
                        opt.step()
                    flor.log("wn", net.weight.norm().item())

        net = torch.nn.Linear(2, 1)
        train(net, torch.optim.SGD(net.parameters(), lr=0.1))
    ''')
    p = place(s, '"wn"')
    assert p.position == AFTER and p.main_loop == "epoch" and p.skip_nested, p.reason


def test_second_nested_loop_is_inside_nested():
    s = src('''
        import flordb as flor
        w = [0.0]
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(4)):
                    w[0] += s
                for b in flor.loop("eval", range(2)):
                    flor.log("ev", w[0] * b)
    ''')
    p = place(s, '"ev"')
    assert p.position == NESTED and p.nested_loop == "eval" and not p.skip_nested


def test_bare_imported_names_and_aliases():
    s = src('''
        from flordb import log, loop, checkpointing
        w = [0.0]
        with checkpointing(w=w):
            for epoch in loop("epoch", range(3)):
                for s in loop("step", range(4)):
                    w[0] += s
                log("w", w[0])
    ''')
    p = place(s, 'log("w"')
    assert p.position == AFTER and p.main_loop == "epoch" and p.skip_nested, p.reason


def test_script_without_flor_loop_is_prefix():
    s = src('''
        import flordb as flor
        flor.log("x", 1)
    ''')
    p = place(s, '"x"')
    assert p.position == PREFIX and p.main_loop is None


def test_main_loop_hint_picks_among_top_level_loops():
    s = src('''
        import flordb as flor
        for a in flor.loop("warmup", range(2)):
            pass
        flor.log("between", 1)
        for e in flor.loop("epoch", range(3)):
            pass
    ''')
    assert place(s, '"between"').position == SUFFIX  # after 'warmup'
    p = place(s, '"between"', main_loop="epoch")
    assert p.position == PREFIX and p.main_loop == "epoch"


def test_line_without_a_statement_start_raises():
    with pytest.raises(HindsightError):
        placement(TRAIN, 10_000)


def test_body_variable_read_after_the_main_loop_inside_the_with_block_is_not_skipped():
    s = src('''
        import flordb as flor
        w = [0.0]
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(4)):
                    last = s * 2.0
                    w[0] += last
                flor.log("w", w[0])
            flor.log("final", last)
    ''')
    assert not place(s, '"w", w[0]').skip_nested
    assert place(s, '"final"').position == SUFFIX
    assert not place(s, '"final"').skip_nested


def test_body_variable_read_after_the_main_loop_inside_a_function_is_not_skipped():
    s = src('''
        import flordb as flor

        def train(w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(4)):
                    last = s * 2.0
                    w[0] += last
                flor.log("w", w[0])
            return last

        w = [0.0]
        with flor.checkpointing(w=w):
            flor.log("final", train(w))
    ''')
    assert not place(s, '"w", w[0]').skip_nested
