import subprocess
import sys
import textwrap

import pytest
import torch

from llmft.core.export import export_merged
from llmft.core.generation import HFGenerator
from llmft.core.inference import load_for_inference
from tests.conftest import train_run

from ..conftest import tiny_config

LORA = {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def test_lora_adapter_reloads_with_plain_peft_and_exports(tmp_path, caesar_data):
    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, adapter={**LORA, "new_tokens": ["<tool>"]},
                         train={"max_steps": 12, "learning_rate": 2e-2})
    result = train_run(config, progress=False)
    assert result.losses[-1] < result.losses[0]
    folder = tmp_path / "run" / "final"
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    _, tokenizer, model = load_for_inference(folder)
    prompts = ["shift abc =", "shift hgf ="]
    ours = HFGenerator(model, tokenizer).generate(prompts, max_new_tokens=6)
    ids = tokenizer("shift abc = <tool>", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits

    # A script that does not import llmft: PeftModel.from_pretrained on the saved base gives our outputs.
    script = textwrap.dedent(f"""
        import json, sys, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
        assert 'llmft' not in sys.modules
        tok = AutoTokenizer.from_pretrained({str(folder)!r})
        base = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'run' / 'base-model')!r})
        model = PeftModel.from_pretrained(base, {str(folder)!r}).eval()
        out = []
        for p in {prompts!r}:
            ids = tok(p, return_tensors='pt')['input_ids']
            gen = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == __import__("json").dumps(ours)

    report = export_merged(folder, tmp_path / "merged")
    assert report["max_abs_logit_diff"] < 1e-4
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    assert (merged_logits - adapter_logits).abs().max() < 1e-4
    assert merged.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_prompt_tuning_trains_only_the_new_token_rows(tmp_path, caesar_data):
    from llmft.core.jsonl import write_jsonl

    records = [{"prompt": f"<cue> shift {w} =", "completion": " x"} for w in ("ab", "cd", "ef", "gh")] * 10
    data = write_jsonl(tmp_path / "cue.jsonl", records)
    config = tiny_config(tmp_path, data, adapter={"method": "prompt-tuning", "new_tokens": ["<cue>"]},
                         train={"max_steps": 6, "learning_rate": 5e-2})
    result = train_run(config, progress=False)
    assert result.losses[-1] < result.losses[0]
    _, tokenizer, model = load_for_inference(tmp_path / "run" / "final")
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "base-model")
    merged = model.merge_and_unload()
    cue = tokenizer.convert_tokens_to_ids("<cue>")
    before, after = original.get_input_embeddings().weight, merged.get_input_embeddings().weight
    changed = (before - after).abs().sum(1) > 0
    assert changed[cue] and int(changed.sum()) == 1
    for name, tensor in original.state_dict().items():
        if "embed_tokens" not in name and "lm_head" not in name:
            assert torch.equal(tensor, merged.state_dict()[name]), name


def test_qlora_trains_on_cpu_with_falling_loss(tmp_path, caesar_data):
    pytest.importorskip("bitsandbytes")
    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, model={"tiny": {"hidden_size": 64}},
                         adapter={**LORA, "method": "qlora", "target_modules": ["q_proj", "v_proj", "up_proj"]},
                         train={"max_steps": 30, "learning_rate": 5e-2})
    result = train_run(config, progress=False)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.95 * first, result.losses
    _, _, model = load_for_inference(tmp_path / "run" / "final")
    assert any("Linear4bit" in type(m).__name__ for m in model.modules())


def test_two_stage_training_starts_from_the_first_stage(tmp_path):
    """Stage 1 trains only a new token's embedding; stage 2 (LoRA, adapter.init_from) starts from it."""
    from llmft.core.jsonl import write_jsonl

    records = [{"prompt": f"<cue> shift {w} =", "completion": " x"} for w in ("ab", "cd", "ef", "gh")] * 10
    data = write_jsonl(tmp_path / "cue.jsonl", records)
    stage1 = tiny_config(tmp_path / "s1", data, adapter={"method": "prompt-tuning", "new_tokens": ["<cue>"]},
                         train={"max_steps": 4, "learning_rate": 5e-2})
    train_run(stage1, progress=False)
    first = tmp_path / "s1" / "run" / "final"
    stage2 = tiny_config(tmp_path / "s2", data, adapter={**LORA, "new_tokens": ["<cue>"], "init_from": str(first)},
                         train={"max_steps": 4, "learning_rate": 1e-2})
    result = train_run(stage2, progress=False)
    assert result.losses[-1] < result.losses[0]
    _, tokenizer, one = load_for_inference(first)
    _, tokenizer2, two = load_for_inference(tmp_path / "s2" / "run" / "final")
    assert tokenizer.get_vocab() == tokenizer2.get_vocab()
    cue = tokenizer.convert_tokens_to_ids("<cue>")
    stage1_row = one.merge_and_unload().get_input_embeddings().weight[cue]
    from transformers import AutoModelForCausalLM

    stage2_base = AutoModelForCausalLM.from_pretrained(tmp_path / "s2" / "run" / "base-model")
    torch.testing.assert_close(stage2_base.get_input_embeddings().weight[cue], stage1_row)
    assert two.peft_config["default"].base_model_name_or_path.endswith("base-model")
