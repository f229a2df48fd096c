"""Text-conditioned grounding: the bundled all-MiniLM-L6-v2 sentence encoder (offline, deterministic,
meaningful distances) and the TextConditionedUNet (2D and 3D shapes, the text steers the output, the spec
rebuilds it, and a tiny CPU training in which the mask on the same image follows the sentence)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ml.engine.grounding import GroundingModel, TextConditionedUNet, grounding_from_spec
from ml.engine.text import EMBEDDING_DIM, SentenceEncoder
from ml.specs import ModelError
from tests.conftest import REPO

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SMALL = {"channels": (8, 16, 32), "strides": (2, 2), "token_dim": 32}


@pytest.fixture(scope="module")
def encoder() -> Iterator[SentenceEncoder]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        yield SentenceEncoder("cpu")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread; on a busy CPU more threads oversubscribe it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROBE = """
import json, torch
from ml.engine.text import SentenceEncoder
e = SentenceEncoder("cpu").encode(["left lower lobe nodule"])
print("EMB:" + json.dumps(e[0, :8].tolist()))
"""


def test_encoder_loads_offline_in_a_fresh_process_without_a_hub_cache(tmp_path, encoder):
    # Given a process that may not reach any hub (offline flags, an empty HF cache, a dead proxy)
    env = dict(os.environ, **OFFLINE, HF_HOME=str(tmp_path / "hf"), HTTPS_PROXY="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", PYTHONPATH=str(REPO))  # fmt: skip
    # When it encodes a sentence
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True)
    # Then it works, and gives what this process gives
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("EMB:"))
    theirs = torch.tensor(json.loads(line[4:]))
    torch.testing.assert_close(theirs, encoder.encode(["left lower lobe nodule"])[0, :8], atol=1e-5, rtol=0)
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())


def test_encoder_is_deterministic_normalised_and_meaningful(encoder):
    sentences = [
        "small nodule in the left lower lobe",
        "left lower lobe nodule",
        "the heart size is normal",
        "right pleural effusion",
    ]
    a = encoder.encode(sentences)
    b = encoder.encode(sentences)
    assert a.shape == (4, EMBEDDING_DIM) and a.dtype == torch.float32
    assert torch.equal(a, b)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    sim = a @ a.T
    assert sim[0, 1] > 0.8  # paraphrases
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3]  # closer than unrelated findings
    assert torch.cdist(a, a)[~torch.eye(4, dtype=torch.bool)].min() > 0.1  # all different
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)
    with pytest.raises(TypeError):
        encoder.encode("a single string")  # type: ignore[arg-type]
    tokens, mask = encoder.encode_tokens(["left square", "a nodule in the right upper lobe"])
    assert tokens.shape[0] == 2 and tokens.shape[2] == EMBEDDING_DIM and mask.shape == tokens.shape[:2]
    assert mask[1].all() and not mask[0].all()


@pytest.mark.parametrize(
    ("dims", "shape"), [(2, (2, 1, 40, 36)), (3, (2, 1, 16, 20, 12))], ids=["radiograph-2d", "ct-3d"]
)
def test_output_shape_follows_the_input_and_the_text_changes_it(dims, shape, encoder):
    torch.manual_seed(0)
    net = TextConditionedUNet(dims, 1, out_channels=2, **SMALL).eval()
    x = torch.rand(shape)
    text = encoder.encode(["left pleural effusion", "right pleural effusion"])
    with torch.no_grad():
        out = net(x, text)
        swapped = net(x, text.flip(0))
    assert out.shape == (shape[0], 2, *shape[2:])  # sizes need not be multiples of the total stride
    assert torch.isfinite(out).all()
    assert (out[0] - swapped[0]).abs().max() > 1e-4  # same image, other sentence: other logits
    with torch.no_grad():  # word-level tokens with padding also work
        tokens, mask = encoder.encode_tokens(["left pleural effusion", "effusion"])
        assert net(x, tokens, mask).shape == out.shape


def test_spec_and_checkpoint_rebuild_the_same_network(encoder):
    torch.manual_seed(1)
    model = GroundingModel(TextConditionedUNet(2, 1, **SMALL).eval(), encoder)
    spec = json.loads(json.dumps(model.spec))  # JSON round trip, as the registry stores it
    assert spec["name"] == "TextConditionedUNet" and spec["text_encoder"] == "all-MiniLM-L6-v2"
    buffer = io.BytesIO()
    torch.save(model.checkpoint(), buffer)
    checkpoint = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    rebuilt = GroundingModel.from_checkpoint({**checkpoint, "network": spec})
    assert isinstance(grounding_from_spec(spec), TextConditionedUNet)
    image = torch.rand(1, 32, 32)
    probs = model.predict(image, ["left square", "right square", "nodule"])
    assert probs.shape == (3, 1, 32, 32) and 0 <= probs.min() and probs.max() <= 1
    torch.testing.assert_close(rebuilt.predict(image, ["left square", "right square", "nodule"]), probs)
    for bad, field in [
        ({"name": "UNet", "args": {}}, "network.name"),
        ({"name": "TextConditionedUNet", "args": {"spatial_dims": 4, "in_channels": 1}}, "network.args"),
        ({"name": "TextConditionedUNet", "args": {"spatial_dims": 2}}, "network.args"),
        ({**spec, "text_encoder": "bert-large"}, "network.text_encoder"),
    ]:
        with pytest.raises(ModelError) as err:
            grounding_from_spec(bad, "weights.pt")
        assert err.value.field == field and err.value.file == "weights.pt"


SIZE = 32


def _squares(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy ``(1, X, Y)`` image with one bright square in the left half (small X) and one in the right
    half, and the two squares' masks."""
    left = np.zeros((1, SIZE, SIZE), np.float32)
    right = np.zeros_like(left)
    s1, s2 = rng.integers(5, 9, 2)
    x1, y1 = rng.integers(1, 15 - s1), rng.integers(1, SIZE - s1 - 1)
    x2, y2 = rng.integers(17, SIZE - s2 - 1), rng.integers(1, SIZE - s2 - 1)
    left[0, x1 : x1 + s1, y1 : y1 + s1] = 1
    right[0, x2 : x2 + s2, y2 : y2 + s2] = 1
    image = left + right + rng.normal(0.0, 0.1, left.shape).astype(np.float32)
    return image, left, right


def _dice(pred: torch.Tensor, truth: np.ndarray) -> float:
    t = torch.from_numpy(truth).bool()
    return float(2 * (pred & t).sum() / (pred.sum() + t.sum()))


def test_tiny_training_makes_the_mask_follow_the_sentence(encoder, one_thread):
    # Given a small 2D net and random two-square images, each shown with "left square" or "right square"
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sentences = ["left square", "right square"]
    text = encoder.encode(sentences)
    net = TextConditionedUNet(2, 1, **SMALL)
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    # When it trains for a few Adam steps (BCE + soft Dice)
    for _ in range(150):
        batch = [_squares(rng) for _ in range(8)]
        which = [i % 2 for i in range(8)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1 + w] for b, w in zip(batch, which, strict=True)]))
        logits = net(x, text[which])
        p = torch.sigmoid(logits)
        soft_dice = (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + (1 - soft_dice).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # Then on new images, the SAME image gives the left square for one sentence and the right for the other
    model = GroundingModel(net, encoder)
    test_rng = np.random.default_rng(1234)
    for _ in range(3):
        image, left, right = _squares(test_rng)
        masks = model.predict(torch.from_numpy(image), sentences) > 0.5
        assert _dice(masks[0, 0], left) >= 0.8, "left square"
        assert _dice(masks[1, 0], right) >= 0.8, "right square"
        assert _dice(masks[0, 0], right) < 0.2 and _dice(masks[1, 0], left) < 0.2
