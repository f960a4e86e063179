"""pixseek's bundled data: the demo model (a small CLIP trained on generated shapes) and the shapes generator.

Installed as the package `pixseek_data` (pyproject.toml maps this folder to that name), so the demo
works from a plain `pip install`, not only from a checkout.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo-model"
# The same world captioned in English and Chinese, as a transformers model (data/train_zh_model.py).
DEMO_ZH_MODEL_DIR = Path(__file__).resolve().parent / "demo-model-zh"
