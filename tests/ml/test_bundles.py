"""MONAI bundles run with their own pipeline give what MONAI's own bundle runner gives.

A bundle is built here (configs/inference.json with Orientationd RAS, Spacingd, NormalizeIntensityd,
SlidingWindowInferer, Activationsd, Invertd, AsDiscreted; configs/metadata.json with three labels; a
UNet with random weights), run by ``monai.bundle.run`` on the real CT lungdx-a0002 as the platform stores
it (its NIfTI), then registered and run by the platform's pre-annotation on the same scan: the masks must
agree (Dice >= 0.99 per label). The stored CT is LPS-ordered (DICOM): fed straight into the network, as the
platform did before, the masks do not agree, so orientation is really tested.

MONAI's runner evaluates the config's ``$`` expressions as Python: it is given only the bundle this test
wrote (trusted). The platform reads the same config as data.
"""

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from monai.networks.nets import UNet

from core.storage import storage_local_copy
from ml.bundle_pipeline import bundle_read
from ml.engine.bundle_run import bundle_predict
from ml.engine.loading import load_model
from ml.models import ModelVersion
from ml.preannotate import preannotate, scan_volume
from ml.services import model_version_register
from ml.specs import ModelError
from studies.models import Scan
from studies.services.scans import scans_ingest
from tests.ml.bundle_case import CONFIG, LABELS, METADATA, NET, monai_run, network, write_bundle


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _read(key: str) -> np.ndarray:
    with default_storage.open(key, "rb") as fh:
        data = fh.read()
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(data)).dataobj) > 0


@pytest.fixture
def real_ct(project, shared_data, tmp_path):
    """lungdx-a0002 ingested by the platform: stored as NIfTI with its RAS affine, LPS-ordered array."""
    shutil.copytree(shared_data / "ct/lungdx-a0002", tmp_path / "ct")
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    scan = Scan.objects.get(project=project)
    affine = np.asarray(scan.affine)
    assert affine[0, 0] < 0 and affine[1, 1] < 0, "the stored CT is LPS-ordered (X to the patient's right)"
    return scan


@pytest.mark.django_db(transaction=True)
def test_platform_masks_equal_monai_bundle_run_on_the_real_ct(project, real_ct, tmp_path):
    bundle = write_bundle(tmp_path / "orient_bundle")
    with storage_local_copy(real_ct.file.name) as nifti:
        expected, affine = monai_run(bundle, Path(nifti), tmp_path / "monai_out")
    assert expected.shape == tuple(real_ct.shape)
    assert np.allclose(affine, np.asarray(real_ct.affine), atol=1e-3)
    assert {1, 2} <= set(np.unique(expected).tolist()), "the random network labels both classes"

    # registered without --labels / --input-spec: both come from the bundle
    version = model_version_register(project=project, path=bundle, fmt="monai-bundle", name="orient")
    version.refresh_from_db()
    assert version.status == "ready", version.error
    assert version.label_names == LABELS
    assert version.input_spec["modality"] == ["CT"] and version.input_spec["spacing"] == [2.5, 2.5, 5.0]
    assert version.input_spec["roi_size"] == [64, 64, 32]
    outcome = preannotate(scan=real_ct, generator="model:orient")
    got = {p.label: _read(p.mask.name) for p in outcome.proposals}
    assert set(got) == {"left_thing", "right_thing"}
    for c, name in enumerate(LABELS[1:], start=1):
        dice = _dice(got[name], expected == c)
        print(f"\n{name}: Dice platform vs monai.bundle {dice:.4f} ({int((expected == c).sum())} voxels)")
        assert dice >= 0.99, (name, dice)
    assert all(0 < p.confidence <= 1 and 0 <= p.entropy <= 1 for p in outcome.proposals)

    # the old way (the stored LPS-ordered array straight into the network, no Orientationd) disagrees
    raw = bundle_read(bundle)
    raw.pipeline.preprocessing = [t for t in raw.pipeline.preprocessing if t.name != "Orientationd"]
    model = load_model(bundle, "monai-bundle")
    old = bundle_predict(raw, model, scan_volume(real_ct), np.asarray(real_ct.affine), LABELS)
    old_masks = {r.name: old.mask(r) for r in old.labels}
    worst = min(
        _dice(old_masks.get(n, np.zeros_like(expected, bool)), expected == c)
        for c, n in enumerate(LABELS[1:], start=1)
    )
    print(f"without Orientationd: worst Dice vs monai.bundle {worst:.3f}")
    assert worst < 0.5, worst


def test_model_ts_only_dataparallel_keys_and_checkpoint_wrappers_run_the_same(tmp_path):
    volume = np.random.default_rng(0).normal(0, 300, size=(40, 36, 12)).astype(np.float32)
    affine = np.diag([-1.5, -1.5, 4.0, 1.0])
    net = network()
    state = net.state_dict()
    results = {}
    for label, kwargs in {
        "model": {"state": {"model": state}},
        "state_dict": {"state": {"state_dict": state, "epoch": 3}},
        "module": {"state": {f"module.{k}": v for k, v in state.items()}},
        "ts": {"torchscript": net},
    }.items():
        folder = write_bundle(tmp_path / label, **kwargs)
        bundle = bundle_read(folder)
        assert bundle.torchscript == (label == "ts")
        model = load_model(folder, "monai-bundle")
        pred = bundle_predict(bundle, model, volume, affine, LABELS)
        results[label] = {r.name: pred.mask(r) for r in pred.labels}
    for label in ("state_dict", "module", "ts"):
        assert results[label].keys() == results["model"].keys()
        for name, mask in results["model"].items():
            assert np.array_equal(mask, results[label][name]), (label, name)
    assert results["model"] and all(m.shape == volume.shape for m in results["model"].values())


@pytest.mark.django_db(transaction=True)
def test_metadata_gives_labels_and_spec_and_overrides_must_agree(project, tmp_path):
    bundle = write_bundle(tmp_path / "b")
    with pytest.raises(ModelError, match=r"\[label_names\].*differ from configs/metadata.json's channel_def"):
        model_version_register(
            project=project, path=bundle, fmt="monai-bundle", name="b", label_names=["background", "lung"]
        )
    with pytest.raises(ModelError, match=r"\[input_spec\.channels\]: .*2 differs from the bundle's 1"):
        model_version_register(
            project=project, path=bundle, fmt="monai-bundle", name="b", input_spec={"channels": 2}
        )
    with pytest.raises(ModelError, match=r"\[input_spec\.modality\]"):
        model_version_register(
            project=project, path=bundle, fmt="monai-bundle", name="b", input_spec={"modality": ["MR"]}
        )
    assert ModelVersion.objects.count() == 0
    same = model_version_register(
        project=project,
        path=bundle,
        fmt="monai-bundle",
        name="b",
        label_names=LABELS,
        input_spec={"modality": ["CT"], "window": [-1000, 400]},
        validate=False,
    )
    assert same.label_names == LABELS and same.input_spec["window"] == [-1000.0, 400.0]
    assert same.network["bundle"]["pipeline"]["inferer"]["name"] == "SlidingWindowInferer"
    bare = dict(
        METADATA,
        network_data_format={
            "inputs": METADATA["network_data_format"]["inputs"],
            "outputs": {"pred": {"num_channels": 3}},
        },
    )
    nolabels = write_bundle(tmp_path / "n", metadata=bare)
    with pytest.raises(ModelError, match=r"\[label_names\]: give the label names"):
        model_version_register(project=project, path=nolabels, fmt="monai-bundle", name="n")
    given = model_version_register(
        project=project, path=nolabels, fmt="monai-bundle", name="n", label_names=LABELS, validate=False
    )
    assert given.label_names == LABELS


def _with(path: str, value) -> dict:
    """CONFIG with the item at ``path`` ("postprocessing.transforms.1.transform") set to ``value``."""
    config = json.loads(json.dumps(CONFIG))
    node = config
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return config


PRE, POST = "preprocessing.transforms", "postprocessing.transforms"
SCRIPTS = "scripts/ folder is never imported"
REFUSED = [  # (where in CONFIG, the value put there, the field refused, words of the reason)
    (f"{POST}.1.transform", "$open('/tmp/pwned', 'w')", f"{POST}[1].transform", "never evaluated"),
    (f"{PRE}.3.pixdim", "$__import__('os').getpid()", f"{PRE}[3].pixdim", "never evaluated"),
    (f"{PRE}.4", {"_target_": "scripts.my_transforms.Norm", "keys": "image"}, f"{PRE}[4]._target_", SCRIPTS),
    ("network_def", {"_target_": "scripts.networks.unest.UNesT"}, "network_def._target_", SCRIPTS),
    (
        f"{POST}.2",
        {"_target_": "Lambdad", "keys": "pred", "func": "$lambda x: x"},
        f"{POST}[2].func",
        "runs code",
    ),
    (f"{PRE}.4", {"_target_": "RandGaussianNoised", "keys": "image"}, f"{PRE}[4]._target_", "allow-list"),
    (f"{PRE}.4", {"_target_": "NormalizeIntensityd", "keys": "label"}, f"{PRE}[4].keys", "other keys"),
    ("inferer", {"_target_": "scripts.inferer.MyInferer"}, "inferer._target_", "scripts/ folder"),
    ("network", "$@network_def.to(@device).half()", "network", "network_def"),
    ("evaluator._target_", "scripts.evaluator.Custom", "evaluator._target_", "scripts/ folder"),
    (PRE, "$@a + [x for x in @b]", PRE, "never evaluated"),
]


@pytest.mark.parametrize("path, value, field, reason", REFUSED)
def test_code_in_a_bundle_is_refused_naming_file_and_key(tmp_path, path, value, field, reason):
    folder = write_bundle(tmp_path / "evil", config=_with(path, value))
    with pytest.raises(ModelError) as refused:
        bundle_read(folder)
    assert refused.value.file == "evil" and refused.value.field == field, refused.value
    assert reason in refused.value.reason, refused.value
    assert not Path("/tmp/pwned").exists()


def test_known_idioms_are_read_by_meaning(tmp_path):
    config = _with("postprocessing.transforms.1.transform", "$copy.deepcopy(@preprocessing)")
    config["pixdim"] = "$[2.5, 2.5, 5.0] if @highres else [5.0, 5.0, 10.0]"
    config["highres"] = False
    config["preprocessing"]["transforms"][3]["pixdim"] = "@pixdim"
    config["preprocessing"]["transforms"].append(
        {"_target_": "CastToTyped", "keys": "@image_key", "dtype": "$torch.float32"}
    )
    config["postprocessing"]["transforms"][0]["keys"] = "$monai.utils.CommonKeys.PRED"
    config["postprocessing"]["transforms"].insert(
        0, {"_target_": "ToDeviced", "keys": "pred", "device": "cpu", "_disabled_": True}
    )
    config["network_def"]["out_channels"] = "$len(@labels)"
    config["labels"] = LABELS
    bundle = bundle_read(write_bundle(tmp_path / "idioms", config=config))
    pre = {t.name: t.args for t in bundle.pipeline.preprocessing}
    assert pre["Spacingd"]["pixdim"] == [5.0, 5.0, 10.0] and pre["CastToTyped"]["dtype"] == "float32"
    assert bundle.network.args["out_channels"] == 3
    assert [t.name for t in bundle.pipeline.postprocessing] == ["Activationsd", "Invertd", "AsDiscreted"]
    assert bundle.pipeline.inferer.args == {
        "roi_size": [64, 64, 32],
        "sw_batch_size": 2,
        "overlap": 0.25,
        "mode": "gaussian",
    }
    assert any("LoadImaged replaced" in n for n in bundle.pipeline.notes)
    assert any("SaveImaged dropped" in n for n in bundle.pipeline.notes)


class _EdgesX(torch.nn.Module):
    """An orientation-sensitive 'model': class 1 where intensity rises along the first array axis, class 2
    where it falls (a one-sided difference), background elsewhere."""

    def forward(self, x):
        d = torch.zeros_like(x)
        d[:, :, 1:] = x[:, :, 1:] - x[:, :, :-1]
        return torch.cat([torch.full_like(x, 0.05), 20 * d, -20 * d], dim=1)


@pytest.mark.django_db(transaction=True)
def test_input_spec_models_see_the_scan_as_monai_orientationd_ras_gives_it(project, tmp_path):
    """A model registered with an input spec (not a bundle pipeline) gets the scan reordered to RAS, as
    MONAI's Orientationd("RAS") gives it in training; its masks come back on the stored grid."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    from ml.engine.inference import predict
    from ml.specs import InputSpec
    from studies import demo

    volume, _ = demo.synthetic_chest_ct(shape=(16, 64, 64), spacing=(5.0, 4.0, 4.0))
    demo.write_ct_series(tmp_path / "ct", volume, (5.0, 4.0, 4.0))
    assert not scans_ingest(project=project, paths=[tmp_path / "ct"], workers=1).errors
    scan = Scan.objects.get(project=project)
    affine = np.asarray(scan.affine)
    assert affine[0, 0] < 0, "stored LPS-ordered"
    torch.jit.save(torch.jit.script(_EdgesX()), tmp_path / "edges.ts")
    spec = {"ndim": 3, "channels": 1, "roi_size": [32, 32, 16], "window": [-1000, 400], "modality": ["CT"]}
    version = model_version_register(project=project, path=tmp_path / "edges.ts", fmt="torchscript",
                                     name="edges", input_spec=spec, label_names=LABELS)  # fmt: skip
    version.refresh_from_db()
    assert version.status == "ready", version.error
    got = {p.label: _read(p.mask.name) for p in preannotate(scan=scan, generator="model:edges").proposals}

    stored = scan_volume(scan)
    orient = Orientation(axcodes="RAS")
    ras = orient(MetaTensor(torch.from_numpy(stored)[None], affine=torch.as_tensor(affine)))
    model = load_model(tmp_path / "edges.ts", "torchscript")
    spacing = [float(v) for v in ras.pixdim]
    expected = predict(model, ras[0].numpy(), spacing, InputSpec.from_dict(spec), LABELS)
    raw = predict(model, stored, [float(s) for s in scan.spacing], InputSpec.from_dict(spec), LABELS)
    for r, old in zip(expected.labels, raw.labels, strict=True):
        back = orient(
            MetaTensor(torch.from_numpy(got[r.name].astype(np.float32))[None], affine=torch.as_tensor(affine))
        )
        assert np.array_equal(back[0].numpy() > 0.5, expected.mask(r)), r.name
        assert _dice(got[r.name], raw.mask(old)) < 0.5, (
            "the model is orientation-sensitive: the old way differed"
        )


@pytest.mark.django_db(transaction=True)
def test_cli_and_api_register_a_bundle_without_labels_or_spec(project, manager, api_client, tmp_path, capsys):
    from django.core.management import CommandError, call_command
    from django.urls import reverse

    bundle = write_bundle(tmp_path / "cli_bundle")
    call_command("register_model", str(bundle), "--project", project.slug, "--name", "cli", "--format",
                 "monai-bundle", "--json")  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ready", out
    assert ModelVersion.objects.get(pk=out["id"]).label_names == LABELS
    with pytest.raises(CommandError, match=r"\[label_names\].*channel_def"):
        call_command("register_model", str(bundle), "--project", project.slug, "--name", "cli", "--format",
                     "monai-bundle", "--labels", "background,a,b")  # fmt: skip
    archive = shutil.make_archive(str(tmp_path / "api_bundle"), "zip", root_dir=bundle)
    with open(archive, "rb") as fh:
        response = api_client(manager).post(
            reverse("project-models", args=[project.slug]),
            {"file": fh, "name": "api", "format": "monai-bundle"},
            format="multipart",
        )
    assert response.status_code == 202, response.content
    assert response.json()["label_names"] == LABELS and response.json()["status"] == "ready"


def test_probabilities_inverted_a_few_channels_at_a_time_give_the_full_inversion(tmp_path, monkeypatch):
    import ml.engine.bundle_run as bundle_run

    rng = np.random.default_rng(1)
    volume = rng.normal(0, 300, size=(40, 36, 12)).astype(np.float32)
    affine = np.array([[0, -1.2, 0, 5], [-0.9, 0, 0, 3], [0, 0, 4.0, -7], [0, 0, 0, 1]])  # permuted, flipped
    config = json.loads(json.dumps(CONFIG))
    config["network_def"]["out_channels"] = 7
    names = ["background", *[f"l{i}" for i in range(1, 7)]]
    metadata = json.loads(json.dumps(METADATA))
    metadata["network_data_format"]["outputs"]["pred"].update(
        num_channels=7, channel_def=dict(enumerate(names))
    )
    torch.manual_seed(3)
    net = UNet(**{**NET, "out_channels": 7})
    folder = write_bundle(tmp_path / "seven", config=config, metadata=metadata, state=net.state_dict())
    bundle = bundle_read(folder)
    model = load_model(folder, "monai-bundle")
    whole_pred = bundle_predict(bundle, model, volume, affine, names, lean=False)
    whole = {r.name: whole_pred.mask(r) for r in whole_pred.labels}
    monkeypatch.setattr(bundle_run, "INVERT_CHANNELS", 3)  # groups 0-2, 3-5, 6
    grouped_pred = bundle_predict(bundle, model, volume, affine, names)
    grouped = {r.name: grouped_pred.mask(r) for r in grouped_pred.labels}
    assert whole.keys() == grouped.keys() and len(whole) >= 3
    for name in whole:
        assert np.array_equal(whole[name], grouped[name]), name
