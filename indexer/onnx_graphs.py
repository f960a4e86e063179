"""The torch modules indexer/onnx_export.py traces into ONNX graphs; imported at export time only.

Each wraps a tower of a loaded open_clip model so that its graph takes what pixseek has in hand
(uint8 pixels, token ids) and returns what it stores (L2-normalised float32 vectors).
"""

from __future__ import annotations

import open_clip
import torch
from open_clip.transformer import text_global_pool
from torch.nn import functional


class ImageTower(torch.nn.Module):
    """uint8 (N, S, S, 3) -> vectors: the Encoder's pixels_to_tensor + encode_image + normalise."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.visual = model.visual
        # The model's own normalisation, with open_clip's defaults where its config names none.
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        dtype = next(model.visual.parameters()).dtype
        for name, default in (("mean", open_clip.OPENAI_DATASET_MEAN), ("std", open_clip.OPENAI_DATASET_STD)):
            self.register_buffer(name, (torch.tensor(cfg.get(name, default)) * 255).to(dtype).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels.permute(0, 3, 1, 2).to(self.mean.dtype) - self.mean) / self.std
        return functional.normalize(self.visual(x).float(), dim=-1)


def trimmable(model: torch.nn.Module) -> bool:
    """Whether the text graph may run on tokens cut after the longest text (indexer/model.py encode_tokens).

    Exact for CLIP's own text tower: causal, pooled at the end-of-text token. The export rewrites
    its attention (SelfAttention below), which covers plain self-attention only.
    """
    if type(model) is not open_clip.CLIP or model.text_pool_type != "argmax" or model.attn_mask is None:
        return False
    return all(
        type(b.attn) is torch.nn.MultiheadAttention
        and b.attn.batch_first
        and b.attn._qkv_same_embed_dim
        and b.attn.bias_k is None
        and not b.attn.add_zero_attn
        for b in model.transformer.resblocks
    )


class TextTower(torch.nn.Module):
    """int64 (N, L) token ids -> vectors; L is free up to the context length when `trim`."""

    def __init__(self, model: torch.nn.Module, trim: bool) -> None:
        super().__init__()
        self.model = model
        self.trim = trim
        if trim:
            for block in model.transformer.resblocks:
                block.attn = SelfAttention(block.attn)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.trim:
            return functional.normalize(self.model.encode_text(tokens).float(), dim=-1)
        m = self.model
        used = tokens.shape[1]
        x = m.token_embedding(tokens) + m.positional_embedding[:used]
        x = m.transformer(x, attn_mask=m.attn_mask[:used, :used])
        x = text_global_pool(m.ln_final(x), tokens, m.text_pool_type)
        projection = m.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return functional.normalize(x.float(), dim=-1)


class SelfAttention(torch.nn.Module):
    """nn.MultiheadAttention's self-attention, written so the tracer keeps the sequence length free.

    Traced as is, MultiheadAttention reshapes by the sample's length, which a graph meant for
    texts of any length cannot do. Same weights, same arithmetic.
    """

    def __init__(self, attn: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        self.heads = attn.num_heads
        self.in_proj_weight = attn.in_proj_weight
        self.in_proj_bias = attn.in_proj_bias
        self.out_proj = attn.out_proj

    def forward(
        self,
        q_x: torch.Tensor,
        k_x: torch.Tensor,
        v_x: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        batch, _, width = q_x.shape
        qkv = functional.linear(q_x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(batch, -1, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, -1, width)), None


def image_sample(size: tuple[int, int]) -> torch.Tensor:
    return torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def text_sample(context_length: int, trim: bool) -> torch.Tensor:
    """Two texts of distinct lengths, shorter than the context when trimming: a full-length
    sample would let the tracer fold the slices away and fix the sequence length."""
    sample = torch.zeros((2, 7 if trim else context_length), dtype=torch.long)
    sample[0, :4] = torch.tensor([49406, 320, 1125, 49407])
    sample[1, :6] = torch.tensor([49406, 320, 1125, 539, 1929, 49407])
    return sample
