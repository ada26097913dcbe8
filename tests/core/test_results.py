"""ResultsLog: a killed evaluation resumes by example index, losing and repeating nothing."""

import json

from llmft.core.results import ResultsLog, batches, evaluate_batched, settings_path


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interrupted_run_resumes_without_loss_or_duplicates(tmp_path, capsys):
    path, n = tmp_path / "results.jsonl", 10
    done_first = []
    with ResultsLog(path, {"decode": "greedy"}) as log:
        for index in log.todo(range(n)):
            if index == 4:
                break  # killed after 4 rows
            log.add(index, {"value": index * index})
            done_first.append(index)
    with path.open("a") as handle:
        handle.write('{"index": 4, "val')  # a torn line from the kill
    calls = []
    with ResultsLog(path, {"decode": "greedy"}) as log:
        todo = log.todo(range(n))
        assert todo == list(range(4, n))
        for index in todo:
            calls.append(index)
            log.add(index, {"value": index * index})
        rows = log.rows(range(n))
    assert "resuming: 4 of 10 done" in capsys.readouterr().err
    assert done_first == [0, 1, 2, 3] and calls == list(range(4, 10))
    assert [r["index"] for r in rows] == list(range(n)) and [r["value"] for r in rows] == [i * i for i in range(n)]
    assert sorted(r["index"] for r in lines(path)) == list(range(n))  # each exactly once on disk


def test_other_settings_start_afresh(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    with ResultsLog(path, {"num_beams": 1, "data": "a"}) as log:
        log.add(0, {"value": "old"})
    with ResultsLog(path, {"num_beams": 4, "data": "a"}) as log:
        assert log.todo(range(2)) == [0, 1]
        log.add(0, {"value": "new"})
        assert log.get(0)["value"] == "new"
    assert "other settings (num_beams)" in capsys.readouterr().err
    assert json.loads(settings_path(path).read_text()) == {"num_beams": 4, "data": "a"}
    assert [r["value"] for r in lines(path)] == ["new"]


def test_compound_keys_survive_a_reload(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsLog(path) as log:
        log.add(("generation", None, 3), {"story": "x"})
    with ResultsLog(path) as log:
        assert ("generation", None, 3) in log and log.todo([("generation", None, 3), ("loss", "id")]) == [
            ("loss", "id")]


def test_evaluate_batched_answers_only_what_is_missing_in_batches(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsLog(path) as log:
        log.add(1, {"out": "kept"})
    asked: list[list[int]] = []

    def answer(chunk):
        asked.append(chunk)
        return [k * 10 for k in chunk]

    rows = evaluate_batched(path, range(6), 2, answer, lambda key, out: {"out": out})
    assert asked == [[0, 2], [3, 4], [5]]
    assert [(r["index"], r["out"]) for r in rows] == [(0, 0), (1, "kept"), (2, 20), (3, 30), (4, 40), (5, 50)]
    assert len(path.read_text().splitlines()) == 6


def test_batches_cut_in_order():
    assert list(batches([5, 6, 7], 2)) == [(0, [5, 6]), (2, [7])]
    assert list(batches([5, 6], 0)) == [(0, [5]), (1, [6])]


def test_a_batch_counts_in_the_progress_at_once(tmp_path, capsys, monkeypatch):
    """A slow batch's rows arrive together: the time-left estimate times the whole batch, not its first row."""
    from types import SimpleNamespace

    from llmft.core import progress

    clock = SimpleNamespace(now=0.0)
    clock.monotonic = lambda: clock.now
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setenv(progress.ENV, "lines")

    def answer(chunk):
        clock.now += 300.0  # past the 120 s after which a line is due whatever the count
        return list(chunk)

    evaluate_batched(tmp_path / "results.jsonl", range(8), 4, answer, lambda key, out: {"out": out})
    shown = capsys.readouterr().err.splitlines()
    assert shown == ["eval: 4/8 examples (50%) | elapsed 5:00, left ~5:00", "eval: 8/8 examples (100%) | elapsed 10:00"]
