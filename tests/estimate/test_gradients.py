import pytest
import torch

from llmft.core.bottleneck import BottleneckSpec, add_bottlenecks
from llmft.core.data import IGNORE, TokenizedExample
from llmft.estimate.gradients import (
    Projection,
    cot_logit_outputs,
    estimate_parameters,
    gold_logit_outputs,
    outputs_and_projected_gradients,
)

from ..core.test_bottleneck import tiny_llama


def examples() -> list[TokenizedExample]:
    """Different lengths (so the batch is padded) and different prompt masks."""
    out = []
    for n, prompt in ((7, 3), (11, 5), (5, 2), (9, 4)):
        ids = [(3 * i + n) % 37 + 2 for i in range(n)]
        out.append(TokenizedExample(ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def dense_gradients(model, items, params):
    """Each example alone: f_i and the full gradient of f_i, flattened in parameter order."""
    grads, outputs = [], []
    for example in items:
        ids = torch.tensor([example.input_ids])
        f = gold_logit_outputs(model(input_ids=ids).logits, torch.tensor([example.labels]))[0]
        pieces = torch.autograd.grad(f, [p for _, p in params])
        grads.append(torch.cat([g.reshape(-1) for g in pieces]))
        outputs.append(float(f.detach()))
    return torch.tensor(outputs), torch.stack(grads)


def lora_model():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad():  # a trained-looking meta-initialisation: B away from zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return model.eval(), "lora"


def bottleneck_model():
    model = tiny_llama()
    add_bottlenecks(model, BottleneckSpec(mh_adapter=True, output_adapter=True, reduction_factor=4))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".up." in name:
                param.normal_(0, 0.1)
    return model.eval(), "bottleneck"


@pytest.mark.parametrize("build", [lora_model, bottleneck_model])
def test_projected_gradients_equal_dense_per_example_gradients_times_p(build):
    model, method = build()
    params = estimate_parameters(model, method)
    assert all("norm" not in n and "embed" not in n and "lm_head" not in n for n, _ in params)
    projection = Projection([(n, p.numel()) for n, p in params], dim=16, seed=3)
    items = examples()
    outputs, projected = outputs_and_projected_gradients(model, items, 0, params, projection)
    dense_outputs, dense = dense_gradients(model, items, params)
    P = projection.dense()
    assert P.shape == (sum(p.numel() for _, p in params), 16)
    assert P.abs().unique().tolist() == [0.25]
    torch.testing.assert_close(outputs, dense_outputs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(projected, dense @ P, atol=1e-4, rtol=1e-4)
    assert float(projected.abs().max()) > 1e-3  # not trivially zero


def test_full_method_excludes_embeddings_norms_and_head():
    model = tiny_llama()
    names = [n for n, _ in estimate_parameters(model, "full")]
    assert names and not any(x in n for n in names for x in ("embed_tokens", "norm", "lm_head"))
    assert any("q_proj" in n for n in names)


def test_projection_is_seeded_and_lift_is_p_times_w():
    shapes = [("a", 10), ("b", 7)]
    one, two, other = Projection(shapes, 5, 1), Projection(shapes, 5, 1), Projection(shapes, 5, 2)
    assert torch.equal(one.dense(), two.dense()) and not torch.equal(one.dense(), other.dense())
    w = torch.randn(5)
    torch.testing.assert_close(torch.cat(one.lift(w)), one.dense() @ w)
    v = torch.randn(17)
    torch.testing.assert_close(one.reduce([v[:10], v[10:]]), one.dense().T @ v)


def test_batched_gradients_agree_with_the_core_per_example_gradients():
    """With the per-example loss as output, the batched hooks reproduce scoring.per_example_gradients x P."""
    from llmft.core.scoring import per_example_gradients, token_losses

    model, method = bottleneck_model()
    params = estimate_parameters(model, method)
    assert [n for n, _ in params] == [n for n, p in model.named_parameters() if p.requires_grad]
    projection = Projection([(n, p.numel()) for n, p in params], dim=12, seed=5)
    items = examples()
    _, projected = outputs_and_projected_gradients(model, items, 0, params, projection,
                                                   output=lambda logits, labels: token_losses(logits, labels).sum(1))
    dense = torch.stack(list(per_example_gradients(model, items, 0, reduction="sum")))
    torch.testing.assert_close(projected, dense @ projection.dense(), atol=1e-4, rtol=1e-4)


def test_cot_output_is_the_reference_cot_scripts_by_hand():
    """Two tokens trained, p = 1/2 and p = e^2 / (e^2 + 1): f = mean of log(q / (1 - q + 1e-10)), q = p - 1e-3."""
    import math

    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE, 1, 0]])
    p = [0.5, math.exp(2) / (math.exp(2) + 1)]
    expected = sum(math.log((q - 1e-3) / (1 - (q - 1e-3) + 1e-10)) for q in p) / 2
    assert abs(float(cot_logit_outputs(logits, labels)[0]) - expected) < 1e-6
    # The instruction code's shift differs: p = 0.88 stays, 0.5 stays, so its f is the plain log-odds here.
    assert abs(float(gold_logit_outputs(logits, labels)[0]) - sum(math.log(q / (1 - q)) for q in p) / 2) < 1e-6


def test_lora_runs_move_the_adapted_layers_biases_as_bias_lora_only():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, attention_bias=True)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    names = [n for n, _ in estimate_parameters(model, "lora")]
    assert [n for n in names if "bias" in n] == ["base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias"]
    assert not any("bias" in n for n, _ in estimate_parameters(model, "lora", lora_bias=False))
    params = estimate_parameters(model, "lora")
    projection = Projection([(n, p.numel()) for n, p in params], dim=6, seed=0)
    _, projected = outputs_and_projected_gradients(model, examples(), 0, params, projection)
    assert not dict(params)["base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias"].requires_grad
    for _, param in params:  # frozen in the run (bias="none"); the estimate differentiates it anyway
        param.requires_grad_(True)
    _, dense = dense_gradients(model, examples(), params)
    torch.testing.assert_close(projected, dense @ projection.dense(), atol=1e-4, rtol=1e-4)
