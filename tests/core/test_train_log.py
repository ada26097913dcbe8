"""metrics.jsonl: a resumed run keeps the lines up to its start step and drops torn or later ones."""

import json

from llmft.core import runs
from llmft.core.train_log import TrainLog


def test_resume_keeps_lines_up_to_the_start_and_appends(tmp_path):
    lines = [json.dumps({"step": 1, "loss": 3.0}), json.dumps({"step": 2, "loss": 2.0}),
             json.dumps({"step": 3, "loss": 1.0}), '{"step": 4, "lo']  # step 3 came after the checkpoint; 4 is torn
    (tmp_path / runs.METRICS_NAME).write_text("\n".join(lines) + "\n")
    log = TrainLog(tmp_path, main=True, progress=False, total=5, start=2)
    log.log(3, 0.5, 1e-3, 100.0, every=1)
    log.log(4, 0.4, 1e-3, 100.0, every=2)
    log.log(5, 0.3, 1e-3, 100.0, every=2)  # off the interval: not written
    log.log_eval(4, 0.45)
    log.close()
    rows = [json.loads(line) for line in (tmp_path / runs.METRICS_NAME).read_text().splitlines()]
    assert [(r["step"], r.get("loss", r.get("eval_loss"))) for r in rows] == [
        (1, 3.0), (2, 2.0), (3, 0.5), (4, 0.4), (4, 0.45)]


def test_other_processes_write_nothing(tmp_path):
    log = TrainLog(tmp_path / "run", main=False, progress=False, total=5, start=0)
    log.log(1, 1.0, 1e-3, 1.0, every=1)
    log.close()
    assert not (tmp_path / "run").exists()
