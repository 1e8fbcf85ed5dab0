"""Build a tiny causal LM and its tokenizer here, from text, without touching a hub.

- Tokenizer: byte-level BPE trained with `tokenizers` (digits split one by one so ids copy
  digit by digit), wrapped as a `PreTrainedTokenizerFast`.
- Chat template: Qwen/Hermes style, with tools listed in the system turn (as JSON schemas, or one
  line each for a model whose context is short) and calls written as
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the same blocks real Qwen models
  emit, so `parse_action` reads both. Assistant turns are wrapped in `{% generation %}` so TRL
  can train on assistant tokens only.
- Model: `Qwen3ForCausalLM` (transformers' own architecture), random init from a seed.

`<tool_call>` and `</tool_call>` are ordinary added tokens, not special ones: TRL decodes
completions with `skip_special_tokens=True`, which would otherwise delete them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

END_OF_TURN = "<|im_end|>"
SPECIAL = ["<|endoftext|>", "<|im_start|>", END_OF_TURN]
ADDED = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"]

JSON_TOOLS = "{%- for t in tools -%}{{- (t.function if t.function is defined else t) | tojson -}}{{- '\\n' -}}{%- endfor -%}"
# One line per tool, `name(arg: type, ...): description`: a tool schema costs ~15 tokens instead of
# ~80, so a tiny model's short context holds the whole episode (the lab's base uses it).
COMPACT_TOOLS = (
    "{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}"
    "{%- set props = f.parameters.properties if (f.parameters is defined and f.parameters is mapping "
    "and f.parameters.properties is defined and f.parameters.properties is mapping) else {} -%}"
    "{{- (f.name | string) + '(' -}}"
    "{%- for k, v in props.items() -%}{{- (', ' if not loop.first else '') + k + ': ' "
    "+ ((v.type if (v is mapping and v.type is defined) else 'any') | string) -}}{%- endfor -%}"
    "{{- ')' + ((': ' + (f.description | string)) if f.description else '') + '\\n' -}}"
    "{%- endfor -%}"
)

CHAT_TEMPLATE = (
    "{%- set msgs = messages -%}"
    "{%- if msgs and msgs[0].role == 'system' -%}{%- set sys = msgs[0].content -%}{%- set msgs = msgs[1:] -%}"
    "{%- else -%}{%- set sys = '' -%}{%- endif -%}"
    "{%- if tools or sys -%}"
    "{{- '<|im_start|>system\\n' + sys -}}"
    "{%- if tools -%}"
    "{{- ('\\n\\n' if sys else '') + '# Tools\\n<tools>\\n' -}}"
    "@TOOLS@"
    "{{- '</tools>\\nCall a tool with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>' -}}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in msgs -%}"
    "{%- if m.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{{- m.content or '' -}}"
    "{%- for tc in (m.tool_calls or []) -%}"
    "{{- '\\n' if (m.content or not loop.first) else '' -}}"
    "{{- '<tool_call>{\"name\": \"' + tc.function.name + '\", \"arguments\": ' -}}"
    "{{- tc.function.arguments if tc.function.arguments is string else tc.function.arguments | tojson -}}"
    "{{- '}</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- elif m.role == 'tool' -%}"
    "{{- '<|im_start|>user\\n<tool_response>' + m.content + '</tool_response><|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
COMPACT_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("@TOOLS@", COMPACT_TOOLS)
CHAT_TEMPLATE = CHAT_TEMPLATE.replace("@TOOLS@", JSON_TOOLS)
# A thinking model's template (as Qwen3-*-Thinking-2507's): the generation prompt opens the reasoning
# block, so a completion is `reasoning</think>action`, with no opening tag of its own.
GENERATION_PROMPT = "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
THINKING_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    GENERATION_PROMPT, "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}")


# How to read an assistant turn back (transformers' response parsing), which TRL's multi-turn tool
# loop uses to find tool calls in what the model generated.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close_pattern": r"</think>\s*", "content": "text"},
        "tool_calls": {"open": "<tool_call>", "close_pattern": r"</tool_call>\s*", "repeats": True, "content": "json",
                       "transform": {"type": "function", "function": "{content}"}},
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, compact_tools: bool = False, thinking: bool = False):
    """A byte-level BPE tokenizer trained on `texts`, with the chat template set (tools as JSON
    schemas, or one line each with `compact_tools`; `thinking`: a thinking model's template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END_OF_TURN, pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None, padding_side="left",
                                   additional_special_tokens=["<|im_start|>"])
    fast.add_tokens(ADDED)  # ordinary tokens: they survive skip_special_tokens decoding
    fast.chat_template = COMPACT_CHAT_TEMPLATE if compact_tools else THINKING_CHAT_TEMPLATE if thinking else CHAT_TEMPLATE
    fast.response_template = RESPONSE_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, texts: Iterable[str], *, seed: int = 0, vocab_size: int = 1024,
                     hidden_size: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 2048,
                     thinking: bool = False) -> Path:
    """Train a tokenizer on `texts`, make a random-init Qwen3 for it, save both to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tok = train_tokenizer(texts, vocab_size, thinking=thinking)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden_size // heads,  # default head_dim is 128
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               do_sample=True, temperature=1.0, top_k=None, top_p=1.0)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def fit_tiny_model(model_dir: str | Path, texts: list[str], *, steps: int = 100, lr: float = 3e-3,
                   batch_size: int = 8, seed: int = 0) -> dict:
    """Next-token training of a saved tiny model on whole `texts` (saved back in place): enough to
    teach it a format, e.g. a thinking model's `reasoning</think>action`, in seconds on a CPU. A plain
    loop rather than a Trainer: no data collation or checkpoints are needed at this size."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        batch = tok([rng.choice(texts) for _ in range(batch_size)], return_tensors="pt", padding=True,
                    padding_side="right", add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.save_pretrained(model_dir)
    return {"steps": steps, "first_loss": losses[0], "last_loss": sum(losses[-10:]) / len(losses[-10:])}
