"""`llmft reproduce`: its one-line errors (a paper preset without a GPU, bad seeds, a folder of other settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from llmft.cli import cli


def test_paper_preset_without_a_gpu_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(cli, ["reproduce", "retuning", "--preset", "paper", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --preset paper trains the paper-size models and needs a CUDA GPU; this "
                                     "machine has none (leave --preset out for the CPU presets)")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--seeds", "0,x"], "error: --seeds: expected comma-separated integers like 0,1,2, got '0,x'"),
    (["--seeds", "1,1"], "error: --seeds: expected distinct non-negative integers like 0,1,2, got '1,1'"),
    (["train.seed"], "error: expected KEY=VALUE, got 'train.seed'"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["reproduce", "retuning", "--quick", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and result.stderr.strip() == message


def test_a_folder_holds_one_plan(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "settings.json").write_text('{"paper": "retuning", "seeds": [0], "quick": true, "preset": "tiny", '
                                       '"overrides": []}')
    result = CliRunner().invoke(cli, ["reproduce", "retuning", "--quick", "--seeds", "0,1", "--out", str(out)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: --out {out} holds a run with other settings")
