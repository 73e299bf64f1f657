"""The mutation fuzzer (fuzz/sip.py) over the real captured messages: 10^5 mutants, nothing escapes."""

from fuzz.sip import corpus, run


def test_fuzz_corpus_holds_real_captured_messages():
    seeds = corpus()
    assert len(seeds) >= 50
    assert any(b"baresip" in s or b"sipp" in s.lower() for s in seeds)


def test_hundred_thousand_mutants_raise_nothing():
    res = run(100_000, seed=20261128)
    assert res.iterations == 100_000
    assert res.failures == [], res.failures[0][1]
    # the mutants must exercise both outcomes, or the harness is testing nothing
    assert res.parsed > 10_000 and res.rejected > 10_000 and res.events > 10_000
