import pytest

from llmft.core.config import config_from_dict
from llmft.core.errors import LlmftError
from llmft.core.precision import Precision, resolve_precision


def config(**train):
    return config_from_dict({"train": train, "adapter": {"method": "full"}})


@pytest.mark.parametrize("name, expected", [
    ("32-true", Precision("no", "float32")),
    ("bf16-mixed", Precision("bf16", "float32")),
    ("bf16-true", Precision("no", "bfloat16")),
    ("16-mixed", Precision("fp16", "float32")),
])
def test_each_precision_maps_onto_autocast_and_weight_dtype(name, expected):
    assert resolve_precision(config(precision=name), cuda=True, cuda_bf16=True, fast_bf16=True) == expected


def test_unset_precision_keeps_the_bf16_switch():
    assert resolve_precision(config(), cuda=False, cuda_bf16=False, fast_bf16=True) == Precision("bf16")
    assert resolve_precision(config(), cuda=False, cuda_bf16=False, fast_bf16=False) == Precision("no")
    assert resolve_precision(config(bf16="true"), cuda=False, cuda_bf16=False, fast_bf16=False) == Precision("bf16")
    assert resolve_precision(config(bf16="false"), cuda=True, cuda_bf16=True, fast_bf16=True) == Precision("no")


def test_cpu_can_run_bf16_but_not_16_mixed():
    assert resolve_precision(config(precision="bf16-true"), False, False, False).weight_dtype == "bfloat16"
    with pytest.raises(LlmftError, match="'16-mixed' needs a CUDA GPU") as caught:
        resolve_precision(config(precision="16-mixed"), cuda=False, cuda_bf16=False, fast_bf16=False)
    assert "\n" not in str(caught.value)
    with pytest.raises(LlmftError, match="this GPU has no bf16"):
        resolve_precision(config(precision="bf16-mixed"), cuda=True, cuda_bf16=False, fast_bf16=False)


def test_conflicting_settings_are_one_line_errors():
    with pytest.raises(LlmftError, match="both set the precision"):
        resolve_precision(config(precision="32-true", bf16="true"), True, True, True)
    raw = {"train": {"precision": "bf16-true"}, "model": {"dtype": "float16"}, "adapter": {"method": "full"}}
    with pytest.raises(LlmftError, match="model.dtype = 'float16'"):
        resolve_precision(config_from_dict(raw), True, True, True)
    with pytest.raises(LlmftError, match="must be one of"):
        config(precision="64-true")


def test_trainer_runs_bf16_true_on_cpu_and_refuses_16_mixed(tmp_path, caesar_data):
    import torch
    from safetensors.torch import load_file

    from ..conftest import tiny_config, train_run

    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, adapter={"method": "bottleneck", "reduction_factor": 4},
                         train={"max_steps": 4, "learning_rate": 2e-2, "precision": "bf16-true", "bf16": "auto"})
    result = train_run(config, progress=False)
    assert all(loss == loss for loss in result.losses)  # finite, not NaN
    saved = load_file(tmp_path / "run" / "final" / "bottleneck.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    cpu_only = tiny_config(tmp_path / "b", train_file, train={"precision": "16-mixed", "bf16": "auto"})
    if torch.cuda.is_available():
        assert train_run(cpu_only, progress=False).steps == 10
    else:
        with pytest.raises(LlmftError, match="'16-mixed' needs a CUDA GPU"):
            train_run(cpu_only, progress=False)
