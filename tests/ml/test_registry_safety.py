"""Registering a model never runs code from the upload: a MONAI bundle's config and a network spec are read
as data (no ``$`` evaluation, ``_target_`` only from the ``monai.networks.nets`` allow-list, ``@``
references resolved by the platform), registration is a manager's action, and the forward-pass check (the
only place a TorchScript file is loaded) runs in a child process, not in the web process."""

import io
import json
import os
import zipfile

import pytest
import torch
import yaml
from django.urls import reverse
from monai.networks.nets import UNet

from core.models import Job, Role
from core.services import membership_set
from ml.bundle_config import check_spec_args, network_def
from ml.engine.loading import load_model
from ml.models import ModelVersion
from ml.services import model_version_register
from ml.specs import ModelError
from tests.ml.test_registry import SPEC, Soft

ARGS = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}
BUNDLE_SPEC = {"ndim": 3, "channels": 1, "roi_size": [16, 16, 16]}


def _net(seed=0):
    torch.manual_seed(seed)
    return UNet(**ARGS).eval()


def _weights(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _bundle(path, config, state=None, *, config_name="configs/inference.json"):
    text = yaml.safe_dump(config) if config_name.endswith(".yaml") else json.dumps(config)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"my_bundle/{config_name}", text)
        zf.writestr(
            "my_bundle/models/model.pt", _weights(state if state is not None else _net().state_dict())
        )
    return path


def _evil_configs(canary):
    """Configs that write ``canary`` (or run a command) if anything in them were evaluated or called."""
    write = f"$open({str(canary)!r}, 'w').write('x')"
    return {
        "dollar": (
            {"network_def": {**ARGS, "_target_": "UNet", "spatial_dims": write}},
            "network_def.spatial_dims",
        ),
        "dollar-at": (
            {"network_def": {**ARGS, "_target_": "UNet", "channels": "@x"}, "x": "$@y or 1"},
            "network_def.channels",
        ),
        "os.system": (
            {"network_def": {"_target_": "os.system", "command": f"touch {canary}"}},
            "network_def._target_",
        ),
        "builtins.exec": (
            {"network_def": {"_target_": "builtins.exec", "source": write[1:]}},
            "network_def._target_",
        ),
        "ConfigParser": (
            {"network_def": {"_target_": "monai.bundle.ConfigParser", "config": {}}},
            "network_def._target_",
        ),
        "torch.load": ({"network_def": {"_target_": "torch.load", "f": str(canary)}}, "network_def._target_"),
        "nested-target": (
            {
                "network_def": {
                    **ARGS,
                    "_target_": "UNet",
                    "act": {"_target_": "os.system", "command": f"touch {canary}"},
                }
            },
            "network_def.act._target_",
        ),
        "requires": (
            {"network_def": {**ARGS, "_target_": "UNet", "_requires_": write}},
            "network_def._requires_",
        ),
        "disabled": (
            {"network_def": {**ARGS, "_target_": "UNet", "_disabled_": write}},
            "network_def._disabled_",
        ),
        "macro-outside": (
            {"network_def": {**ARGS, "_target_": "UNet", "channels": "%/etc/config.json#x"}},
            "network_def.channels",
        ),
        "target-by-reference": (
            {"network_def": {"_target_": "@t", **ARGS}, "t": "os.system"},
            "network_def._target_",
        ),
    }


@pytest.mark.parametrize("case", list(_evil_configs("x")))
def test_a_bundle_whose_config_would_run_code_is_refused_and_nothing_runs(tmp_path, case):
    canary = tmp_path / "pwned"
    config, field = _evil_configs(canary)[case]
    bundle = _bundle(tmp_path / "evil.zip", config)
    with pytest.raises(ModelError) as refused:
        load_model(bundle, "monai-bundle")
    assert not canary.exists(), "the config was evaluated"
    assert refused.value.file == "evil.zip" and refused.value.field == field, refused.value


@pytest.mark.django_db(transaction=True)
def test_registering_such_a_bundle_is_refused_before_anything_is_stored(
    project, manager, api_client, tmp_path
):
    canary = tmp_path / "pwned"
    config, field = _evil_configs(canary)["dollar"]
    bundle = _bundle(tmp_path / "evil.zip", config)
    with pytest.raises(ModelError, match=r"evil\.zip \[network_def\.spatial_dims\]: .*never evaluated"):
        model_version_register(
            project=project,
            path=bundle,
            fmt="monai-bundle",
            name="evil",
            input_spec=BUNDLE_SPEC,
            label_names=["background", "lesion"],
        )
    with open(bundle, "rb") as fh:
        response = api_client(manager).post(
            reverse("project-models", args=[project.slug]),
            {
                "file": fh,
                "name": "evil",
                "format": "monai-bundle",
                "input_spec": json.dumps(BUNDLE_SPEC),
                "label_names": "background,lesion",
            },
            format="multipart",
        )
    assert response.status_code == 400 and field in response.json(), response.content
    assert not canary.exists() and ModelVersion.objects.count() == 0 and Job.objects.count() == 0


def test_network_spec_args_are_data_too(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(_weights(_net().state_dict()))
    for args, field in [
        ({**ARGS, "act": {"_target_": "torch.nn.PReLU"}}, "network.args.act._target_"),
        ({**ARGS, "spatial_dims": "$__import__('os').getpid()"}, "network.args.spatial_dims"),
        ({**ARGS, "channels": "@dims"}, "network.args.channels"),
    ]:
        with pytest.raises(ModelError) as refused:
            load_model(path, "state-dict", network={"name": "UNet", "args": args})
        assert refused.value.field == field
        with pytest.raises(ModelError):
            check_spec_args(args, "weights.pt")
    for name in ("os.system", "monai.bundle.ConfigParser", "Transchex", "monai.networks.nets.vit.UNet"):
        with pytest.raises(ModelError, match=r"\[network\.name\]"):
            load_model(path, "state-dict", network={"name": name, "args": {}})
    with pytest.raises(ModelError, match=r"\[network\.args\.pretrained\]"):
        load_model(
            path,
            "state-dict",
            network={
                "name": "DenseNet121",
                "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "pretrained": True},
            },
        )
    # the MONAI string and [name, {args}] forms of act/norm are data and build
    plain = {**ARGS, "act": ["prelu", {"init": 0.2}], "norm": "BATCH"}
    torch.manual_seed(0)
    path.write_bytes(_weights(UNet(**plain).state_dict()))
    load_model(path, "state-dict", network={"name": "UNet", "args": plain})


def test_references_and_allowed_target_forms_build_the_same_network(tmp_path):
    net = _net()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = net(x)
    configs = {
        "references": {
            "network_def": {
                "_target_": "UNet",
                "spatial_dims": "@dims",
                "in_channels": 1,
                "out_channels": "@out",
                "channels": "@net_args::channels",
                "strides": "@net_args#strides",
                "num_res_units": "%net_args::units",
                "_desc_": "a tiny U-Net",
            },
            "dims": 3,
            "out": "@classes",
            "classes": 2,
            "net_args": {"channels": [4, 8], "strides": [2], "units": 0},
            "network": "$@network_def.to(@device)",  # not read: only network_def is
        },
        "dotted": {"network_def": {"_target_": "monai.networks.nets.UNet", **ARGS}},
        "module-path": {"network_def": {"_target_": "monai.networks.nets.unet.UNet", **ARGS}},
        "network_def-by-reference": {"network_def": "@net", "net": {"_target_": "UNet", **ARGS}},
    }
    for label, config in configs.items():
        model = load_model(_bundle(tmp_path / f"{label}.zip", config, net.state_dict()), "monai-bundle")
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected, msg=label)
    yaml_bundle = _bundle(
        tmp_path / "y.zip", configs["references"], net.state_dict(), config_name="configs/inference.yaml"
    )
    with torch.no_grad():
        torch.testing.assert_close(load_model(yaml_bundle, "monai-bundle")(x), expected)


def test_broken_references_are_clear_errors():
    for config, field, reason in [
        (
            {"network_def": {"_target_": "UNet", "spatial_dims": "@nope"}},
            "network_def.spatial_dims",
            "no entry",
        ),
        (
            {"network_def": {"_target_": "UNet", "channels": "@a"}, "a": "@b", "b": "@a"},
            "network_def.channels",
            "cycle",
        ),
        ({"network_def": {"_target_": "UNet", "x": {"y": "@network_def"}}}, "network_def.x.y", "_target_"),
        ({"network_def": {"_target_": "UNet", "x": "@#sibling"}}, "network_def.x", "relative"),
    ]:
        with pytest.raises(ModelError) as refused:
            network_def(config, file="b.zip")
        assert refused.value.field.startswith(field) and reason in refused.value.reason, refused.value
    fan = {"network_def": {"_target_": "UNet", "x": "@l0"}}
    for i in range(40):  # each level doubles: 2**40 values if expanded blindly
        fan[f"l{i}"] = [f"@l{i + 1}", f"@l{i + 1}"]
    fan["l40"] = 1
    with pytest.raises(ModelError, match="deeper than|more than"):
        network_def(fan, file="b.zip")


def test_checkpoints_with_a_model_entry_or_dataparallel_prefixes_load(tmp_path):
    net = _net()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = net(x)
    state = net.state_dict()
    prefixed = {f"module.{k}": v for k, v in state.items()}
    for label, saved in [
        ("model", {"model": state, "epoch": 3}),
        ("module", prefixed),
        ("both", {"model": prefixed}),
    ]:
        path = tmp_path / f"{label}.pt"
        path.write_bytes(_weights(saved))
        model = load_model(path, "state-dict", network={"name": "UNet", "args": ARGS})
        bundled = load_model(
            _bundle(tmp_path / f"{label}.zip", {"network_def": {"_target_": "UNet", **ARGS}}, saved),
            "monai-bundle",
        )
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)
            torch.testing.assert_close(bundled(x), expected)
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": state, "hook": os.getcwd}, pickled)  # not weights only: refused
    with pytest.raises(ModelError, match=r"pickled\.pt \[weights\]: not a PyTorch state dict"):
        load_model(pickled, "state-dict", network={"name": "UNet", "args": ARGS})


@pytest.mark.django_db(transaction=True)
def test_registering_is_for_managers_researchers_read(project, manager, make_user, api_client):
    researcher = make_user("researcher")
    membership_set(project=project, user=researcher, role=Role.RESEARCHER)
    url = reverse("project-models", args=[project.slug])

    def upload(user):
        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(Soft()), buffer)
        buffer.seek(0)
        buffer.name = "soft.ts"
        return api_client(user).post(
            url,
            {
                "file": buffer,
                "name": "soft",
                "format": "torchscript",
                "input_spec": json.dumps(SPEC),
                "label_names": "background,soft",
            },
            format="multipart",
        )

    refused = upload(researcher)
    assert refused.status_code == 403 and "Only managers" in refused.json()["detail"]
    assert ModelVersion.objects.count() == 0
    assert upload(manager).status_code == 202
    listed = api_client(researcher).get(url)
    assert listed.status_code == 200 and [m["name"] for m in listed.json()] == ["soft"]


@pytest.mark.django_db(transaction=True)
def test_torchscript_is_loaded_in_a_child_process_not_in_the_web_process(
    project, manager, api_client, monkeypatch
):
    """Jobs run in-process here (no broker: the embedded default), as in the web server. ``torch.jit.load``
    of this process is replaced by a tripwire (the only stand-in in this file): the check must not call
    it here; the job records the pid of the process that did load the file."""
    calls = []

    def tripwire(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.jit.load ran in the web process")

    monkeypatch.setattr(torch.jit, "load", tripwire)
    client = api_client(manager)

    def upload(labels, content=None):
        buffer = io.BytesIO()
        if content is None:
            torch.jit.save(torch.jit.script(Soft()), buffer)
        else:
            buffer.write(content)
        buffer.seek(0)
        buffer.name = "soft.ts"
        return client.post(
            reverse("project-models", args=[project.slug]),
            {
                "file": buffer,
                "name": "soft",
                "format": "torchscript",
                "input_spec": json.dumps(SPEC),
                "label_names": labels,
            },
            format="multipart",
        )

    ready = upload("background,soft_tissue")
    assert ready.status_code == 202 and ready.json()["status"] == "ready", ready.json()
    job = Job.objects.get(pk=ready.json()["job_id"])
    assert job.kind == "model_validate" and job.status == "succeeded"
    assert job.result["checked_in_pid"] not in (None, os.getpid())
    rejected = upload("a,b,c").json()
    assert rejected["status"] == "rejected" and "soft.ts [label_names]: 3 label names" in rejected["error"]
    junk = upload("a", content=b"not a TorchScript archive").json()
    assert junk["status"] == "rejected" and "soft.ts [weights]" in junk["error"]
    assert calls == []
