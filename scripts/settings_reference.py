"""The settings reference, docs/settings.md, generated from ``app.config.Settings``.

    python scripts/settings_reference.py          # writes docs/settings.md
    python scripts/settings_reference.py --check  # `make lint`: fails when the committed page is not what it writes

Each setting's row comes from its field: the environment variable (``COSYVOICE_<FIELD>``, or the field's
validation alias), its type and allowed values (annotation and constraints), its default and its description.
"""

import argparse
import difflib
import json
import sys
import types
import typing
from pathlib import Path

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's app, whatever the working directory

from app.config import Settings  # noqa: E402

PAGE = ROOT / "docs" / "settings.md"
LONG_DEFAULT = 60  # characters: a longer default is shown below the table

# where a setting is explained at length (links relative to docs/settings.md)
SEE_ALSO = {
    "engine": ("Engines", "engines.md"),
    "model_dir": ("Getting weights", "engines.md#getting-weights"),
    "src": ("The upstream code", "engines.md#the-upstream-code"),
    "fp16": ("GPUs", "gpu.md#what-upstreams-flags-do"),
    "load_jit": ("GPUs", "gpu.md#what-upstreams-flags-do"),
    "load_trt": ("GPUs", "gpu.md#what-upstreams-flags-do"),
    "load_vllm": ("GPUs", "gpu.md#what-upstreams-flags-do"),
    "stream_first_hop": ("How streaming works", "streaming.md#how-streaming-works"),
    "stream_max_hop": ("How streaming works", "streaming.md#how-streaming-works"),
    "stream_tail": ("How streaming works", "streaming.md#how-streaming-works"),
    "prompt_cache_mb": ("How streaming works", "streaming.md#how-streaming-works"),
    "header_timeout_seconds": ("Hostile clients", "operations/hostile-clients.md"),
    "body_timeout_seconds": ("Hostile clients", "operations/hostile-clients.md"),
    "api_keys_file": ("API keys", "operations/keys.md"),
    "max_concurrency": ("How the scheduler works", "streaming.md#how-the-scheduler-works-many-streams-at-once"),
    "batching": ("How the scheduler works", "streaming.md#how-the-scheduler-works-many-streams-at-once"),
    "gather_wait_ms": ("How the scheduler works", "streaming.md#how-the-scheduler-works-many-streams-at-once"),
    "max_queued": ("Backpressure", "operations/backpressure.md"),
    "queue_timeout_seconds": ("Backpressure", "operations/backpressure.md"),
    "storage": ("Storage", "operations/storage.md"),
    "openai_voices": ("OpenAI door", "doors/openai.md#voices"),
    "dashscope_voices": ("DashScope door", "doors/dashscope.md"),
    "dashscope_idle_seconds": ("DashScope door", "doors/dashscope.md"),
    "fetch_hosts": ("Voice enrollment", "doors/dashscope.md#voice-enrollment"),
    "cors_origins": ("CORS", "operations/cors.md"),
    "grpc_port": ("gRPC", "doors/runtime.md#grpc"),
    "wyoming_port": ("Wyoming door", "doors/wyoming.md"),
    "wyoming_user": ("Wyoming door", "doors/wyoming.md#authentication-voices-and-users"),
}

HEADER = """\
<!-- Generated from app/config.py by scripts/settings_reference.py: edit the fields' descriptions there, then
run `.venv/bin/python scripts/settings_reference.py`. `make lint` fails when this page is out of date. -->

# Settings reference

Every setting is an environment variable (or a line of a `.env` file in the working directory); nothing else
reads the environment. Names are `COSYVOICE_` and the setting's name in capitals, except the OSS credentials,
which keep OSS's own names. Lists and objects are JSON unless said otherwise; a value that does not validate
stops the start-up, with a message naming the setting.

The README has a short table of the settings changed most often; here is every one of them, each linked to the
page that explains it at length where there is one.
"""

# what else sets where and how the service runs (rows of the page's last table)
BESIDES = (
    ("`HOST`, `PORT` (make variables)", "`127.0.0.1`, `8000`", "where `make run` serves"),
    ("`ENGINE` (make variable)", "`auto`", "`make run` and `make bench` pass it as `COSYVOICE_ENGINE`"),
    (
        "`TORCH_INDEX` (make variable)",
        "unset",
        "a PyTorch index for torch's wheels, e.g. `https://download.pytorch.org/whl/cpu` (CPU only) or "
        "`https://download.pytorch.org/whl/cu128` (CUDA)",
    ),
    (
        "`COSYVOICE_SRC` (read by `make` too)",
        "unset",
        "`make install-cosyvoice` uses that checkout of upstream's code instead of fetching it",
    ),
    (
        "`XDG_CACHE_HOME`",
        "`~/.cache`",
        "the embedded engine keeps a copy of espeak-ng's data (with the service's own steady voice variants) "
        "under `$XDG_CACHE_HOME/cosyvoice-service/`, built once on first start",
    ),
)


BOUNDS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def env_name(name: str, field: FieldInfo) -> str:
    if isinstance(field.validation_alias, str):
        return field.validation_alias
    return Settings.model_config["env_prefix"] + name.upper()


def type_text(annotation, field: FieldInfo) -> str:
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(members) < len(typing.get_args(annotation)), members[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        text = "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    elif annotation is bool:
        text = "`true` or `false`"
    elif origin is dict:
        text = "JSON object"
    elif origin is list:
        text = "comma-separated list" if NoDecode in field.metadata else "JSON list"
    else:
        names = {int: "integer", float: "number", str: "string", Path: "path", SecretStr: "string (secret)"}
        text = names[annotation]
    for constraint in field.metadata:
        for kind, attribute, sign in BOUNDS:
            if isinstance(constraint, kind):
                text += f", {sign} {value_text(getattr(constraint, attribute))}"
    return text + (", or unset" if optional else "")


def value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def default_text(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, list) and NoDecode in field.metadata:
        return ",".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return value_text(value)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    rows, long_defaults = [], []
    for name, field in Settings.model_fields.items():
        variable = env_name(name, field)
        default = default_text(field)
        if len(default) > LONG_DEFAULT:
            anchor = "default-of-" + variable.lower()  # the heading's id, as MkDocs makes it
            shown = json.dumps(field.get_default(call_default_factory=True), ensure_ascii=False, indent=2)
            long_defaults.append(f"### Default of `{variable}`\n\n```json\n{shown}\n```\n")
            default_cell = f"[below](#{anchor})"
        else:
            default_cell = f"`{default}`" if default not in ("unset", "empty") else default
        description = field.description or ""
        if name in SEE_ALSO:
            label, link = SEE_ALSO[name]
            description += f" See [{label}]({link})."
        kind = type_text(field.annotation, field)
        rows.append(f"| `{variable}` | {cell(kind)} | {cell(default_cell)} | {cell(description)} |")
    table = "| variable | type, allowed values | default | what it does |\n| --- | --- | --- | --- |\n"
    page = [HEADER, "## The settings\n", table + "\n".join(rows) + "\n"]
    if long_defaults:
        page += ["## Long defaults\n", *long_defaults]
    besides = "\n".join(f"| {name} | {default} | {what} |" for name, default, what in BESIDES)
    page.append("## Besides the settings\n\n| name | default | what |\n| --- | --- | --- |\n" + besides + "\n")
    return "\n".join(page)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when docs/settings.md is not up to date")
    args = parser.parse_args()
    page = render()
    if not args.check:
        PAGE.write_text(page, encoding="utf-8")
        print(f"wrote {PAGE.relative_to(ROOT)}")
        return 0
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
    if current == page:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(), page.splitlines(), "docs/settings.md (committed)", "from app/config.py", lineterm=""
    )
    print("\n".join(list(diff)[:40]), file=sys.stderr)
    print(
        "docs/settings.md is not what app/config.py gives: run `.venv/bin/python scripts/settings_reference.py` "
        "and commit the page",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
