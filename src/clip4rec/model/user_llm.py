"""User tower on a pretrained small LM: SmolLM2-135M, first N layers, fed item vectors via `inputs_embeds`.

Lite-LLM4Rec's point: the LLM reads item *vectors* (no item text tokens, no generative decoding), so a
sequence of 50 items costs 50 positions. An adapter maps item space -> LM width and back. The LM's weights
are trained fully, frozen, or through LoRA on the attention projections (the default: small and stable).

What a mode trains, exactly (tests/test_user_llm.py counts it): the two adapters always; `frozen` nothing
of the LM; `lora` rank-r A and B on every q_proj and v_proj (``peft``); `full` every LM weight (decoder layers
and final norm). The placeholder token embedding is never read (inputs_embeds) and is never trained.

Cost: the LM dominates (its matmuls are ~80% of a training step on the CPU), so exact savings are small:
no KV cache (nothing is generated) and no 4-D padding mask when the batch is right-padded (the causal mask
already keeps every real position off the padding to its right) gain a few % of a step. The large levers
change the model or its arithmetic: fewer layers (cost is linear in them), `compute_dtype="bfloat16"` (the
LM's matmuls under autocast, 1.3-2x per epoch on an AVX512-BF16 CPU; adapters, loss and the weights stay
float32), and, for a user vector, `last_hidden` (the last layer at one position). Serving adds two more
(`for_serving`, `item_keys_values`): weights stored column-major for one-row products, and, in a one-layer
tower, each item's keys and values computed once per item instead of once per request. bench/backbones.py
and bench/serve_latency.py measure them.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


LORA_TARGETS = ("q_proj", "v_proj")
LORA_ALPHA = 16.0
# Keys of the hand-written LoRA that Runs saved before peft hold, and what peft names the same tensors.
_OLD_LORA_KEY = re.compile(r"\.(q_proj|v_proj)\.(base\.weight|lora_a|lora_b)$")
_NEW_LORA_KEY = {"base.weight": "base_layer.weight", "lora_a": "lora_A.default.weight",
                 "lora_b": "lora_B.default.weight"}


def add_lora(llm: nn.Module, rank: int, alpha: float = LORA_ALPHA) -> None:
    """LoRA (``peft``) on every q_proj and v_proj: y = W x + (alpha / r) B A x, W frozen, B zero at init (the
    tower starts as the pretrained layers), A Kaiming-uniform, no dropout, no bias.

    peft's layer constructors draw from the global RNG (nn.Linear's own initialisation) before it draws A again;
    the RNG is forked around them and A is drawn here, layer by layer, q before v, from the caller's RNG: what
    the hand-written LoRA this replaced drew, so a seed gives the same tower, and every module built after it
    (item side, head) the same initial weights, as before.
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none", target_modules=list(LORA_TARGETS))
    with torch.random.fork_rng(devices=[]):
        inject_adapter_in_model(config, llm)
    for layer in llm.layers:
        for name in LORA_TARGETS:
            nn.init.kaiming_uniform_(getattr(layer.self_attn, name).lora_A["default"].weight, a=math.sqrt(5))


def _upgrade_lora_keys(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Load-time hook: rename a pre-peft Run's LoRA tensors (q_proj.lora_a, ...) to peft's names, in place."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        match = _OLD_LORA_KEY.search(key)
        if match:
            state_dict[key[: match.start(2)] + _NEW_LORA_KEY[match.group(2)]] = state_dict.pop(key)


def load_smollm2_layers(n_layers: int) -> nn.Module:
    """The first `n_layers` decoder layers of SmolLM2-135M (from the offline GGUF, de-quantised and cached)."""
    from transformers import AutoConfig, AutoModel

    from clip4rec.pretrained import dequantised_dir, find_gguf

    folder, _ = dequantised_dir(find_gguf())
    config = AutoConfig.from_pretrained(folder)
    if n_layers > config.num_hidden_layers:
        raise ValueError(f"SmolLM2-135M has {config.num_hidden_layers} layers; asked for {n_layers}")
    config.num_hidden_layers = n_layers
    config.use_cache = False  # a tower reads whole sequences; a KV cache would only copy keys and values
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped upper layers are reported as "unexpected" keys: expected here
    try:
        # local_files_only: the weights are the packaged GGUF's de-quantised copy; never reach for the hub.
        model = AutoModel.from_pretrained(folder, config=config, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return _without_token_table(model)


def empty_smollm2_layers(config: dict[str, Any]) -> nn.Module:
    """The layers `config` (from `lm_config`) describes, with freshly initialised weights and nothing read from
    the packaged ones: the skeleton a saved Run's weights are loaded into (a Run saves every LM weight, frozen
    ones included, so none has to come from the pretrained file)."""
    from transformers import CONFIG_MAPPING, AutoModel

    settings = dict(config)
    return _without_token_table(AutoModel.from_config(CONFIG_MAPPING[settings.pop("model_type")].from_dict(settings)))


def lm_config(llm: nn.Module) -> dict[str, Any]:
    """The LM's architecture as plain JSON (what `empty_smollm2_layers` rebuilds it from). The path it was read
    from is left out: it names this machine's cache, and the Run may be read on another. Keys sorted: a config
    rebuilt from this lists them in another order, and a reloaded Run should save the same run.json."""
    return {k: v for k, v in sorted(llm.config.to_dict().items()) if k != "_name_or_path"}


def _without_token_table(model: nn.Module) -> nn.Module:
    # Items arrive as vectors (inputs_embeds): the 49k-token embedding table is never read, so drop it. The
    # 1-row placeholder keeps the module's structure (and saved Runs' keys); frozen, as nothing reads it.
    model.embed_tokens = nn.Embedding(1, model.config.hidden_size).requires_grad_(False)
    return model


def is_right_padded(mask: torch.Tensor) -> bool:
    """True when every row's real positions form a prefix (no real position after a padded one)."""
    return not bool((mask[:, 1:] & ~mask[:, :-1]).any())


class SmolLMTower(nn.Module):
    def __init__(self, hidden: int, n_layers: int = 2, max_len: int = 50, train_mode: str = "lora",
                 lora_rank: int = 8, dropout: float = 0.1, llm: nn.Module | None = None,
                 compute_dtype: str = "float32"):
        super().__init__()
        if compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"unknown compute dtype {compute_dtype!r}; use float32 or bfloat16")
        self.max_len = max_len
        self.compute_dtype = compute_dtype
        self.llm = llm if llm is not None else load_smollm2_layers(n_layers)
        width = self.llm.config.hidden_size
        self.adapter_in = nn.Sequential(nn.Linear(hidden, width), nn.Dropout(dropout))
        self.adapter_out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.LayerNorm(hidden))
        if train_mode in ("frozen", "lora"):
            self.llm.requires_grad_(False)
        self.llm.embed_tokens.requires_grad_(False)  # never read (inputs_embeds), so never trained
        if train_mode == "lora":
            add_lora(self.llm, lora_rank)
            self.register_load_state_dict_pre_hook(_upgrade_lora_keys)
        elif train_mode not in ("full", "frozen"):
            raise ValueError(f"unknown LLM training mode {train_mode!r}; use full, frozen or lora")

    def merge_lora(self) -> None:
        """Fold LoRA into the frozen weights, for serving: each q_proj and v_proj becomes one Linear with weight
        W + (alpha / r) B A. The tower computes the same function (up to float rounding) with two matmuls less
        per projection and without peft's wrapper, which is a measurable share of a one-layer tower's request.
        Irreversible (the adapters are gone), so only for a model that is served, never one that trains on or
        is saved again. A tower without LoRA is left as it is."""
        for layer in self.llm.layers:
            attn = layer.self_attn
            for name in LORA_TARGETS:
                module = getattr(attn, name)
                if hasattr(module, "lora_A"):
                    module.merge()
                    setattr(attn, name, module.get_base_layer())

    def for_serving(self) -> None:
        """Make the tower cheap to serve, with the function it computes unchanged (up to float rounding): LoRA
        folded in (merge_lora), and every linear weight stored column-major (the same values, transposed
        storage). A request is a batch of one or a few rows, so each projection is a matrix-vector product, and
        over a row-major [out, in] weight MKL's transposed kernel ran ~2x slower on this project's CPU than over
        the column-major copy (bench/serve_latency.py measures the tower). Irreversible, like merge_lora."""
        self.merge_lora()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.detach().t().contiguous().t(), requires_grad=False)

    @torch.inference_mode()
    def item_keys_values(self, inputs: torch.Tensor, chunk: int = 16384) -> torch.Tensor | None:
        """[n, 2 * kv width]: for each item vector, the first layer's keys and values before the rotary
        position is applied; None unless the LM has one layer.

        In a one-layer tower they depend on the item alone: the layer reads adapter_in(item vector) through a
        norm and two projections, and the position enters only afterwards, by rotation. A service computes them
        once per catalog item (`last_hidden(..., keys_values=...)` then reads them for a request's history),
        so a request computes the attention, MLP and adapters at one position. Computed in chunks, so the
        [chunk, LM width] intermediate, not the catalog's, bounds the memory."""
        if len(self.llm.layers) != 1:
            return None
        layer = self.llm.layers[0]
        attn = layer.self_attn
        parts = []
        for start in range(0, len(inputs), chunk):
            with self._compute(inputs.device):
                normed = layer.input_layernorm(self.adapter_in(inputs[start: start + chunk]))
                parts.append(torch.cat([attn.k_proj(normed), attn.v_proj(normed)], dim=-1).float())
        return torch.cat(parts) if parts else inputs.new_zeros((0, 2 * attn.k_proj.out_features))

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if inputs.shape[1] > self.max_len:
            raise ValueError(f"sequence length {inputs.shape[1]} exceeds max_len {self.max_len}")
        # Right padding + the LM's own causal mask: real positions never attend to padding, so the padding mask
        # changes nothing they see; leaving it out lets attention take the plain causal path (no [B, 1, L, L]
        # mask built per call). Padded positions' outputs are then meaningless, and nobody reads them.
        attention_mask = None if is_right_padded(mask) else mask.long()
        embeds = self.adapter_in(inputs)
        with self._compute(embeds.device):
            out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self.adapter_out(out.float())

    def last_hidden(self, inputs: torch.Tensor, mask: torch.Tensor,
                    keys_values: torch.Tensor | None = None) -> torch.Tensor:
        """forward(inputs, mask)[row, last real position of row], [B, H], computed without the rest.

        A user vector is the output at the last real position only. Every layer but the last still needs all
        positions (they are the last layer's keys and values), but the last layer needs keys and values of all
        positions and queries, attention output and MLP at one position per row: with 1-2 layers that is most
        of the work of a request. Same numbers as forward() up to float rounding (tests/test_user_llm.py).

        `keys_values` [B, L, 2 * kv width] (a one-layer LM only): each position's item_keys_values row, read
        from a per-item cache instead of computed from `inputs`, of which only the last position is then read.
        """
        if inputs.shape[1] > self.max_len:
            raise ValueError(f"sequence length {inputs.shape[1]} exceeds max_len {self.max_len}")
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = torch.where(mask, positions, 0).max(1).values  # = mask.sum(1) - 1 when right-padded
        if not is_right_padded(mask):  # the shortcut relies on right padding; anything else takes the full path
            return self.forward(inputs, mask)[torch.arange(len(last), device=last.device), last]
        if keys_values is not None and len(self.llm.layers) != 1:
            raise ValueError(f"cached keys and values need a one-layer LM; this one has {len(self.llm.layers)}")
        rows = torch.arange(len(last), device=last.device)
        position_ids = positions[None]
        if keys_values is not None:
            x_last = self.adapter_in(inputs[rows, last])
            with self._compute(x_last.device):
                out = self._last_layer(x_last, last, position_ids, keys_values=keys_values)
            return self.adapter_out(out.float())
        x = self.adapter_in(inputs)
        with self._compute(x.device):
            if len(self.llm.layers) > 1:
                cos_sin = self.llm.rotary_emb(x, position_ids=position_ids)
                for layer in self.llm.layers[:-1]:
                    x = layer(x, attention_mask=None, position_ids=position_ids, position_embeddings=cos_sin)
            out = self._last_layer(x[rows, last], last, position_ids, hidden=x)
        return self.adapter_out(out.float())

    def _compute(self, device: torch.device):
        if self.compute_dtype == "bfloat16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _last_layer(self, x_last: torch.Tensor, last: torch.Tensor, position_ids: torch.Tensor,
                    hidden: torch.Tensor | None = None, keys_values: torch.Tensor | None = None) -> torch.Tensor:
        """The LM's final hidden state at position last[b] of each row b (right-padded, causal), from the last
        layer's input at that position (`x_last` [B, W]) and, for keys and values, either that layer's input at
        every position (`hidden` [B, L, W]) or their cached projections (`keys_values`)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

        layer = self.llm.layers[-1]
        attn = layer.self_attn
        b = len(last)
        if keys_values is None:
            normed = layer.input_layernorm(hidden)
            k, v = attn.k_proj(normed), attn.v_proj(normed)
            q_in = normed[torch.arange(b, device=last.device), last]
        else:
            k, v = keys_values.split(keys_values.shape[-1] // 2, dim=-1)
            q_in = layer.input_layernorm(x_last)
        length = k.shape[1]
        k = k.view(b, length, -1, attn.head_dim).transpose(1, 2)
        v = v.view(b, length, -1, attn.head_dim).transpose(1, 2)
        cos, sin = self.llm.rotary_emb(x_last, position_ids=position_ids)  # float32, as the residual stream
        k, _ = apply_rotary_pos_emb(k, k, cos, sin)
        q = attn.q_proj(q_in[:, None]).view(b, 1, -1, attn.head_dim).transpose(1, 2)
        q, _ = apply_rotary_pos_emb(q, q, cos[0, last][:, None], sin[0, last][:, None])
        # The causal row of position last[b]: keys 0..last[b] (with right padding, all of them real).
        keys = (torch.arange(length, device=last.device)[None, :] <= last[:, None])[:, None, None, :]
        groups = attn.num_key_value_groups
        y = F.scaled_dot_product_attention(q, repeat_kv(k, groups).to(q.dtype), repeat_kv(v, groups).to(q.dtype),
                                           attn_mask=keys, scale=attn.scaling)
        h = x_last[:, None] + attn.o_proj(y.transpose(1, 2).reshape(b, 1, -1))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.llm.norm(h)[:, 0]
