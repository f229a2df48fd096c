"""Text-conditioned grounding: a U-Net whose decoder attends to the finding sentence, in the spirit of
ConTEXTual Net (Huemann et al., 2023), so one model proposes a mask for any finding text.

Architecture (``TextConditionedUNet``):

* encoder: MONAI ``ResidualUnit`` blocks (two conv-norm-act subunits, instance norm, PReLU); the first
  keeps the resolution, each next one downsamples by its stride (``channels[i] -> channels[i + 1]``);
* text: the sentence embedding ``(B, text_dim)`` is projected by one linear layer into ``text_tokens``
  tokens of width ``token_dim`` (LayerNorm); word-level embeddings ``(B, L, text_dim)`` with a padding
  mask are projected token by token instead;
* decoder: at the bottleneck and after every upsampling stage (MONAI ``UpSample`` transposed convolution,
  skip concatenation, ``ResidualUnit``) a ``LanguageAttention`` module lets each spatial position of the
  image features (queries, flattened) attend to the text tokens (keys and values) with multi-head
  cross-attention; the attended text vector ``a`` both gates the features and is added to them,
  ``f' = f * (1 + tanh(W_g a)) + W_v a`` (the gate, as in ConTEXTual Net's language attention, can
  silence features of regions the sentence does not describe; ``1 +`` keeps the identity reachable);
* head: a 1x1 convolution to ``out_channels`` logits;
* position (``position=True``): the network takes ``spatial_dims`` more input channels after the image's,
  the RAS+ position of every voxel in the *whole* volume (``volume_position``: millimetres from the
  volume's centre through the scan's affine, divided by ``POSITION_SCALE_MM``). They are concatenated to
  the image before any patch or sliding window is cut, so a window knows where in the body it lies and
  "right upper lobe" can be told from "left lower lobe" even when both look alike; training and
  inference build them the same way (``with_position``).

Images are ``(B, C, H, W)`` for radiographs and ``(B, C, H, W, D)`` for CT (axis order as the platform's
canonical arrays, X, Y[, Z]); spatial sizes need not be multiples of the total stride: the input is
zero-padded up to one and the logits cropped back. Cost of the attention is linear in the number of
voxels (keys are a handful of tokens), so it runs at full resolution.

``GroundingModel`` pairs a network with the sentence encoder (``ml.engine.text``): ``predict(image,
sentences)`` gives one probability map per sentence. Its ``spec`` is a network spec
``{"name": "TextConditionedUNet", "args": {...}, "text_encoder": "all-MiniLM-L6-v2"}`` that
``grounding_from_spec`` rebuilds; ``checkpoint()`` is ``{"network": spec, "state_dict": ...}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers.factories import Act, Norm
from torch import nn

from ml.engine.text import EMBEDDING_DIM, ENCODER_NAME, SentenceEncoder
from ml.specs import ModelError

NETWORK_NAME = "TextConditionedUNet"

Stride = int | Sequence[int]


class LanguageAttention(nn.Module):
    """Cross-attention from image positions to text tokens, gating and shifting the image features.

    ``forward(x, tokens, mask)``: ``x`` (B, C, *spatial), ``tokens`` (B, T, token_dim), ``mask`` (B, T)
    bool (True on real tokens) or None; returns (B, C, *spatial).
    """

    def __init__(self, channels: int, token_dim: int, heads: int, coords: int = 0) -> None:
        super().__init__()
        heads = max(h for h in range(1, max(1, heads) + 1) if channels % h == 0)
        self.norm = nn.LayerNorm(channels)
        self.position = nn.Linear(coords, channels, bias=False) if coords else None
        self.attn = nn.MultiheadAttention(
            channels, heads, kdim=token_dim, vdim=token_dim, batch_first=True
        )  # fmt: skip
        self.gate = nn.Linear(channels, channels)
        self.shift = nn.Linear(channels, channels)

    def forward(
        self,
        x: torch.Tensor,
        tokens: torch.Tensor,
        mask: torch.Tensor | None = None,
        position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``position`` ``(B, coords, *spatial)``: the whole volume's position of each feature (else the
        input's own coordinates in [-1, 1])."""
        b, c, *spatial = x.shape
        f = x.flatten(2).transpose(1, 2)  # (B, N, C)
        q = self.norm(f)
        if self.position is not None:
            if position is None:
                q = q + self.position(_coordinates(spatial, x.device, x.dtype))
            else:
                q = q + self.position(position.flatten(2).transpose(1, 2).to(q.dtype))
        pad = None if mask is None else ~mask
        a, _ = self.attn(q, tokens, tokens, key_padding_mask=pad, need_weights=False)
        f = f * (1.0 + torch.tanh(self.gate(a))) + self.shift(a)
        return f.transpose(1, 2).reshape(b, c, *spatial)


def _coordinates(spatial: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(N, len(spatial))`` coordinates in [-1, 1] of the flattened positions (C order, as ``flatten``)."""
    axes = [torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype) for n in spatial]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(spatial))


POSITION_SCALE_MM = 200.0  # a position channel is millimetres from the volume's centre / this


def volume_position(
    affine: Any, scan_shape: Sequence[int], model_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """``(ndim, *model_shape)`` float32 position channels of a whole volume: the RAS+ coordinates (mm)
    of each voxel centre of the model's grid, minus those of the volume's centre, over
    ``POSITION_SCALE_MM``.

    ``affine`` maps voxel indices of the scan's grid ``scan_shape`` (X, Y[, Z]) to RAS+ mm (4x4; a 2D
    scan uses its first two rows and columns). ``model_shape`` is the grid the image was resampled to
    (``ml.engine.inference.preprocess``, ``align_corners=False``: model voxel ``m`` lies at scan index
    ``(m + 0.5) * n / t - 0.5``); None: the scan's own grid. Channel ``k`` is the k-th RAS+ axis (R, A[, S])
    whatever the scan's orientation."""
    import numpy as np

    a = np.asarray(affine, dtype=np.float64)
    ndim = len(scan_shape)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {a.shape}")
    model_shape = tuple(scan_shape) if model_shape is None else tuple(model_shape)
    if len(model_shape) != ndim:
        raise ValueError(f"model grid {model_shape} and scan grid {tuple(scan_shape)} differ in axes")
    axes = [
        (np.arange(t, dtype=np.float64) + 0.5) * (n / t) - 0.5
        for n, t in zip(scan_shape, model_shape, strict=True)
    ]
    centre = [(n - 1) / 2.0 for n in scan_shape]
    rotation = a[:ndim, :ndim]
    out = np.zeros((ndim, *model_shape), dtype=np.float64)
    for k in range(ndim):  # RAS axis k = sum_j rotation[k, j] * (index_j - centre_j)
        for j in range(ndim):
            shape = [1] * ndim
            shape[j] = model_shape[j]
            out[k] += rotation[k, j] * (axes[j] - centre[j]).reshape(shape)
    return torch.from_numpy(out / POSITION_SCALE_MM).float()


def with_position(x: torch.Tensor, affine: Any, scan_shape: Sequence[int]) -> torch.Tensor:
    """``x`` ``(B, C, *model_shape)`` (a whole preprocessed volume) with its ``volume_position``
    channels appended: ``(B, C + ndim, *model_shape)``; cut windows or patches only after this."""
    if affine is None:
        raise ModelError("model", "position", "this model takes the volume's position: the scan's affine")
    position = volume_position(affine, scan_shape, tuple(x.shape[2:])).to(x.device, x.dtype)
    return torch.cat([x, position[None].expand(x.shape[0], *position.shape)], dim=1)


class TextConditionedUNet(nn.Module):
    """A MONAI-block U-Net whose decoder attends to a sentence embedding (see the module docstring).

    Args:
        spatial_dims: 2 (radiographs) or 3 (CT).
        in_channels: image channels.
        out_channels: logit channels (1: one mask per sentence, read with a sigmoid).
        channels: feature channels per level, ``len(strides) + 1`` of them.
        strides: downsampling factor per level, an int or one per spatial axis.
        text_dim: width of the text embeddings (384 for all-MiniLM-L6-v2).
        heads: attention heads (lowered to a divisor of each level's channels).
        text_tokens: tokens a sentence embedding is projected into.
        token_dim: width of the projected text tokens.
        coords: add a linear embedding of the position to the attention queries, so that words such as
            "left" or "apical" can select regions: the whole volume's position channels (averaged to each
            level's resolution) with ``position``, else the coordinates in [-1, 1] of the network's input
            (a window's own under sliding-window inference); False keeps the net translation-equivariant.
        position: the input carries ``spatial_dims`` whole-volume position channels after the
            ``in_channels`` image channels (``with_position``); ``position_channels`` says how many. They
            feed the first convolution and the attention queries of every level.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[Stride] = (2, 2, 2),
        text_dim: int = EMBEDDING_DIM,
        heads: int = 4,
        text_tokens: int = 4,
        token_dim: int = 64,
        coords: bool = True,
        position: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        channels, strides = [int(c) for c in channels], list(strides)
        if len(channels) != len(strides) + 1 or len(channels) < 2:
            raise ValueError(f"{len(channels)} channels need {len(channels) - 1} strides, got {len(strides)}")
        steps = [_per_axis(s, spatial_dims) for s in strides]
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.channels, self.strides, self.text_dim, self.heads = channels, steps, text_dim, heads
        self.text_tokens, self.token_dim, self.coords = text_tokens, token_dim, bool(coords)
        ncoords = spatial_dims if coords else 0
        self.position = bool(position)
        self.position_channels = spatial_dims if position else 0
        self.multiple = [math.prod(s[d] for s in steps) for d in range(spatial_dims)]

        def unit(cin: int, cout: int, stride: Stride = 1) -> ResidualUnit:
            return ResidualUnit(spatial_dims, cin, cout, strides=stride, subunits=2, act=Act.PRELU,
                                norm=(Norm.INSTANCE, {"affine": True}))  # fmt: skip

        self.down = nn.ModuleList(
            [unit(in_channels + self.position_channels, channels[0])]
            + [unit(channels[i], channels[i + 1], steps[i]) for i in range(len(steps))]
        )
        # the sentences' mean and spread, set from the training sentences on a first training
        # (``set_text_statistics``): finding sentences differ in a few words ("right upper" / "left lower"
        # are 0.98 cosine-similar in MiniLM), so the text is standardised before the projection
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.register_buffer("text_std", torch.ones(text_dim))
        self.sentence_tokens = nn.Linear(text_dim, text_tokens * token_dim)
        self.word_tokens = nn.Linear(text_dim, token_dim)
        self.token_norm = nn.LayerNorm(token_dim)
        self.bottleneck_attention = LanguageAttention(channels[-1], token_dim, heads, ncoords)
        self.up = nn.ModuleList(
            UpSample(spatial_dims, channels[i + 1], channels[i], scale_factor=steps[i], mode="deconv")
            for i in reversed(range(len(steps)))
        )
        self.fuse = nn.ModuleList(unit(2 * channels[i], channels[i]) for i in reversed(range(len(steps))))
        self.attention = nn.ModuleList(
            LanguageAttention(channels[i], token_dim, heads, ncoords) for i in reversed(range(len(steps)))
        )
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)
        if self.position:
            # a text-conditioned prior over the whole volume's position, added to the logits: where in the
            # body the sentence points (a small MLP of the position and the sentence's mean token)
            conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
            width = 32
            self.where_position = conv(spatial_dims, width, kernel_size=1)
            self.where_text = nn.Linear(token_dim, width)
            self.where_hidden = conv(width, width, kernel_size=1)
            self.where_out = conv(width, out_channels, kernel_size=1)

    def set_text_statistics(self, text: torch.Tensor) -> bool:
        """Standardise sentence embeddings by those of ``text`` ``(n, text_dim)`` (the training sentences)
        unless already set (a trained net keeps its own), and start a one-channel head at p = 0.02: what
        a first training does. Returns whether they were set."""
        if bool(self.text_mean.any()) or len(text) < 2:
            return False
        with torch.no_grad():
            self.text_mean.copy_(text.mean(0))
            self.text_std.copy_(text.std(0).clamp_min(1e-3))
            if self.out_channels == 1:  # a finding is a small part of a scan: start at p = 0.02 (RetinaNet)
                self.head.conv.bias.fill_(-4.0)
        return True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, value in (("text_mean", 0.0), ("text_std", 1.0)):  # weights saved before these existed
            state_dict.setdefault(prefix + name, torch.full((self.text_dim,), value))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def text_tokens_of(
        self, text: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Key/value tokens ``(B, T, token_dim)`` from a sentence embedding ``(B, text_dim)`` or word
        embeddings ``(B, L, text_dim)`` (with their mask ``(B, L)``, True on real tokens); sentence
        embeddings are standardised first (``set_text_statistics``)."""
        if text.ndim == 2:
            text = (text - self.text_mean.to(text.dtype)) / self.text_std.to(text.dtype)
            tokens = self.sentence_tokens(text).reshape(text.shape[0], self.text_tokens, self.token_dim)
            mask = None
        elif text.ndim == 3:
            tokens = self.word_tokens(text)
        else:
            raise ValueError(
                f"text must be (B, {self.text_dim}) or (B, L, {self.text_dim}), got {text.shape}"
            )
        return self.token_norm(tokens), mask

    def forward(
        self, image: torch.Tensor, text_embedding: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``(B, out_channels, *spatial)`` of ``image`` ``(B, C, *spatial)`` for the texts
        ``(B, text_dim)`` (or word-level ``(B, L, text_dim)`` with ``text_mask`` ``(B, L)``)."""
        if image.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"image must be (B, C, {self.spatial_dims} spatial axes), got {tuple(image.shape)}"
            )
        if image.shape[1] != self.in_channels + self.position_channels:
            raise ValueError(
                f"image has {image.shape[1]} channels; the net takes {self.in_channels} image channels"
                + (f" + {self.position_channels} position channels (with_position)" if self.position else "")
            )
        if text_embedding.shape[0] != image.shape[0] or text_embedding.shape[-1] != self.text_dim:
            raise ValueError(
                f"text {tuple(text_embedding.shape)}: needs batch {image.shape[0]}, width {self.text_dim}"
            )
        spatial = image.shape[2:]
        pad: list[int] = []
        for size, m in reversed(list(zip(spatial, self.multiple, strict=True))):
            pad += [0, (-size) % m]
        x = F.pad(image, pad) if any(pad) else image
        tokens, mask = self.text_tokens_of(text_embedding.to(x.dtype), text_mask)
        where = x[:, self.in_channels :] if self.position else None

        def at(features: torch.Tensor) -> torch.Tensor | None:
            """The whole-volume position at the resolution of ``features`` (mean over each cell)."""
            if where is None or not self.coords:
                return None
            return F.adaptive_avg_pool3d(where, features.shape[2:]) if self.spatial_dims == 3 else (
                F.adaptive_avg_pool2d(where, features.shape[2:]))  # fmt: skip

        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        x = self.bottleneck_attention(x, tokens, mask, at(x))
        for up, fuse, attend in zip(self.up, self.fuse, self.attention, strict=True):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
            x = attend(x, tokens, mask, at(x))
        logits = self.head(x)
        if where is not None:
            t = (tokens if mask is None else tokens * mask[..., None]).sum(1) / (
                tokens.shape[1] if mask is None else mask.sum(1, keepdim=True).clamp_min(1)
            )  # fmt: skip
            h = self.where_position(where) + self.where_text(t).reshape(
                *t.shape[:1], -1, *[1] * self.spatial_dims
            )
            h = self.where_hidden(F.gelu(h))
            logits = logits + self.where_out(F.gelu(h))
        return logits[(..., *(slice(0, s) for s in spatial))]

    @property
    def spec(self) -> dict[str, Any]:
        """The network spec ``{"name", "args"}`` (JSON) that ``grounding_from_spec`` rebuilds."""
        args = {
            "spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
            "out_channels": self.out_channels, "channels": list(self.channels),
            "strides": [s[0] if len(set(s)) == 1 else list(s) for s in self.strides],
            "text_dim": self.text_dim, "heads": self.heads, "text_tokens": self.text_tokens,
            "token_dim": self.token_dim, "coords": self.coords,
        }  # fmt: skip
        if self.position:
            args["position"] = True
        return {"name": NETWORK_NAME, "args": args}


def _per_axis(stride: Stride, spatial_dims: int) -> tuple[int, ...]:
    if isinstance(stride, int):
        return (stride,) * spatial_dims
    out = tuple(int(s) for s in stride)
    if len(out) != spatial_dims:
        raise ValueError(f"stride {list(out)} needs {spatial_dims} values")
    return out


def grounding_from_spec(spec: dict[str, Any], file: str = "network") -> TextConditionedUNet:
    """A ``TextConditionedUNet`` from ``{"name": "TextConditionedUNet", "args": {...}}``; problems are
    ``ModelError`` naming ``file`` and the field (like ``ml.engine.loading.network_from_spec``)."""
    name = spec.get("name") if isinstance(spec, dict) else None
    if name != NETWORK_NAME:
        raise ModelError(file, "network.name", f"{name!r} is not {NETWORK_NAME}")
    encoder = spec.get("text_encoder")
    if encoder is not None and encoder != ENCODER_NAME and not isinstance(encoder, dict):
        raise ModelError(
            file, "network.text_encoder", f"{encoder!r}: {ENCODER_NAME} or a stored encoder (ml.encoders)"
        )
    args = spec.get("args") or {}
    if not isinstance(args, dict):
        raise ModelError(file, "network.args", "must be an object")
    if isinstance(encoder, dict):
        from ml.encoders import check_encoder_spec

        check_encoder_spec(encoder, file)
        if int(args.get("text_dim", EMBEDDING_DIM)) != encoder["dim"]:
            raise ModelError(
                file, "network.args.text_dim", f"{args.get('text_dim', EMBEDDING_DIM)}: the text encoder "
                f"{encoder['name']} gives {encoder['dim']}-d embeddings",
            )  # fmt: skip
    try:
        return TextConditionedUNet(**args)
    except Exception as exc:  # the network's own argument checks
        raise ModelError(file, "network.args", f"{NETWORK_NAME} cannot be built: {exc}") from exc


class GroundingModel:
    """A ``TextConditionedUNet`` with its sentence encoder: masks for finding texts.

    The encoder is not part of the state dict (its weights come from the installed package);
    ``state_dict()``/``load_state_dict()`` are the network's, ``spec`` says how to rebuild it.
    """

    def __init__(self, net: TextConditionedUNet, encoder: SentenceEncoder | None = None) -> None:
        self.net = net
        self.device = next(net.parameters()).device
        self.encoder = encoder or SentenceEncoder(self.device)
        if self.encoder.dim != net.text_dim:
            raise ValueError(f"encoder gives {self.encoder.dim}-d embeddings, the net takes {net.text_dim}")

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None, device: str = "cpu"
    ) -> GroundingModel:
        """The model of a network spec, with weights from ``state_dict`` when given, on ``device``."""
        net = grounding_from_spec(spec)
        if state_dict is not None:
            net.load_state_dict(state_dict, strict=True)
        return cls(net.to(device).eval(), SentenceEncoder(device))

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], device: str = "cpu") -> GroundingModel:
        """The model of ``checkpoint()``'s dict (``{"network": spec, "state_dict": ...}``)."""
        return cls.from_spec(checkpoint["network"], checkpoint["state_dict"], device)

    @property
    def spec(self) -> dict[str, Any]:
        """The network spec, with the text encoder it was trained with."""
        return {**self.net.spec, "text_encoder": self.encoder.name}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights."""
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Loads the network's weights (strict)."""
        self.net.load_state_dict(state, strict=True)

    def checkpoint(self) -> dict[str, Any]:
        """``{"network": spec, "state_dict": weights}``, loadable with ``torch.load(weights_only=True)``."""
        return {"network": self.spec, "state_dict": self.state_dict()}

    def to(self, device: str | torch.device) -> GroundingModel:
        """Moves the network and the encoder to ``device``."""
        self.net.to(device)
        self.device = torch.device(device)
        e = self.encoder
        self.encoder = SentenceEncoder(self.device, folder=e.folder or None, name=e.name, dim=e.dim)
        return self

    def embed(self, sentences: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings ``(n, text_dim)`` on the network's device."""
        return self.encoder.encode(sentences).to(self.device)

    def predict(self, image: torch.Tensor, sentences: Sequence[str]) -> torch.Tensor:
        """Probabilities ``(n, out_channels, *spatial)`` of ``image`` for each of the ``n`` sentences.

        ``image`` is ``(C, *spatial)`` or ``(1, C, *spatial)`` (shared by all sentences) or
        ``(n, C, *spatial)`` (one image per sentence), intensities preprocessed as in training. Sigmoid
        for one output channel, softmax over channels otherwise. Runs in eval mode without gradients.
        """
        text = self.embed(sentences)
        x = image.to(self.device, torch.float32)
        if x.ndim == self.net.spatial_dims + 1:
            x = x.unsqueeze(0)
        if x.shape[0] == 1 and len(text) != 1:
            x = x.expand(len(text), *x.shape[1:])
        if x.shape[0] != len(text):
            raise ValueError(f"{x.shape[0]} images for {len(text)} sentences")
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                logits = self.net(x, text).float()
        finally:
            self.net.train(was_training)
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
