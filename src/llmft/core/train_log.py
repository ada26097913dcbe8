"""A training run's log: progress (a bar, or interval lines off a terminal), metrics.jsonl (kill-safe,
trimmed on resume) and TensorBoard."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmft.core import runs


class TrainLog:
    """Progress bar, metrics.jsonl and TensorBoard, on the main process only."""

    def __init__(self, output_dir: Path, main: bool, progress: bool, total: int, start: int):
        self.main = main
        self.last_eval: tuple[int, float] | None = None  # (step, held-out loss) of the latest evaluation
        self.bar = None
        self.writer = None
        if not main:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self.path = output_dir / runs.METRICS_NAME
        kept = [line for line in (self.path.read_text().splitlines() if self.path.exists() else [])
                if _step(line) is not None and _step(line) <= start]
        runs.atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.handle = self.path.open("a", encoding="utf-8")
        if progress:
            from llmft.core.progress import Progress

            self.bar = Progress(total, "train", initial=start, unit="steps")
            self.bar.postfix = dict.fromkeys(("loss", "lr", "tok_s", "eval_loss"))  # the order they show in
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / runs.TENSORBOARD_DIR), purge_step=start + 1)
        except ImportError:  # pragma: no cover - tensorboard is a dependency, but logs are optional
            self.writer = None

    def log(self, step: int, loss: float, lr: float, tokens_per_second: float, every: int) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.update(1, loss=loss, lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:,.0f}",
                            eval_loss=self._eval_text(step))
        if step % max(every, 1) == 0 or step == 1:
            record = {"step": step, "loss": loss, "lr": lr, "tokens_per_s": round(tokens_per_second, 1)}
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
            os.fsync(self.handle.fileno())
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, step)
                self.writer.add_scalar("train/lr", lr, step)
                self.writer.add_scalar("train/tokens_per_s", tokens_per_second, step)

    def log_eval(self, step: int, eval_loss: float) -> None:
        """The held-out loss at `step`: metrics.jsonl, TensorBoard `eval/loss`, and beside the progress."""
        if not self.main:
            return
        self.last_eval = (step, eval_loss)
        self.handle.write(json.dumps({"step": step, "eval_loss": eval_loss}) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        if self.writer is not None:
            self.writer.add_scalar("eval/loss", eval_loss, step)

    def _eval_text(self, step: int) -> str | None:
        """The latest held-out loss; one from an earlier step says which, so it is not read as current."""
        if self.last_eval is None:
            return None
        at, value = self.last_eval
        return f"{value:.4f}" if at == step else f"{value:.4f} (step {at})"

    def close(self) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.close()
        self.handle.close()
        if self.writer is not None:
            self.writer.close()


def _step(line: str) -> int | None:
    """The step of a metrics line; None for a blank or torn one (a kill mid-write), which is dropped."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return None
