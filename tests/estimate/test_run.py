from llmft.core.config import EstimateConfig
from llmft.estimate.run import verdict_text


def report(chosen: bool, ranked: bool, rows: list[dict], drawn: int = 8) -> dict:
    return {"meta_loss": 1.0, "subsets_drawn": drawn, "subsets_distinct": len(rows), "subsets": rows,
            "chosen": chosen, "ranked": ranked}


ROWS = [{"subset": 0, "loss": 0.9}, {"subset": 1, "loss": 0.8}, {"subset": 2, "loss": 0.95}]


def test_the_verdict_names_a_chosen_subset_only_when_the_spread_allows():
    text = verdict_text(report(True, True, ROWS), EstimateConfig(repeats=3))
    assert "8 subsets drawn, 3 distinct" in text and "chosen subset 1: its estimate beats" in text
    assert "no ranking" not in text
    text = verdict_text(report(False, False, ROWS), EstimateConfig(repeats=3))
    assert "no chosen subset: the lowest estimate (subset 1)" in text and "no ranking" in text


def test_one_repeat_or_one_subset_gives_no_verdict():
    text = verdict_text(report(False, False, ROWS), EstimateConfig(repeats=1))
    assert "no verdict: one repeat measures no spread" in text and "chosen subset" not in text
    text = verdict_text(report(False, False, ROWS[:1], drawn=0), EstimateConfig(repeats=3))
    assert "one subset: nothing to choose between" in text and "drawn" not in text
