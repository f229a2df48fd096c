"""Security: debug pages, the secret key, hosts and HTTPS behind a proxy, cookies, HSTS, the
Content-Security-Policy, passwords, failed-login lockout and API token lifetime.

Embedded default (no environment): DEBUG off (no debug pages), a random secret key made once into
``var/secret_key`` (mode 0600), the hosts 127.0.0.1 and localhost, plain HTTP. Production
(``platform/env.example``): a real ``SECRET_KEY``, HTTPS only, secure cookies, HSTS and the proxy's HTTPS
header, with which ``manage.py check --deploy`` is clean. With DEBUG off the platform refuses to start on a
placeholder or short ``SECRET_KEY``.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from config.settings.env import BASE_DIR, env_bool, env_int, env_list, env_str

DEBUG = env_bool("DEBUG", default=False)

# --- The secret key -----------------------------------------------------------------------------------
SECRET_KEY_MIN_LENGTH = 50
# Words of placeholder keys (env.example's "change-me", Django's "django-insecure-..."): never a real key.
SECRET_KEY_PLACEHOLDERS = ("change-me", "changeme", "change_me", "replace-me", "insecure", "placeholder")
SECRET_KEY_FILE = BASE_DIR / "var" / "secret_key"


def secret_key_problem(key: str) -> str:
    """Why ``key`` is no production key ("" when it is one): placeholder words, too short, too few
    different characters (Django's own ``security.W009`` criteria plus the placeholders)."""
    lowered = key.lower()
    for word in SECRET_KEY_PLACEHOLDERS:
        if word in lowered:
            return f"contains the placeholder {word!r}"
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return f"is {len(key)} characters long, fewer than {SECRET_KEY_MIN_LENGTH}"
    if len(set(key)) < 5:
        return "has fewer than 5 different characters"
    return ""


def secret_key_from_file(path: Path) -> str:
    """The embedded default's key: read from ``path``, made there first (random, mode 0600) when absent.
    Made in a temporary file and linked into place, so processes starting together agree on one key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(64))
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: use theirs
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or secret_key_from_file(SECRET_KEY_FILE)
if not DEBUG and (_problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(
        f"SECRET_KEY {_problem}: with DEBUG off the platform refuses to start on a placeholder or short "
        f'key. Make one with: python -c "import secrets; print(secrets.token_urlsafe(50))" (or unset '
        f"SECRET_KEY on a single machine: a random key is then kept in {SECRET_KEY_FILE})."
    )

# --- Hosts, HTTPS behind a proxy, cookies, HSTS ---------------------------------------------------------
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
# https origins that may POST forms (the site's own when a proxy rewrites the scheme or host).
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The header with which the proxy says the request came over HTTPS, e.g. HTTP_X_FORWARDED_PROTO (nginx.conf
# sets X-Forwarded-Proto); its value must then be "https". Only when a proxy always sets it.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header, "https") if _proxy_ssl_header else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
X_FRAME_OPTIONS = "DENY"

# --- Content-Security-Policy (django-csp) -----------------------------------------------------------------
# No inline scripts or styles anywhere (templates link static files). The review screen's NiiVue bundle
# needs data:/blob: images (its font atlas, decoded slices) and WebAssembly for compressed image codecs.
# /api/redoc/ alone relaxes styles and workers (config/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, "'wasm-unsafe-eval'"],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF, "data:", "blob:"],
        "worker-src": [SELF, "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Passwords ---------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 12)},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Failed logins (django-axes): admin, /review/login/, /api/auth/token/ ---------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out user and address
    "django.contrib.auth.backends.ModelBackend",
]
# Locked out: one user name from one address after this many failures, for this long.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_COOLOFF_MESSAGE = (
    f"Too many failed logins for this user from this address: try again in "
    f"{env_int('LOGIN_COOLOFF_MINUTES', 15)} minutes."
)
# The client's address: REMOTE_ADDR, or the header a proxy sets (CLIENT_IP_HEADER=HTTP_X_REAL_IP behind
# platform/nginx.conf). Only name a header the proxy always overwrites: clients can send any header.
_client_ip_header = env_str("CLIENT_IP_HEADER")
AXES_IPWARE_META_PRECEDENCE_ORDER = (
    (_client_ip_header, "REMOTE_ADDR") if _client_ip_header else ("REMOTE_ADDR",)
)

# --- API tokens (django-rest-knox): expire after API_TOKEN_TTL_HOURS, revocable -----------------------------
_token_ttl_hours = env_int("API_TOKEN_TTL_HOURS", 24)
if _token_ttl_hours <= 0:
    raise ImproperlyConfigured(
        f"API_TOKEN_TTL_HOURS must be a positive number of hours, got {_token_ttl_hours}"
    )
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=_token_ttl_hours),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
