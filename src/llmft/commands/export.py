"""`llmft export --adapter DIR --out DIR`."""

from __future__ import annotations

import click


@click.command("export")
@click.option("--adapter", "adapter_dir", required=True, type=click.Path(), help="A run's final/ or checkpoint-N/.")
@click.option("--out", required=True, type=click.Path(), help="Folder for the merged Hugging Face model.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto")
@click.option("--overwrite", is_flag=True, help="Replace an existing file or non-empty folder at --out.")
def export_command(adapter_dir: str, out: str, dtype: str, overwrite: bool) -> None:
    """Merge an adapter (and trained new-token rows) into a standalone Hugging Face folder.

    \b
    llmft export --adapter runs/sft-tiny/final --out exported/sft-tiny
    python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('exported/sft-tiny')"
    """
    from llmft.core.export import export_merged

    report = export_merged(adapter_dir, out, dtype, overwrite=overwrite)
    click.echo(f"exported -> {report['out']} (max |logit diff| vs adapter: {report['max_abs_logit_diff']:.2e})")
    if "warning" in report:
        click.echo(f"llmft export: warning: {report['warning']}", err=True)
