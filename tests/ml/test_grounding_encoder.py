"""A grounding model's text encoder: the bundled MiniLM by default, or a sentence-transformers model a user
gives as a zip or folder, checked as data on registration (safetensors only, no code, no pickles, only
sentence-transformers' own modules) and loaded offline with trust_remote_code off."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from ml.encoders import encoder_folder_check, text_encoder_for, text_encoder_store, unpack
from ml.engine.text import SentenceEncoder, model_path
from ml.specs import ModelError
from tests.ml.grounding_toy import INPUT_SPEC, PARENT_NETWORK

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(key, "1")


@pytest.fixture
def user_encoder(tmp_path) -> Path:
    """A user's sentence-transformers folder (a copy of MiniLM's files: config, tokenizer, safetensors)."""
    folder = tmp_path / "my-encoder"
    shutil.copytree(model_path(), folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return folder


def _zip(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"my-encoder/{p.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out


def test_a_user_encoder_is_stored_and_loaded_offline_and_embeds_like_the_same_weights(
    project, user_encoder, tmp_path
):
    # Given a user's encoder as a zip (one top folder)
    archive = _zip(user_encoder, tmp_path / "my-encoder.zip")
    # When it is checked and stored with a model
    spec = text_encoder_store(project=project, model_name="grounder", path=archive, text_dim=384)
    # Then the spec names it by its sha256 and width, and it loads (from storage, offline) into an encoder
    assert spec["dim"] == 384 and len(spec["sha256"]) == 64 and spec["name"] == "my-encoder"
    encoder = text_encoder_for({"text_encoder": spec}, "cpu")
    assert encoder.folder and encoder.name == "my-encoder"
    sentences = ["nodule in the right upper lobe", "small left pleural effusion"]
    torch.testing.assert_close(
        encoder.encode(sentences), SentenceEncoder("cpu").encode(sentences), atol=1e-5, rtol=0
    )
    # and the default is the bundled MiniLM
    assert text_encoder_for({}, "cpu").folder == "" and text_encoder_for(None).name == "all-MiniLM-L6-v2"


def test_registering_a_grounding_model_with_its_encoder(project, user_encoder, tmp_path):
    from ml.engine.grounding import grounding_from_spec
    from ml.services import model_version_register

    weights = tmp_path / "net.pt"
    torch.save(grounding_from_spec(PARENT_NETWORK).state_dict(), weights)
    version = model_version_register(
        project=project, path=weights, fmt="state-dict", name="grounder", task="grounding",
        input_spec=INPUT_SPEC, label_names=["finding"], network=PARENT_NETWORK, text_encoder=user_encoder,
    )  # fmt: skip
    version.refresh_from_db()
    assert version.status == "ready", version.error
    assert version.network["text_encoder"]["dim"] == 384
    grounding_from_spec(version.network)  # the stored spec rebuilds
    # a width that is not the network's text_dim is refused, naming the field
    narrow = {**PARENT_NETWORK, "args": {**PARENT_NETWORK["args"], "text_dim": 256}}
    with pytest.raises(ModelError) as err:
        model_version_register(
            project=project, path=weights, fmt="state-dict", name="grounder", task="grounding",
            input_spec=INPUT_SPEC, label_names=["finding"], network=narrow, text_encoder=user_encoder,
        )  # fmt: skip
    assert err.value.field == "network.args.text_dim"
    with pytest.raises(ModelError, match="only a grounding model"):
        model_version_register(
            project=project, path=weights, fmt="state-dict", name="seg", task="segmentation",
            input_spec=INPUT_SPEC, label_names=["finding"], network=PARENT_NETWORK, text_encoder=user_encoder,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda f: (f / "pytorch_model.bin").write_bytes(b"\x80\x04pickle"),
            "text_encoder/pytorch_model.bin",
        ),
        (lambda f: (f / "custom_model.py").write_text("import os\n"), "text_encoder/custom_model.py"),
        (
            lambda f: (f / "modules.json").write_text(
                json.dumps([{"idx": 0, "name": "0", "path": "", "type": "os.system"}])
            ),
            "text_encoder/modules.json[0].type",
        ),
        (
            lambda f: (f / "config.json").write_text(
                json.dumps({**json.loads((f / "config.json").read_text()), "auto_map": {"AutoModel": "x.Y"}})
            ),
            "text_encoder/config.json",
        ),
        (
            lambda f: (f / "model.safetensors").write_bytes(b"not safetensors"),
            "text_encoder/model.safetensors",
        ),
        (lambda f: (f / "modules.json").unlink(), "text_encoder/modules.json"),
    ],
    ids=["pickle", "python", "foreign-module", "auto-map", "bad-safetensors", "no-modules"],
)
def test_encoders_with_code_or_pickles_are_refused_naming_the_file(user_encoder, change, field):
    change(user_encoder)
    with pytest.raises(ModelError) as err:
        encoder_folder_check(user_encoder, "my-encoder.zip")
    assert err.value.field == field and err.value.file == "my-encoder.zip"


def test_a_zip_that_escapes_its_folder_is_refused(user_encoder, tmp_path):
    archive = _zip(user_encoder, tmp_path / "evil.zip", {"../outside.txt": b"x"})
    with pytest.raises(ModelError) as err:
        unpack(archive, tmp_path / "into", "evil.zip")
    assert err.value.field == "text_encoder/../outside.txt" and not (tmp_path / "outside.txt").exists()
    (tmp_path / "plain.txt").write_text("not a zip")
    with pytest.raises(ModelError, match="a zip or a folder"):
        unpack(tmp_path / "plain.txt", tmp_path / "into2", "plain.txt")
