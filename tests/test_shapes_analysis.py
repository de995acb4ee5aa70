"""Unit tests of the analysis through calls (issue 8), on source strings: where a statement
sits when loops live in functions, methods and generators, and when skipping is safe."""

from __future__ import annotations

import textwrap

from flordb.hindsight.analyze import AFTER, BEFORE, NESTED, PREFIX, SUFFIX, carried_state, nested_skip_safety, placement


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def place(source: str, needle: str, **kw):
    hits = [i for i, line in enumerate(source.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return placement(source, hits[0], **kw)


FUNCS = src('''
    import flordb as flor
    w = [0.0]

    def train(epoch):
        flor.log("t_before", epoch)
        for s in flor.loop("step", range(3)):
            w[0] += s
            flor.log("t_inside", s)
        flor.log("t_after", w[0])

    def run_all(n):
        for epoch in flor.loop("epoch", range(n)):
            train(epoch)
            flor.log("e_after", w[0])

    flor.log("pre", 1)
    with flor.checkpointing(w=w):
        run_all(3)
    flor.log("post", w[0])
''')


def test_positions_are_decided_at_the_call_site():
    assert place(FUNCS, '"t_before"').position == BEFORE
    p = place(FUNCS, '"t_inside"')
    assert p.position == NESTED and p.nested_loop == "step" and "via train()" in p.describe()
    assert place(FUNCS, '"t_after"').position == AFTER
    e = place(FUNCS, '"e_after"')
    assert e.position == AFTER and e.main_loop == "epoch" and e.skip_nested, e.reason
    assert place(FUNCS, '"pre"').position == PREFIX
    assert place(FUNCS, '"post"').position == SUFFIX


def test_methods_partial_lambdas_and_nested_functions_are_followed():
    s = src('''
        import functools
        import flordb as flor

        class Loop:
            def __init__(self):
                self.w = [0.0]
            def inner(self, k):
                for s in flor.loop("step", range(k)):
                    self.w[0] += s
                    flor.log("m_inside", s)
            def outer(self, run_epoch):
                for epoch in flor.loop("epoch", range(2)):
                    run_epoch()
                    flor.log("m_after", self.w[0])

        lp = Loop()
        with flor.checkpointing(w=lp.w):
            lp.outer(functools.partial(lp.inner, 3))
    ''')
    assert place(s, '"m_inside"').position == NESTED
    p = place(s, '"m_after"')
    assert p.position == AFTER and p.skip_nested, p.reason
    s2 = s.replace("functools.partial(lp.inner, 3)", "lambda: lp.inner(3)")
    assert place(s2, '"m_inside"').position == NESTED
    assert place(s2, '"m_after"').position == AFTER


def test_nested_loop_in_a_generator_consumed_by_the_epoch_body():
    s = src('''
        import flordb as flor
        w = [0.0]
        def batches(n):
            for b in flor.loop("step", range(n)):
                yield b
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for b in batches(4):
                    w[0] += b
                    flor.log("g_inner", b)
                flor.log("g_outer", w[0])
    ''')
    assert place(s, '"g_inner"').position == NESTED
    p = place(s, '"g_outer"')
    assert p.position == AFTER and p.skip_nested, p.reason


def test_return_value_of_the_loop_function_blocks_skipping_naming_variable_and_line():
    s = FUNCS.replace('    flor.log("t_after", w[0])', '    return w[0] + s').replace(
        "        train(epoch)", "        last = train(epoch)\n        flor.log(\"last\", last)")
    p = place(s, '"e_after"')
    assert not p.skip_nested
    assert "reads s (line 9)" in p.reason and "changes (line 6" in p.reason


def test_locals_that_die_and_prints_do_not_block_skipping():
    s = src('''
        import flordb as flor
        w = [0.0]
        def train(epoch):
            seen = 0
            for s in flor.loop("step", range(3)):
                w[0] += s
                seen += 1
            print(f"epoch {epoch}: {seen}")
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                train(epoch)
                flor.log("x", w[0])
    ''')
    assert place(s, '"x"').skip_nested


def test_globals_and_self_attributes_changed_through_calls_block_skipping():
    s = src('''
        import flordb as flor
        w = [0.0]
        count = 0
        def train():
            global count
            for s in flor.loop("step", range(3)):
                w[0] += s
                count += 1
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                train()
                flor.log("c", count)
    ''')
    p = place(s, '"c"')
    assert not p.skip_nested and "count" in p.reason
    t = src('''
        import flordb as flor
        class T:
            def __init__(self):
                self.w = [0.0]
                self.steps = 0
            def epoch(self):
                for s in flor.loop("step", range(3)):
                    self.w[0] += s
                    self.steps += 1
            def fit(self):
                with flor.checkpointing(w=self.w):
                    for e in flor.loop("epoch", range(2)):
                        self.epoch()
                        flor.log("st", self.steps)
        T().fit()
    ''')
    p = place(t, '"st"')
    assert not p.skip_nested and "self.steps" in p.reason


def test_a_counter_the_nested_loop_carries_forbids_warm_skipping():
    s = src('''
        import flordb as flor
        w = [0.0]
        step_no = 0
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(3)):
                    step_no += 1
                    w[0] += step_no
                flor.log("w", w[0])
    ''')
    assert place(s, '"w", w[0]').skip_nested  # nothing outside reads step_no
    ok, why = nested_skip_safety(s, "epoch")
    assert not ok and "step_no" in why  # but a later re-executed nested loop does


def test_state_carried_outside_the_nested_loop_starts_replay_at_iteration_zero():
    s = src('''
        import flordb as flor
        w = [0.0]
        best = None
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(3)):
                    w[0] += s
                val = w[0] % 7
                if best is None or val < best:
                    best = val
    ''')
    assert "best" in carried_state(s, "epoch")
    assert carried_state(s.replace("if best is None or val < best:\n            best = val", "pass"),
                         "epoch") == ""


def test_code_the_analysis_cannot_reach_is_reexecuted_and_says_why():
    s = src('''
        import flordb as flor
        w = [0.0]
        def hook(b):
            flor.log("h", b)
        callbacks = {"on_batch": hook}
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(3)):
                    callbacks["on_batch"](s)
    ''')
    p = place(s, '"h"')
    assert p.position == NESTED and not p.skip_nested and "hook()" in p.reason


def test_loop_names_from_what_ran_pick_the_main_loop():
    p = place(FUNCS, '"e_after"', main_loop="epoch", nested_loop="step")
    assert p.position == AFTER and p.nested_loop == "step"


def test_uncheckpointed_rng_streams_the_nested_loop_draws_from_are_not_skipped():
    s = src('''
        import torch
        import flordb as flor
        from torch.utils.data import DataLoader
        g = torch.Generator().manual_seed(0)
        X = torch.randn(8, 2)
        loader = DataLoader(X, batch_size=2, shuffle=True, generator=g)
        net = torch.nn.Linear(2, 1)
        with flor.checkpointing(net=net):
            for epoch in flor.loop("epoch", range(3)):
                for x in flor.loop("step", loader):
                    net(x).sum().backward()
                flor.log("noise", float(torch.rand(1, generator=g)))
    ''')
    p = place(s, '"noise"')
    assert not p.skip_nested and "g" in p.reason
    ok, why = nested_skip_safety(s.replace('                flor.log("noise", float(torch.rand(1, generator=g)))\n',
                                           ""), "epoch")
    assert not ok and "g" in why  # the next epoch's shuffle depends on it
    with_ckpt = s.replace("checkpointing(net=net)", "checkpointing(net=net, g=g)")
    assert place(with_ckpt, '"noise"').skip_nested


def test_nonlocal_rebound_in_a_closure_blocks_skipping():
    s = src('''
        import flordb as flor
        w = [0.0]
        def main():
            seen = 0
            def train():
                nonlocal seen
                for s in flor.loop("step", range(3)):
                    w[0] += s
                    seen += 1
            with flor.checkpointing(w=w):
                for epoch in flor.loop("epoch", range(3)):
                    train()
                    flor.log("seen", seen)
        main()
    ''')
    p = place(s, '"seen"')
    assert p.position == AFTER and not p.skip_nested and "seen" in p.reason


def test_appending_to_a_history_is_not_carried_unless_it_is_read():
    s = src('''
        import flordb as flor
        w = [0.0]
        history = []
        with flor.checkpointing(w=w):
            for epoch in flor.loop("epoch", range(3)):
                for s in flor.loop("step", range(3)):
                    w[0] += s
                history.append(w[0])
        flor.log("mean", sum(history) / len(history))
    ''')
    assert carried_state(s, "epoch") == ""  # loop statements need not rebuild it
    assert "history" in carried_state(s, "epoch", suffix=True)  # the suffix reads it
