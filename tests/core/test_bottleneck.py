import pytest
import torch

from llmft.core.bottleneck import BottleneckSpec, add_bottlenecks, load_bottleneck, save_bottleneck
from llmft.core.errors import LlmftError


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def tiny_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0)
    return T5ForConditionalGeneration(config).eval()


IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])


def t5_logits(model):
    return model(input_ids=IDS, decoder_input_ids=IDS[:, :5]).logits


@pytest.mark.parametrize("spec", [BottleneckSpec(mh_adapter=True, output_adapter=True, reduction_factor=4),
                                  BottleneckSpec(mh_adapter=False, output_adapter=True, reduction_factor=8,
                                                 non_linearity="swish")])
def test_fresh_adapters_are_the_identity_and_only_they_train(spec):
    model = tiny_llama()
    with torch.no_grad():
        base = model(input_ids=IDS).logits
    added = add_bottlenecks(model, spec)
    assert len(added) == 2 * (int(spec.mh_adapter) + int(spec.output_adapter))
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, base)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(("mh_adapter" in n) or ("output_adapter" in n) for n in trainable)
    assert model.model.layers[0].output_adapter.down.weight.shape == (32 // spec.reduction_factor, 32)
    # Not the identity once the up-projection moves: the hooks really sit in the forward pass.
    with torch.no_grad():
        model.model.layers[1].output_adapter.up.weight.fill_(0.1)
        assert not torch.allclose(model(input_ids=IDS).logits, base)


def test_t5_adapters_start_as_identity_and_reload(tmp_path):
    model = tiny_t5()
    with torch.no_grad():
        base = t5_logits(model)
    spec = BottleneckSpec(mh_adapter=True, output_adapter=True, reduction_factor=4)
    added = add_bottlenecks(model, spec)
    # 2 encoder + 2 decoder blocks, each with a self-attention and a feed-forward adapter.
    assert len(added) == 8
    with torch.no_grad():
        assert torch.equal(t5_logits(model), base)
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
        moved = t5_logits(model)
    assert not torch.allclose(moved, base)
    save_bottleneck(model, spec, tmp_path)
    again = load_bottleneck(tiny_t5(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(t5_logits(again), moved)


def test_save_reload_gives_equal_logits_and_rejects_another_base(tmp_path):
    model = tiny_llama()
    spec = BottleneckSpec(mh_adapter=True, reduction_factor=4)
    add_bottlenecks(model, spec)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        trained = model(input_ids=IDS).logits
    save_bottleneck(model, spec, tmp_path)
    reloaded = load_bottleneck(tiny_llama(), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=IDS).logits, trained, rtol=0, atol=0)
    with pytest.raises(LlmftError, match="does not fit"):
        from transformers import LlamaConfig, LlamaForCausalLM

        other = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                             num_attention_heads=2, num_key_value_heads=2))
        load_bottleneck(other, tmp_path)


def test_bad_specs_are_one_line_errors():
    with pytest.raises(LlmftError, match="needs adapter.mh_adapter or adapter.output_adapter"):
        add_bottlenecks(tiny_llama(), BottleneckSpec(mh_adapter=False, output_adapter=False))
    with pytest.raises(LlmftError, match="reduction_factor = 64 leaves no bottleneck"):
        add_bottlenecks(tiny_llama(), BottleneckSpec(reduction_factor=64))


def test_bottleneck_run_trains_only_adapters_saves_reloads_and_refuses_export(tmp_path, caesar_data):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from llmft.core.bottleneck import WEIGHTS_NAME
    from llmft.core.export import export_merged
    from llmft.core.inference import load_for_inference

    from ..conftest import tiny_config, train_run

    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, adapter={"method": "bottleneck", "mh_adapter": True,
                                                        "output_adapter": True, "reduction_factor": 4},
                         train={"max_steps": 20, "learning_rate": 2e-2})
    result = train_run(config, progress=False)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < first - 0.05, result.losses
    folder = tmp_path / "run" / "final"
    saved = load_file(folder / WEIGHTS_NAME)
    assert not (folder / "model.safetensors").exists() and len(saved) == 2 * 2 * 4  # layers x sites x tensors
    assert all(("mh_adapter" in n) or ("output_adapter" in n) for n in saved)
    _, tokenizer, model = load_for_inference(folder)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "base-model").eval()
    reloaded = dict(model.named_parameters())
    for name, tensor in base.named_parameters():  # the base weights did not move
        assert torch.equal(reloaded[name], tensor), name
    ids = tokenizer("shift abc =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        adapted, plain = model(input_ids=ids).logits, base(input_ids=ids).logits
        again = load_bottleneck(base, folder)(input_ids=ids).logits
    assert not torch.allclose(adapted, plain)  # the adapters learned something
    torch.testing.assert_close(again, adapted, rtol=0, atol=0)
    with pytest.raises(LlmftError, match="cannot be merged") as caught:
        export_merged(folder, tmp_path / "exported")
    assert "\n" not in str(caught.value) and not (tmp_path / "exported").exists()
