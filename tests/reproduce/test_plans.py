"""Every paper's plan names what each stage needs: a stage reading a folder another stage writes comes after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmft.commands.reproduce import PAPER_NAMES
from llmft.reproduce.papers import build_plan
from llmft.reproduce.plan import Stage
from llmft.reproduce.runner import check_order


def written(stage: Stage) -> str | None:
    """The folder a stage writes: make-data's and estimate's `--out`, a training's `train.output_dir`."""
    argv = list(stage.argv)
    if "--out" in argv:
        return argv[argv.index("--out") + 1]
    found = [a.split("=", 1)[1] for a in argv if a.startswith("train.output_dir=")]
    return found[0] if found else None


def needed(stages: list[Stage], stage: Stage) -> set[str]:
    """The stages that `stage` waits for, directly or through others."""
    by_name = {s.name: s for s in stages}
    found, todo = set(), list(stage.after)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += by_name[name].after
    return found


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("paper", PAPER_NAMES)
def test_each_stage_comes_after_the_stages_whose_output_it_reads(paper: str, quick: bool, tmp_path: Path) -> None:
    from llmft.reproduce.plan import Settings

    stages = build_plan(paper, Settings(out=tmp_path, quick=quick)).stages
    check_order(stages)
    writers = {folder: s.name for s in stages if (folder := written(s))}
    for stage in stages:
        own = written(stage)
        reads = {name for folder, name in writers.items() if folder != own
                 and any(a == folder or folder + "/" in a for a in stage.argv)}
        if not stage.name.startswith("data"):  # every training and evaluation reads another stage's folder
            assert reads, stage.name
        assert reads <= needed(stages, stage), (stage.name, reads - needed(stages, stage))
