"""The forward-pass check of a registered model, run as its own process: ``python -m ml.engine.check``.

A TorchScript file is code the JIT runs, and loading any model file exercises deserialisers; the
validation job (``ml.services.model_version_validate``) therefore runs this module in a child process
instead of in its own: in the embedded default the job runs inside the web server, and on a ``gpu`` worker
a crash, hang or stray effect stays in the child. No Django here: the child gets the local file and the
version's specs as JSON on stdin and answers one JSON line on stdout::

    in:  {"path": "/tmp/.../model.ts", "format": "torchscript", "network": {...} | null,
          "input_spec": {...}, "label_names": [...], "device": "cpu" | null}
    out: {"ok": true, "pid": 123, "device": "cpu"}
      or {"ok": false, "pid": 123, "file": "model.ts", "field": "label_names", "reason": "..."}
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ml.specs import CHECK_RESULT_PREFIX


def run_check(request: dict[str, Any]) -> dict[str, Any]:
    from ml.engine.devices import pick_device
    from ml.engine.loading import check_forward, load_model
    from ml.specs import InputSpec, ModelError

    path = Path(request["path"])
    device = request.get("device") or pick_device()
    try:
        model = load_model(path, request["format"], network=request.get("network"), device=device)
        spec = InputSpec.from_dict(request.get("input_spec") or {})
        check_forward(model, spec, list(request.get("label_names") or []), path.name)
    except ModelError as exc:
        return {"ok": False, "pid": os.getpid(), "file": exc.file, "field": exc.field, "reason": exc.reason}
    return {"ok": True, "pid": os.getpid(), "device": device}


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = run_check(request)
    sys.stdout.write("\n" + CHECK_RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
