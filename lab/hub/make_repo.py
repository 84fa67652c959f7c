#!/usr/bin/env python3
"""Generate a small but realistic MiniMax model repo for the lab hub (test-only).

  python lab/hub/make_repo.py --root DIR [--model m3|m2.5|all] [--shards N] [--shard-mib MIB]

writes ``DIR/SglLab/MiniMax-M3-Lab`` and/or ``DIR/SglLab/MiniMax-M2.5-Lab`` with:
config.json (real architecture + model_type), generation_config.json, configuration.json,
tokenizer.json + tokenizer_config.json (a real byte-level BPE built with ``tokenizers``,
loadable by transformers' AutoTokenizer, with a chat template), preprocessor_config.json (M3,
vision), model.safetensors.index.json and N valid safetensors shards filled with seeded
pseudo-random bytes, docs/deploy_guide.md (a nested path). Same bytes on every run.

Needs the ``tokenizers`` package (in the SGLang venv: .venv-sglang/bin/python).
The tensors are noise: this repo is for download/deploy tests and the lab engine, not SGLang.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import struct
import sys
from pathlib import Path

OWNER = "SglLab"
LAB_NOTE = {
    "generator": "lab/hub/make_repo.py",
    "note": "test-only repo: tensors are seeded pseudo-random bytes; the tokenizer is a small lab BPE",
}

# ---------------------------------------------------------------------------------------------
# configs. Architecture names and model_type are the ones SGLang 0.5.23 dispatches on
# (srt/models/minimax_m2.py MiniMaxM2ForCausalLM; srt/models/minimax_m3_vl.py
# MiniMaxM3SparseForConditionalGeneration; srt/configs/minimax_vl.py MiniMaxM3VLConfig.model_type
# = "minimax_m3_vl", its text_config.model_type "minimax_m2"). Numbers follow the public
# MiniMax-M2.x config and, for M3, transformers 5.19's MiniMaxM3VL*Config defaults (which name the
# MiniMaxAI/MiniMax-M3 checkpoint); the per-layer sparse/MoE patterns are lab values.
# ---------------------------------------------------------------------------------------------
M2_TEXT = {
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 3072,
    "intermediate_size": 1536,
    "max_position_embeddings": 196608,
    "num_attention_heads": 48,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 62,
    "num_key_value_heads": 8,
    "num_local_experts": 256,
    "num_mtp_modules": 3,
    "qk_norm_type": "per_layer",
    "rms_norm_eps": 1e-06,
    "rope_theta": 5000000,
    "rotary_dim": 64,
    "scoring_func": "sigmoid",
    "shared_intermediate_size": 0,
    "tie_word_embeddings": False,
    "use_mtp": True,
    "use_qk_norm": True,
    "use_routing_bias": True,
    "vocab_size": 200064,
}

FP8_QUANT = {
    "activation_scheme": "dynamic",
    "fmt": "float8_e4m3fn",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
    "modules_to_not_convert": ["gate", "e_score_correction_bias", "lm_head"],
}

SPECIAL_M2 = ["]~!b[", "]~b]", "[e~[", "<think>", "</think>", "<minimax:tool_call>", "</minimax:tool_call>"]
SPECIAL_M3 = ["]~!b[", "]~b]", "[e~[", "]<]minimax[>[", "<mm:think>", "</mm:think>", "<tool_call>", "</tool_call>",
              "<image>", "<video>"]

_CONTENT = (
    "{%- macro content(c) -%}{%- if c is string -%}{{ c }}{%- elif c -%}{%- for p in c -%}"
    "{%- if p.type == 'text' -%}{{ p.text }}{%- elif p.type in ['image', 'image_url'] -%}<image>"
    "{%- elif p.type in ['video', 'video_url'] -%}<video>{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}"
)

CHAT_TEMPLATE_M2 = _CONTENT + """
{%- set ns = namespace(system='You are a helpful assistant.') -%}
{%- for m in messages if m.role == 'system' %}{% set ns.system = content(m.content) %}{% endfor -%}
]~!b[]~b]system
{{ ns.system }}
{%- if tools %}

# Tools
You may call one or more tools to assist with the user query.
<tools>
{% for t in tools %}{{ t | tojson }}
{% endfor %}</tools>
To call tools, reply with:
<minimax:tool_call>
<invoke name="tool-name">
<parameter name="param-key">param-value</parameter>
</invoke>
</minimax:tool_call>
{%- endif %}[e~[
{% for m in messages if m.role != 'system' -%}
{%- if m.role == 'user' -%}
]~b]user
{{ content(m.content) }}[e~[
{% elif m.role == 'assistant' -%}
]~b]ai
{{ content(m.content) }}
{%- if m.tool_calls %}
<minimax:tool_call>
{% for tc in m.tool_calls %}<invoke name="{{ tc.function.name }}">
{% set args = tc.function.arguments %}{% if args is string %}{{ args }}{% else %}{% for k, v in args.items() %}<parameter name="{{ k }}">{{ v if v is string else (v | tojson) }}</parameter>
{% endfor %}{% endif %}</invoke>
{% endfor %}</minimax:tool_call>
{%- endif %}[e~[
{% elif m.role == 'tool' -%}
]~b]tool
<response>{{ content(m.content) }}</response>[e~[
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
]~b]ai
<think>
{% endif -%}
"""

CHAT_TEMPLATE_M3 = _CONTENT + """
{%- set ns = namespace(system='You are a helpful assistant.') -%}
{%- for m in messages if m.role == 'system' %}{% set ns.system = content(m.content) %}{% endfor -%}
]~!b[]~b]system
{{ ns.system }}
{%- if tools %}

# Tools
<tools>
{% for t in tools %}{{ t | tojson }}
{% endfor %}</tools>
To call a tool: ]<]minimax[>[<tool_call>]<]minimax[>[<invoke name="fn">]<]minimax[>[<arg>value]<]minimax[>[</arg>]<]minimax[>[</invoke>]<]minimax[>[</tool_call>
{%- endif %}[e~[
{% for m in messages if m.role != 'system' -%}
{%- if m.role == 'user' -%}
]~b]user
{{ content(m.content) }}[e~[
{% elif m.role == 'assistant' -%}
]~b]ai
{% if m.reasoning_content %}<mm:think>{{ m.reasoning_content }}</mm:think>
{% endif %}{{ content(m.content) }}
{%- for tc in m.tool_calls or [] %}
]<]minimax[>[<tool_call>]<]minimax[>[<invoke name="{{ tc.function.name }}">
{%- set args = tc.function.arguments %}{% if args is string %}{{ args }}{% else %}{% for k, v in args.items() %}]<]minimax[>[<{{ k }}>{{ v if v is string else (v | tojson) }}]<]minimax[>[</{{ k }}>{% endfor %}{% endif -%}
]<]minimax[>[</invoke>]<]minimax[>[</tool_call>
{%- endfor %}[e~[
{% elif m.role == 'tool' -%}
]~b]tool
{{ content(m.content) }}[e~[
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
]~b]ai
{% if thinking_mode is defined and thinking_mode == 'enabled' %}<mm:think>{% endif %}
{%- endif -%}
"""


def model_specs() -> dict:
    m2_config = {
        "architectures": ["MiniMaxM2ForCausalLM"],
        "attn_type_list": [1] * M2_TEXT["num_hidden_layers"],
        "auto_map": {
            "AutoConfig": "configuration_minimax_m2.MiniMaxM2Config",
            "AutoModelForCausalLM": "modeling_minimax_m2.MiniMaxM2ForCausalLM",
        },
        "model_type": "minimax_m2",
        **M2_TEXT,
        "quantization_config": FP8_QUANT,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.1",
        "use_cache": True,
        "sgl_lab": LAB_NOTE,
    }
    m3_layers = 60
    m3_text = {  # transformers' MiniMaxM3VLTextConfig defaults (annotated checkpoint MiniMaxAI/MiniMax-M3)
        "model_type": "minimax_m2",
        "architectures": ["MiniMaxM3SparseForCausalLM"],
        "vocab_size": 200064,
        "hidden_size": 6144,
        "intermediate_size": 3072,
        "dense_intermediate_size": 12288,
        "shared_intermediate_size": 3072,
        "num_hidden_layers": m3_layers,
        "num_attention_heads": 64,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "hidden_act": "swigluoai",
        "swiglu_alpha": 1.702,
        "swiglu_limit": 7.0,
        "max_position_embeddings": 524288,
        "rms_norm_eps": 1e-06,
        "rope_theta": 5000000,
        "rotary_dim": 64,
        "num_experts_per_tok": 4,
        "num_local_experts": 128,
        "routed_scaling_factor": 2.0,
        "bos_token_id": 200034,
        "eos_token_id": 200020,
        "tie_word_embeddings": False,
        "moe_layer_freq": [0] + [1] * (m3_layers - 1),
        "sparse_attention_config": {  # keys read by sglang srt/configs/model_config.py + transformers
            "sparse_attention_freq": [0 if i % 4 == 3 else 1 for i in range(m3_layers)],
            "sparse_num_index_heads": 4,
            "sparse_index_dim": 128,
            "sparse_block_size": 128,
            "sparse_topk_blocks": 16,
            "sparse_local_block": 1,
            "sparse_score_type": "max",
        },
    }
    m3_config = {
        "architectures": ["MiniMaxM3SparseForConditionalGeneration"],
        "model_type": "minimax_m3_vl",
        "text_config": m3_text,
        "vision_config": {  # transformers' MiniMaxM3VLVisionConfig defaults
            "model_type": "minimax_m3_vl_vision",
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_attention_heads": 16,
            "num_hidden_layers": 32,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "image_size": 2016,
            "num_channels": 3,
            "hidden_act": "gelu",
            "layer_norm_eps": 1e-05,
        },
        "image_token_index": 200025,
        "video_token_index": 200026,
        "projector_hidden_size": 6144,
        "image_seq_length": 576,
        "process_image_mode": "dynamic_res",
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": True,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "img_token_compression_config": {"spatial_merge_size": 2, "temporal_patch_size": 2},
        "quantization_config": FP8_QUANT,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.57.1",
        "sgl_lab": LAB_NOTE,
    }
    return {
        "m3": {"name": "MiniMax-M3-Lab", "config": m3_config, "specials": SPECIAL_M3, "template": CHAT_TEMPLATE_M3,
               "vision": True, "layers": m3_text["num_hidden_layers"]},
        "m2.5": {"name": "MiniMax-M2.5-Lab", "config": m2_config, "specials": SPECIAL_M2, "template": CHAT_TEMPLATE_M2,
                 "vision": False, "layers": M2_TEXT["num_hidden_layers"]},
    }


# ---------------------------------------------------------------------------------------------
def corpus(seed: str) -> list[str]:
    """A deterministic English-ish + code + chat corpus for the BPE trainer."""
    rng = random.Random(seed)
    words = (
        "the a of to and in is for on with that by this be are from or as at an it model weights server "
        "deploy host token request response latency throughput tensor parallel expert gpu memory cache "
        "prefill decode batch stream reasoning tool call function weather city temperature today what "
        "how why when where who please answer question image video describe count list json value key "
        "hello world thanks sure here result error retry timeout config path file download mirror hub"
    ).split()
    lines = []
    for _ in range(3000):
        n = rng.randint(4, 14)
        s = " ".join(rng.choice(words) for _ in range(n))
        lines.append(s.capitalize() + rng.choice([".", "?", "!", ":"]))
    for i in range(300):
        lines.append(f'def f{i}(x, y={i}):\n    return {{"value": x * {i} + y, "ok": True}}\n')
        lines.append(f"{rng.randint(0, 10**6)} + {rng.randint(0, 999)} = {rng.randint(0, 10**6)}")
    return lines


def build_tokenizer(spec: dict, out: Path) -> int:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        sys.exit("make_repo.py needs the `tokenizers` package: run it with .venv-sglang/bin/python")
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=spec["specials"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(spec["name"]), trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    return tok.get_vocab_size()


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def tensor_plan(layers: int, vision: bool):
    """Endless, deterministic sequence of (name, columns) in checkpoint order."""
    yield "model.embed_tokens.weight", 1024
    if vision:
        for i in range(4):
            yield f"vision_tower.encoder.layers.{i}.self_attn.qkv_proj.weight", 640
            yield f"vision_tower.encoder.layers.{i}.mlp.fc1.weight", 640
        yield "multi_modal_projector.linear_1.weight", 512
    i = 0
    while True:
        layer = i % layers
        p = f"model.layers.{layer}"
        yield f"{p}.input_layernorm.weight", 64
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"{p}.self_attn.{proj}.weight", 512
        yield f"{p}.block_sparse_moe.gate.weight", 256
        for e in range(2):
            for w in ("w1", "w2", "w3"):
                yield f"{p}.block_sparse_moe.experts.{(i // layers) * 2 + e}.{w}.weight", 384
        i += 1


def write_shards(repo: Path, spec: dict, shards: int, shard_bytes: int) -> int:
    """Valid safetensors files: 8-byte header length, JSON header, BF16 data (seeded noise)."""
    plan = tensor_plan(spec["layers"], spec["vision"])
    weight_map: dict[str, str] = {}
    total = 0
    row_bytes = 2  # bf16
    for k in range(1, shards + 1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        while offset < shard_bytes:
            name, cols = next(plan)
            per_row = cols * row_bytes
            rows = max(1, min(256, (shard_bytes - offset) // per_row))
            if (shard_bytes - offset) < per_row:  # fill the tail exactly with a 1-D tensor
                rows, cols = 1, (shard_bytes - offset) // row_bytes
                per_row = cols * row_bytes
                if cols == 0:
                    break
            nbytes = rows * per_row
            header[name] = {"dtype": "BF16", "shape": [rows, cols] if rows > 1 else [cols],
                            "data_offsets": [offset, offset + nbytes]}
            weight_map[name] = fname
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        rng = random.Random(f"{spec['name']}:{fname}")
        with open(repo / fname, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            left = offset
            while left:
                n = min(left, 16 << 20)
                f.write(rng.randbytes(n))
                left -= n
        total += offset
    write_json(repo / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    return total


def make_repo(root: Path, which: str, shards: int, shard_mib: float) -> Path:
    spec = model_specs()[which]
    repo = root / OWNER / spec["name"]
    repo.mkdir(parents=True, exist_ok=True)
    write_json(repo / "config.json", spec["config"])
    write_json(repo / "generation_config.json", {
        "bos_token_id": 0, "eos_token_id": 2, "do_sample": True,
        "temperature": 1.0, "top_p": 0.95, "top_k": 40, "transformers_version": "4.57.1",
    })
    write_json(repo / "configuration.json", {"framework": "pytorch", "task": "text-generation"})
    vocab = build_tokenizer(spec, repo)
    write_json(repo / "tokenizer_config.json", {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "]~!b[",
        "eos_token": "[e~[",
        "unk_token": "[e~[",
        "pad_token": "[e~[",
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": spec["config"].get("max_position_embeddings")
        or spec["config"]["text_config"]["max_position_embeddings"],
        "chat_template": spec["template"].strip() + "\n",
        "sgl_lab": dict(LAB_NOTE, vocab_size=vocab),
    })
    if spec["vision"]:
        write_json(repo / "preprocessor_config.json", {
            "processor_class": "MiniMaxM3VLProcessor",
            "image_processor_type": "MiniMaxM31ImageProcessor",
            "patch_size": 14,
            "size": [672, 672],
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "img_token_compression_config": {"spatial_merge_size": 2, "temporal_patch_size": 2},
            "process_image_mode": "dynamic_res",
        })
    write_shards(repo, spec, shards, int(shard_mib * (1 << 20)))
    (repo / "docs").mkdir(exist_ok=True)
    (repo / "docs" / "deploy_guide.md").write_text(
        f"# {spec['name']}\n\nTest-only repo generated by lab/hub/make_repo.py for the SGLang deploy lab.\n"
        f"Architecture: {spec['config']['architectures'][0]}; model_type: {spec['config']['model_type']}.\n"
    )
    return repo


def tree_digest(repo: Path) -> str:
    """sha256 over (path, sha256(file)) of a repo, for determinism checks."""
    h = hashlib.sha256()
    for p in sorted(x for x in repo.rglob("*") if x.is_file()):
        h.update(p.relative_to(repo).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, type=Path, help="hub root (<root>/SglLab/<name>)")
    ap.add_argument("--model", choices=("m3", "m2.5", "all"), default="all")
    ap.add_argument("--shards", type=int, default=2, help="number of safetensors shards (>= 1)")
    ap.add_argument("--shard-mib", type=float, default=4, help="data size of each shard in MiB (benchmarks: 256+)")
    args = ap.parse_args(argv)
    out = {}
    for which in (["m3", "m2.5"] if args.model == "all" else [args.model]):
        repo = make_repo(args.root, which, args.shards, args.shard_mib)
        out[f"{OWNER}/{repo.name}"] = {"path": str(repo), "digest": tree_digest(repo),
                                       "bytes": sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
