"""platform/env.example lists every setting the code reads from the environment, each with a comment, and
nothing the code (or compose.yaml, or nginx.conf) does not read."""

import re
import textwrap
from collections import Counter

from tests.deploy.platform_files import (
    COMPOSE,
    ENV_EXAMPLE,
    NGINX_CONF,
    env_example_entries,
    env_reads,
    interpolated_names,
)


def test_the_reader_finds_every_form_of_environment_read(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "settings.py").write_text(
        textwrap.dedent(
            """
            import os
            from config.settings.env import env_bool, env_int, env_list, env_str

            A = env_str("READ_BY_ENV_STR", "x")
            B = env_int("READ_BY_ENV_INT", 1) + env_bool("READ_BY_ENV_BOOL")
            B2 = env_list("READ_BY_ENV_LIST", [])
            C = _env_float("READ_BY_PRIVATE_HELPER", 0.0)
            D = os.environ.get("READ_BY_ENVIRON_GET") or os.getenv("READ_BY_GETENV")
            E = os.environ["READ_BY_SUBSCRIPT"]
            os.environ.setdefault("READ_BY_SETDEFAULT", "x")
            os.environ["WRITTEN_ONLY"] = "x"

            def endpoints(environ):
                for name in environ.get("READ_BY_MAPPING", "").split(","):
                    prefix = f"EP_{name.upper()}_"
                    environ.get(prefix + "URL")
            """
        )
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('import os\nos.environ.get("READ_BY_A_TEST")\n')

    found = env_reads(tmp_path)

    assert set(found.names) == {
        "READ_BY_ENV_STR",
        "READ_BY_ENV_INT",
        "READ_BY_ENV_BOOL",
        "READ_BY_ENV_LIST",
        "READ_BY_PRIVATE_HELPER",
        "READ_BY_ENVIRON_GET",
        "READ_BY_GETENV",
        "READ_BY_SUBSCRIPT",
        "READ_BY_SETDEFAULT",
        "READ_BY_MAPPING",
    }
    assert list(found.patterns) == ["EP_[A-Z0-9_]+_URL"]
    assert found.matches("EP_LOCAL_URL") and not found.matches("EP_URL")


def test_every_setting_the_code_reads_is_listed_with_a_comment():
    reads = env_reads()
    entries = env_example_entries()
    listed = {e.name for e in entries}

    missing = {name: where for name, where in reads.names.items() if name not in listed}
    assert not missing, f"read by the code but not in {ENV_EXAMPLE.name} (name: where read): {missing}"
    unexampled = {
        pattern: where
        for pattern, where in reads.patterns.items()
        if not any(re.fullmatch(pattern, name) for name in listed)
    }
    assert not unexampled, f"names built at run time with no example in {ENV_EXAMPLE.name}: {unexampled}"
    undocumented = [f"{e.name} (line {e.line})" for e in entries if not e.documented]
    assert not undocumented, f"listed without a comment saying what it is: {undocumented}"


def test_every_listed_name_is_read_and_set_once():
    reads = env_reads()
    deployment = interpolated_names(COMPOSE) | interpolated_names(NGINX_CONF)
    entries = env_example_entries()

    unread = [e.name for e in entries if not reads.matches(e.name) and e.name not in deployment]
    assert not unread, (
        f"listed in {ENV_EXAMPLE.name} but read by no code, compose.yaml or nginx.conf: {unread}"
    )
    twice = [name for name, n in Counter(e.name for e in entries if not e.commented).items() if n > 1]
    assert not twice, f"set more than once: {twice}"


def test_every_variable_compose_and_nginx_fill_in_is_listed():
    listed = {e.name for e in env_example_entries() if not e.commented}
    for path in (COMPOSE, NGINX_CONF):
        unlisted = interpolated_names(path) - listed
        assert not unlisted, f"{path.name} uses variables {ENV_EXAMPLE.name} does not set: {sorted(unlisted)}"
