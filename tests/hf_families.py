"""transformers dual-encoder families as `hf-dir:` folders with random weights, and their reference embeddings.

Shared by tests/test_hf_models.py (tiny variants) and benchmarks/model_agreement.py (full sizes).
A folder holds what `save_pretrained` writes for a model, its tokenizer and its image processor;
tokenizers are trained here with the `tokenizers` library in the style of the family's own
(SentencePiece-like for CLIP and SigLIP, BERT WordPiece with Chinese characters split for ALIGN
and Chinese-CLIP). The reference is transformers' own: the image processor and tokenizer as
AutoImageProcessor / AutoTokenizer load them, then get_image_features / get_text_features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests.model_families import CORPUS, write_tokenizer

# Processor settings of the published checkpoints (their preprocessor_config.json).
CLIP_PROCESSOR = {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}}
SIGLIP_PROCESSOR = {"size": {"height": 224, "width": 224}}
SIGLIP2_NAFLEX_PROCESSOR = {"patch_size": 16, "max_num_patches": 256}  # google/siglip2-base-patch16-naflex
ALIGN_PROCESSOR = {  # kakaobrain/align-base: squash to 346, crop 289, x / 127.5 - 1
    "size": {"height": 346, "width": 346},
    "crop_size": {"height": 289, "width": 289},
    "do_center_crop": True,
    "rescale_factor": 1 / 127.5,
    "rescale_offset": True,
    "do_normalize": False,
    "include_top": False,
}
_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
_BERT = {**_TINY, "max_position_embeddings": 128, "type_vocab_size": 2}


@dataclass(frozen=True)
class HFFamily:
    model_type: str  # AutoConfig.for_model's name of the dual encoder
    text: dict  # text_config (vocab_size filled in from the tokenizer)
    vision: dict  # vision_config
    processor: str  # the image processor class
    processor_cfg: dict = field(default_factory=dict)
    tokenizer: str = "t5"  # TOKENIZER_STYLES key, or "bert"
    context: int = 77  # the tokenizer's model_max_length
    extra: dict = field(default_factory=dict)  # more arguments of the dual encoder's config
    padding: bool | str = True  # what the model's docs pass to the tokenizer
    lowercase: bool = False  # the model's docs: texts lowercased before the tokenizer


FAMILIES = {
    "clip": HFFamily(
        "clip",
        {**_TINY, "max_position_embeddings": 77},
        {**_TINY, "image_size": 224, "patch_size": 32},
        "CLIPImageProcessor",
        CLIP_PROCESSOR,
        extra={"projection_dim": 32},
    ),
    "siglip": HFFamily(
        "siglip",
        {**_TINY, "max_position_embeddings": 64},
        {**_TINY, "image_size": 224, "patch_size": 32},
        "SiglipImageProcessor",
        SIGLIP_PROCESSOR,
        context=64,
        padding="max_length",
        lowercase=True,
    ),
    "siglip2-naflex": HFFamily(
        "siglip2",
        {**_TINY, "max_position_embeddings": 64},
        {**_TINY, "num_patches": 256, "patch_size": 16},
        "Siglip2ImageProcessor",
        SIGLIP2_NAFLEX_PROCESSOR,
        context=64,
        padding="max_length",
        lowercase=True,
    ),
    "align": HFFamily(
        "align",
        _BERT,
        {
            "image_size": 289,
            "width_coefficient": 0.25,
            "depth_coefficient": 0.25,
            "hidden_dim": 64,
            "num_block_repeats": [1, 1, 1, 1, 1, 1, 1],
        },
        "EfficientNetImageProcessor",
        ALIGN_PROCESSOR,
        tokenizer="bert",
        context=64,
        extra={"projection_dim": 80},  # the width EfficientNet pools to at these coefficients, as ALIGN requires
        padding="max_length",
    ),
    "chinese-clip": HFFamily(
        "chinese_clip",
        _BERT,
        {**_TINY, "image_size": 224, "patch_size": 32},
        "ChineseCLIPImageProcessor",
        CLIP_PROCESSOR,
        tokenizer="bert",
        context=52,
        extra={"projection_dim": 32},
    ),
}


def write_hf_family(folder: Path, family: HFFamily, seed: int = 0) -> Path:
    """Write `family` with random weights (seeded) as a transformers model folder; returns the folder."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_bert_tokenizer(folder, family.context) if family.tokenizer == "bert" else None
    if vocab is None:
        vocab = write_tokenizer(folder, family.tokenizer, family.context)
    tokens = json.loads((folder / "tokenizer.json").read_text())
    specials = {t["content"]: t["id"] for t in tokens["added_tokens"]}
    text = {**family.text, "vocab_size": vocab, "pad_token_id": specials.get("<pad>", specials.get("[PAD]", 0))}
    if "</s>" in specials:  # CLIP pools at this id; the default (49407) is not in a small vocabulary
        text.update(eos_token_id=specials["</s>"], bos_token_id=specials["</s>"])
    config = AutoConfig.for_model(family.model_type, text_config=text, vision_config=family.vision, **family.extra)
    torch.manual_seed(seed)
    AutoModel.from_config(config).eval().save_pretrained(folder)
    getattr(transformers, family.processor)(**family.processor_cfg).save_pretrained(folder)
    return folder


def write_bert_tokenizer(folder: Path, context: int) -> int:
    """A small WordPiece tokenizer as BERT's: lower case, every Chinese character its own token."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(CORPUS * 4, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
    )
    names = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    return _save(folder, tokenizer, {**names, "mask_token": "[MASK]"}, context)


def _save(folder: Path, tokenizer, names: dict, context: int) -> int:
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context, **names})
    )
    return tokenizer.get_vocab_size()


class HFReference:
    """transformers' own model, image processor and tokenizer for a folder, in fp32."""

    def __init__(self, folder: Path, family: HFFamily) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(folder).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.padding, self.lowercase = family.padding, family.lowercase

    def images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            # pixel_values, and for NaFlex also pixel_attention_mask and spatial_shapes
            inputs = self.processor(images=images, return_tensors="pt")
            return _normalised(self.model.get_image_features(**inputs))

    def texts(self, texts: list[str]) -> np.ndarray:
        import torch

        texts = [text.lower() for text in texts] if self.lowercase else texts
        with torch.inference_mode():
            tokens = self.tokenizer(texts, padding=self.padding, truncation=True, return_tensors="pt")
            return _normalised(self.model.get_text_features(**tokens))


def _normalised(out) -> np.ndarray:
    import torch

    feats = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(feats, dim=-1).numpy()
