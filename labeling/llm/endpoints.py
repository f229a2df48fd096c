"""The LLM endpoints a run may use: named in the server's settings, never given by a request.

``default`` is ``LLM_BASE_URL`` / ``LLM_MODEL`` / ``LLM_API_KEY`` (``LLM_MODELS``: other model names runs
may ask it for); more come from ``LLM_ENDPOINTS`` (config/settings/llm.py). A run's params name one
(``endpoint``) and may name a model; the URL and the key stay on the server: they are never in a run's
params, its identity hash, the reply cache or an API answer. Parameters that would say where requests go
(``base_url``, ``api_key``, ...) are refused, at any depth of the params (ensemble members included).
"""

from dataclasses import dataclass, field

from django.conf import settings

from config.settings import llm as defaults
from core.errors import ApplicationError

DEFAULT = "default"

# Keys that would choose where requests go or how they authenticate: refused wherever they appear in a run's
# params (a URL or key never comes from a request, and so is never stored on a run).
FORBIDDEN_PARAMS = frozenset(
    {
        "base_url",
        "api_base",
        "api_key",
        "api_type",
        "api_version",
        "azure_endpoint",
        "azure_ad_token",
        "organization",
        "project",
        "default_headers",
        "default_query",
        "extra_headers",
        "extra_query",
        "extra_body",
        "headers",
        "http_client",
        "proxy",
        "proxies",
        "url",
        "websocket_base_url",
    }
)

# The parameters an ``llm`` run (or an ensemble's ``llm`` member) may give; anything else is refused.
LLM_PARAMS = frozenset(
    {
        "endpoint",
        "model",
        "prompt_version",
        "temperature",
        "seed",
        "timeout",
        "max_retries",
        "invalid_retries",
        "backoff_base",
        "backoff_cap",
        "concurrency",
        "price_in",
        "price_out",
        "cache",
    }
)

_WHERE_FROM = (
    "the LLM endpoint's URL and key come from the server's settings only (LLM_ENDPOINTS); "
    "name a configured endpoint with 'endpoint'"
)


@dataclass(frozen=True)
class Endpoint:
    """A configured endpoint. ``models``: the model names runs may ask it for (empty: any); its default
    ``model`` is always allowed. The key is left out of ``repr`` (tracebacks, logs)."""

    name: str
    base_url: str = field(repr=False)
    model: str = ""
    api_key: str = field(default="none", repr=False)
    models: tuple[str, ...] = ()

    def allows(self, model: str) -> bool:
        return not self.models or model == self.model or model in self.models


def setting(name: str):
    """A Django setting of config/settings/llm.py, or its default when Django is not configured with it."""
    if settings.configured:
        return getattr(settings, name, getattr(defaults, name))
    return getattr(defaults, name)


def endpoints() -> dict[str, Endpoint]:
    """Every configured endpoint by name, ``default`` first (read from the settings at each call)."""
    found = {
        DEFAULT: Endpoint(
            name=DEFAULT,
            base_url=setting("LLM_BASE_URL"),
            model=setting("LLM_MODEL") or "",
            api_key=setting("LLM_API_KEY") or "none",
            models=tuple(setting("LLM_MODELS") or ()),
        )
    }
    for name, spec in (setting("LLM_ENDPOINTS") or {}).items():
        if name == DEFAULT:
            continue
        found[name] = Endpoint(
            name=name,
            base_url=spec["base_url"],
            model=spec.get("model") or "",
            api_key=spec.get("api_key") or "none",
            models=tuple(spec.get("models") or ()),
        )
    return found


def endpoint_get(name: object = None, *, where: str = "params") -> Endpoint:
    """The endpoint called ``name`` (None: ``default``); a 400 naming ``<where>.endpoint`` and listing the
    configured names when there is none of that name."""
    configured = endpoints()
    if name is None or name == "":
        return configured[DEFAULT]
    if not isinstance(name, str) or name not in configured:
        raise ApplicationError(
            f"no LLM endpoint {name!r} is configured; choose one of: {', '.join(configured)}",
            field=f"{where}.endpoint",
        )
    return configured[name]


def forbidden_params_check(params: object, *, where: str = "params") -> None:
    """A 400 naming the first key, at any depth, that would say where requests go or how they authenticate."""
    if isinstance(params, dict):
        for key, value in params.items():
            path = f"{where}.{key}"
            if isinstance(key, str) and key.lower() in FORBIDDEN_PARAMS:
                raise ApplicationError(f"not accepted: {_WHERE_FROM}", field=path)
            forbidden_params_check(value, where=path)
    elif isinstance(params, list):
        for i, value in enumerate(params):
            forbidden_params_check(value, where=f"{where}[{i}]")


def llm_params_check(params: dict, *, where: str = "params") -> None:
    """A 400 naming the field for any parameter an ``llm`` run may not give (see ``LLM_PARAMS``)."""
    forbidden_params_check(params, where=where)
    for key in params:
        if key not in LLM_PARAMS:
            raise ApplicationError(
                f"unknown parameter of the llm labeler; accepted: {', '.join(sorted(LLM_PARAMS))}",
                field=f"{where}.{key}",
            )
    for key in ("endpoint", "model", "prompt_version"):
        if params.get(key) is not None and not isinstance(params[key], str):
            raise ApplicationError("must be a string", field=f"{where}.{key}")


def endpoint_model(endpoint: Endpoint, model: object, *, where: str = "params") -> str:
    """The model a run asks ``endpoint`` for: ``model`` when given (a 400 when the endpoint does not offer
    it), else the endpoint's own."""
    if not model:
        return endpoint.model
    if not endpoint.allows(model):
        offered = ", ".join(m for m in dict.fromkeys((endpoint.model, *endpoint.models)) if m)
        raise ApplicationError(
            f"endpoint {endpoint.name!r} does not offer model {model!r}; choose one of: {offered}",
            field=f"{where}.model",
        )
    return model


__all__ = [
    "DEFAULT",
    "Endpoint",
    "FORBIDDEN_PARAMS",
    "LLM_PARAMS",
    "endpoint_get",
    "endpoint_model",
    "endpoints",
    "forbidden_params_check",
    "llm_params_check",
    "setting",
]
