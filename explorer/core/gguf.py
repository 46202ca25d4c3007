"""GGUF files: converted once into an ordinary transformers folder, keyed by the file's content.

A converted folder is named after a SHA-256 of the GGUF file's bytes, so a different file with the
same name and size (or an updated release) gets its own conversion. Hashing ~100 MB takes a few
tenths of a second, so each file's hash is remembered by (path, size, mtime): in memory, and in a
small JSON file next to the conversions for later processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import torch

from explorer.core.errors import ModelLoadError

_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def file_sha256(path: Path, memo_file: Path | None = None) -> str:
    """The hex SHA-256 of ``path``'s bytes, hashed once per (path, size, mtime)."""
    stamp = _stamp(path)
    with _HASH_LOCK:
        if stamp in _HASHES:
            return _HASHES[stamp]
    memo_key = "|".join(map(str, stamp))
    stored = _read_memo(memo_file)
    digest = stored.get(memo_key)
    if not isinstance(digest, str):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = h.hexdigest()
        if _stamp(path) != stamp:  # changed while being read: do not remember a torn hash
            return digest
        _write_memo(memo_file, memo_key, digest)
    with _HASH_LOCK:
        _HASHES[stamp] = digest
    return digest


def _read_memo(memo_file: Path | None) -> dict:
    if memo_file is None or not memo_file.is_file():
        return {}
    try:
        data = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(memo_file: Path | None, key: str, digest: str) -> None:
    if memo_file is None:
        return
    try:
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        data = _read_memo(memo_file)
        data[key] = digest
        tmp = memo_file.with_name(memo_file.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(memo_file)
    except OSError:
        pass  # a read-only cache only costs a rehash next time


def convert_gguf(gguf: Path, out_dir: Path, digest: str) -> None:
    """Dequantise a GGUF file once into an ordinary transformers folder (atomic rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    tmp.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(  # type: ignore[arg-type]  # a folder path is accepted
        str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    model.hf_quantizer = None  # type: ignore[assignment]  # so save_pretrained writes plain weights
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "explorer_source.json").write_text(json.dumps({"gguf_name": gguf.name, "sha256": digest,
                                                          "size": gguf.stat().st_size}))
    if out_dir.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return
    tmp.rename(out_dir)


def converted_folder(gguf: Path, root: Path) -> Path:
    """The conversion of ``gguf`` under ``root``, made on first use; keyed by the file's content."""
    digest = file_sha256(gguf, root / "gguf_hashes.json")
    out = root / "converted" / f"{gguf.stem}-sha256-{digest[:20]}"
    if not (out / "config.json").is_file():
        try:
            convert_gguf(gguf, out, digest)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(
                f"Could not read the GGUF file '{gguf.name}': {type(e).__name__}: {str(e)[:200]}. "
                "Check that it is a complete GGUF file of a causal LM."
            ) from e
    return out
