"""Per-example outputs and randomly projected per-example gradients, the inputs of the GradEx estimate.

The output of example i is f_i = the mean, over its trained tokens, of the gold token's logit
log(p / (1 - p)); p is shifted away from 0 and 1 first (p > 0.9: -0.01; p < 0.001: +0.01), as the
reference's instruction-tuning code does ("logit"), or p - 1e-3 with log(p / (1 - p + 1e-10)) as its CoT code
does ("cot-logit"). Gradients are taken over the adapter's parameters (for LoRA also the biases of the adapted
layers, as the reference's bias="lora_only") minus the reference's excluded names (embeddings, LM head, norms)
and projected with seeded +-1/sqrt(d) matrices P, one per repeat.

Per-example gradients come from one batched forward and backward: every parameter taken lives in an
nn.Linear, whose per-example weight gradient is sum_t delta_t x_t^T (inputs saved by a forward hook,
output gradients by a tensor hook). Examples in a right-padded causal batch do not interact, so this
equals a separate backward per example (tested against that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmft.core.data import TokenizedExample, collate
from llmft.core.errors import LlmftError
from llmft.core.packing import single_rows

# Parameter-name fragments the reference leaves out of the gradient (and out of the update).
EXCLUDED_NAMES = ("shared", "lm_head", "wte", "wpe", "ln", "layer_norm", "embed_tokens", "norm")


def estimate_parameters(model: Any, method: str, lora_bias: bool = True) -> list[tuple[str, Any]]:
    """The adapter's parameters the estimate moves, in model order, minus EXCLUDED_NAMES; with `lora_bias`
    a LoRA run's adapted layers' biases too (PEFT names them `<layer>.base_layer.bias`)."""
    from llmft.core.bottleneck import is_bottleneck_param

    if method in ("lora", "qlora", "lora+prompt-tuning"):
        keep = lambda name: "lora_" in name or (lora_bias and name.endswith(".base_layer.bias"))  # noqa: E731
    elif method == "bottleneck":
        keep = is_bottleneck_param
    elif method == "full":
        keep = lambda name: True  # noqa: E731
    else:
        raise LlmftError(f"the estimate needs a LoRA, bottleneck or full meta-initialisation, not adapter.method = "
                         f"'{method}'")
    chosen = [(n, p) for n, p in model.named_parameters()
              if keep(n) and not any(x in n for x in EXCLUDED_NAMES) and p.is_floating_point()]
    if not chosen:
        raise LlmftError(f"adapter.method = '{method}': the model has no parameters the estimate can move")
    return chosen


def gold_logit_outputs(logits: Any, labels: Any) -> Any:
    """f_i per example [B]: mean over trained positions of log(p/(1-p)) of the gold next token."""
    import torch

    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != -100
    probs = torch.softmax(shifted, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    # The shift is a constant: gradients flow through p unchanged.
    shift = torch.where(probs > 0.9, -0.01, 0.0) + torch.where(probs < 0.001, 0.01, 0.0)
    p = probs + shift.detach()
    odds = torch.log(p / (1 - p))
    return (odds * mask).sum(1) / mask.sum(1).clamp(min=1)


def cot_logit_outputs(logits: Any, labels: Any) -> Any:
    """f_i per example [B] as the reference's CoT script: mean over trained positions of
    log(q / (1 - q + 1e-10)) with q = p - 1e-3 of the gold next token."""
    import torch

    targets = labels[:, 1:]
    mask = targets != -100
    probs = torch.softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    q = probs - 1e-3
    odds = torch.log(q / (1 - q + 1e-10))
    return (odds * mask).sum(1) / mask.sum(1).clamp(min=1)


def negative_loss_outputs(logits: Any, labels: Any) -> Any:
    """f_i = minus the mean next-token loss over trained positions [B] (an option; not the reference's)."""
    from llmft.core.scoring import token_losses

    losses = token_losses(logits, labels)
    return -losses.sum(1) / (labels[:, 1:] != -100).sum(1).clamp(min=1)


OUTPUTS: dict[str, Callable[[Any, Any], Any]] = {"logit": gold_logit_outputs, "cot-logit": cot_logit_outputs,
                                                  "loss": negative_loss_outputs}


@dataclass
class Projection:
    """P in {+-1/sqrt(d)}^{D x d}, one block per parameter, each from its own seeded generator."""

    shapes: list[tuple[str, int]]  # (name, numel) per parameter, in order
    dim: int
    seed: int

    def __post_init__(self) -> None:
        import torch

        self.blocks = []
        for index, (_, numel) in enumerate(self.shapes):
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            signs = torch.randint(0, 2, (numel, self.dim), generator=generator, dtype=torch.int8)
            self.blocks.append(signs)

    def block(self, index: int) -> Any:
        import torch

        return (2 * self.blocks[index].to(torch.float32) - 1) / self.dim ** 0.5

    def dense(self) -> Any:
        """The whole matrix [D, d] (for tests and small models)."""
        import torch

        return torch.cat([self.block(i) for i in range(len(self.shapes))])

    def lift(self, weights: Any) -> list[Any]:
        """P w, split per parameter (flat fp32 tensors)."""
        import torch

        w = weights.to(torch.float32)
        return [self.block(i) @ w for i in range(len(self.shapes))]

    def reduce(self, pieces: Sequence[Any]) -> Any:
        """P^T v for v given per parameter."""
        return sum(self.block(i).T @ piece.reshape(-1).float() for i, piece in enumerate(pieces))

    def gram(self) -> Any:
        """P^T P [d, d]."""
        return sum(self.block(i).T @ self.block(i) for i in range(len(self.shapes)))


def repeat_projections(shapes: list[tuple[str, int]], dim: int, seed: int, repeats: int) -> list[Projection]:
    """One independent P per repeat; repeat 0 is P of `seed` itself."""
    return [Projection(shapes, dim, seed + 1_000_000 * j) for j in range(repeats)]


def _linear_owners(model: Any, params: Sequence[tuple[str, Any]]) -> list[tuple[Any, str]]:
    """(nn.Linear, "weight"|"bias") owning each parameter; a parameter outside a Linear is an error."""
    import torch

    owners = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for kind in ("weight", "bias"):
                tensor = getattr(module, kind)
                if tensor is not None:
                    owners[id(tensor)] = (module, kind)
    found = []
    for name, param in params:
        if id(param) not in owners:
            raise LlmftError(f"the estimate takes per-example gradients of linear layers only; {name} is not one")
        found.append(owners[id(param)])
    return found


def outputs_and_projected_gradients(model: Any, examples: Sequence[TokenizedExample], pad_id: int,
                                    params: Sequence[tuple[str, Any]], projections: Projection | Sequence[Projection],
                                    output: Callable[[Any, Any], Any] = gold_logit_outputs) -> tuple[Any, Any]:
    """(f [B], projected per-example gradients [B, d x repeats]: each projection's d columns in turn) for one batch,
    from one forward and backward; `output(logits, labels)` gives each example's scalar (default: the
    reference's f_i)."""
    import torch

    owners = _linear_owners(model, params)
    modules = {id(m): m for m, _ in owners}
    saved: dict[int, dict[str, Any]] = {key: {} for key in modules}
    handles = []

    def capture(key: int) -> Any:
        def hook(module: Any, args: Any, result: Any) -> None:
            if "x" in saved[key]:
                raise LlmftError("the estimate needs each adapter layer called once per forward pass")
            saved[key]["x"] = args[0].detach()
            result.register_hook(lambda grad: saved[key].__setitem__("delta", grad.detach()))
        return hook

    for key, module in modules.items():
        handles.append(module.register_forward_hook(capture(key)))
    requires = [p.requires_grad for _, p in params]
    for _, p in params:
        p.requires_grad_(True)
    was_training = model.training
    model.eval()  # as the reference's predict step: no dropout
    try:
        batch = collate(single_rows(examples), pad_id, packed=False)
        device = params[0][1].device
        with torch.enable_grad():
            logits = model(input_ids=batch["input_ids"].to(device), use_cache=False).logits
            outputs = output(logits, batch["labels"].to(device))
            torch.autograd.grad(outputs.sum(), [p for _, p in params])
    finally:
        for handle in handles:
            handle.remove()
        for (_, p), flag in zip(params, requires):
            p.requires_grad_(flag)
        model.train(was_training)
    projections = [projections] if isinstance(projections, Projection) else list(projections)
    projected = [torch.zeros(len(examples), projection.dim) for projection in projections]
    for index, (module, kind) in enumerate(owners):
        x, delta = saved[id(module)]["x"].float(), saved[id(module)]["delta"].float()
        x, delta = x.reshape(len(examples), -1, x.shape[-1]), delta.reshape(len(examples), -1, delta.shape[-1])
        per_example = torch.einsum("bto,bti->boi", delta, x) if kind == "weight" else delta.sum(1)
        per_example = per_example.reshape(len(examples), -1)
        for total, projection in zip(projected, projections):
            total += (per_example @ projection.block(index).to(per_example.device)).cpu()
    return outputs.detach().float().cpu(), torch.cat(projected, 1)
