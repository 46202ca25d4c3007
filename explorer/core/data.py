"""Where the files shipped inside the package live (text corpora, task files, concept and domain sets)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA_DIR / "corpus.txt"
