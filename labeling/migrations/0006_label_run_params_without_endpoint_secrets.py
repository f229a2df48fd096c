"""Label runs no longer carry an LLM endpoint's URL or key: endpoints are named in the server's settings.

Before, a run's params could hold ``base_url`` and ``api_key`` (at the top, or in an ensemble's members),
and an ``llm`` run recorded the URL it used (``params["recorded"]["base_url"]``). This strips them:

- ``recorded["base_url"]`` becomes ``recorded["endpoint"]``: ``default`` when the run used the server's
  URL, ``unknown (URL removed)`` when its params had named another;
- the URL and key keys (``FORBIDDEN``) go from the params at any depth;
- the identity hash of an ``llm`` run is computed again the way ``labeling.services.settings_hash`` now
  computes it (the endpoint's name, never its URL or key), so starting the same settings again resumes
  the run; any other run that changed, or one whose new hash another run already has, gets a hash of its
  own (starting it again makes a new run; the reply cache still makes that free).
"""

import hashlib
import json

from django.db import migrations

FORBIDDEN = {"base_url", "api_base", "api_key", "organization", "default_headers", "headers"}


def _clean(value):
    """``value`` without the FORBIDDEN keys at any depth, and whether anything was removed."""
    if isinstance(value, dict):
        out, changed = {}, False
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in FORBIDDEN:
                changed = True
                continue
            out[key], sub = _clean(item)
            changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [_clean(item) for item in value]
        return [item for item, _ in items], any(sub for _, sub in items)
    return value, False


def _hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def strip_endpoint_secrets(apps, schema_editor):
    LabelRun = apps.get_model("labeling", "LabelRun")
    for run in LabelRun.objects.order_by("pk").iterator():
        params = run.params if isinstance(run.params, dict) else {}
        recorded = params.get("recorded")
        given, given_changed = _clean({k: v for k, v in params.items() if k != "recorded"})
        recorded_changed = isinstance(recorded, dict) and any(k.lower() in FORBIDDEN for k in recorded)
        if not (given_changed or recorded_changed):
            continue
        new_hash = None
        if isinstance(recorded, dict):
            recorded = {k: v for k, v in recorded.items() if k.lower() not in FORBIDDEN}
            recorded["endpoint"] = "unknown (URL removed)" if given_changed else "default"
            if run.labeler == "llm" and not given_changed:
                # labeling.services.settings_hash of the same settings on the ``default`` endpoint
                new_hash = _hash(
                    {
                        "recorded": recorded,
                        "labeler": run.labeler,
                        "version": recorded.get("labeler_version"),
                        "schema": run.schema,
                        "params": given,
                        "prompt_version": run.prompt_version,
                        "model": run.model_name,
                    }
                )
            given = {**given, "recorded": recorded}
        taken = LabelRun.objects.filter(project_id=run.project_id, settings_hash=new_hash).exclude(pk=run.pk)
        if new_hash is None or taken.exists():
            new_hash = _hash({"run": run.pk, "labeler": run.labeler, "params": given, "migrated": "0006"})
        run.params = given
        run.settings_hash = new_hash
        run.save(update_fields=["params", "settings_hash"])


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0005_proposal_model_fields"),
    ]

    operations = [
        migrations.RunPython(strip_endpoint_secrets, migrations.RunPython.noop),
    ]
