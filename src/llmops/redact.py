"""One redaction for every exit: MLflow params, tags and artifacts, registered packages,
merge requests, release notes, the terminal and log files.

Three things count as secret:
- the values this process was given as secrets (`remember`: `Settings.from_env` passes every
  variable whose name says secret, and the credentials of every URI that carries them);
- credentials in a URI (`https://user:password@host`): the user information is replaced;
- values shaped like well-known credentials (`SECRET_PATTERNS`, which the data gate also
  uses to refuse training rows that contain them).

A key whose name says secret (`is_secret_name`) has its string value hidden whatever it
looks like. Subprocesses get an environment without secrets (`scrubbed_env`) except the
ones they need, named by the caller. Every entry point (the CLI, each Prefect flow) starts
with `redact_process`; an exception leaving a flow or a task is redacted before Prefect
turns it into a state (`redacting`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

REDACTED = "[REDACTED]"

# Shapes of credentials that are secret wherever they appear (the data gate's "secret"
# kinds). Quantifiers are bounded or anchored on a literal prefix: linear on any input.
SECRET_PATTERNS: dict[str, str] = {
    "cloud_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{35}\b",
    # the whole PEM block: its base64 body is the secret, not the header line
    "private_key": (r"-----BEGIN (?:[A-Z]{1,20} ){0,4}PRIVATE KEY-----[A-Za-z0-9+/=\s]{0,8192}"
                    r"(?:-----END (?:[A-Z]{1,20} ){0,4}PRIVATE KEY-----)?"),
    # GitLab's personal, deploy, CI job and other tokens (a routable one has dots), GitHub's,
    # Slack's, OpenAI-style keys, Hugging Face's; a token in GitLab's query parameters and
    # after `Bearer ` (RFC 6750's characters; 16 or more, so that prose is no token).
    "api_token": (r"\bgl(?:pat|dt|cbt|rt|ptt|ft|imt|oas|soat|agent)-[0-9A-Za-z_.-]{20,}"
                  r"|\bgh[pousr]_[0-9A-Za-z]{36,}"
                  r"|\bxox[abprs]-[0-9A-Za-z-]{10,}|\bsk-[A-Za-z0-9_-]{20,}"
                  r"|\bhf_[A-Za-z0-9]{30,}"
                  r"|(?:(?<=[?&]private_token=)|(?<=[?&]job_token=))[^&#\s\"'<>]+"
                  r"|(?i:(?<=\bbearer ))[A-Za-z0-9._~+/-]{16,}=*"),
}
_SHAPES = re.compile("|".join(f"(?:{p})" for p in SECRET_PATTERNS.values()))
# scheme://userinfo@ : the user information (a user, a password, or a token as user), up to
# the authority's last `@`, so a password with an `@` or of any length goes whole. Linear:
# an attempt starts only at a scheme and ends where the authority does (`/`, a space, a
# quote), and every `://` holds a `/`, so attempts never scan the same text twice.
_URI_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,31}://)([^/\s\"'<>\\`]+)@")

# Name segments that mark a secret: `gitlab_token`, `wandb_api_key`, `db-password`,
# `MLFLOW_TRACKING_PASSWORD`, `credentials`, `private_key`. `tokenizer_type` or
# `max_new_tokens` are not secrets: whole segments are compared, not substrings.
_SECRET_SEGMENTS = frozenset({
    "token", "secret", "secrets", "password", "passwd", "passphrase", "credential",
    "credentials", "apikey", "auth", "cookie", "jwt"})
# Names that look secret but hold paths every process has (the working directory, an
# agent's socket): remembered, they would redact ordinary paths from every line printed.
_NOT_SECRET = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK", "XAUTHORITY"})
# The pipeline's own secrets, which no tool it runs needs.
PIPELINE_SECRETS = frozenset({
    "GITLAB_TOKEN", "LLMOPS_REGISTRY_TOKEN", "LLMOPS_API_KEY", "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD", "CI_JOB_TOKEN", "CI_REGISTRY_PASSWORD",
    # what the register job signs with (`llmops.signatures`)
    "LLMOPS_SIGNING_KEY", "LLMOPS_SIGNING_KEY_PASSWORD", "SIGSTORE_ID_TOKEN"})
_MIN_REMEMBERED = 4  # shorter values would redact ordinary words

_known: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: re.Pattern[str] | None = None


def is_secret_name(name: str) -> bool:
    """Whether a key or variable name says its value is a secret (`*_KEY` included)."""
    if name.upper() in _NOT_SECRET:
        return False
    segments = [s for s in re.split(r"[^a-z0-9]+", name.lower()) if s]
    return bool(segments) and (segments[-1] == "key"
                               or any(s in _SECRET_SEGMENTS for s in segments))


def uri_credentials(value: str) -> list[str]:
    """The user information of every URI in `value` that carries some, and its password."""
    found: list[str] = []
    for match in _URI_USERINFO.finditer(value):
        userinfo = match.group(2)
        found.append(userinfo)
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    return [f for f in found if len(f) >= _MIN_REMEMBERED]


def remember(values: Iterable[str | None]) -> None:
    """Treat these values as secrets from now on, wherever they appear."""
    global _known_pattern
    new = {v for v in values if v and len(v) >= _MIN_REMEMBERED}
    with _known_lock:
        if new <= _known:
            return
        _known.update(new)
        ordered = sorted(_known, key=len, reverse=True)  # the longest match wins
        _known_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def remember_environment(env: Mapping[str, str]) -> None:
    """Every secret-named variable's value, and every URI's credentials, as secrets."""
    values: list[str] = []
    for name, value in env.items():
        if is_secret_name(name):
            values.append(value)
        if "@" in value:
            values.extend(uri_credentials(value))
    remember(values)


def forget_all() -> None:
    """Tests only: start again with no remembered secrets."""
    global _known_pattern
    with _known_lock:
        _known.clear()
        _known_pattern = None


def redact(text: str) -> str:
    """`text` with every remembered secret, URI credential and credential-shaped value
    replaced by `[REDACTED]` (a URI keeps its scheme and host)."""
    if not text:
        return text
    known = _known_pattern
    if known is not None:
        text = known.sub(REDACTED, text)
    if "@" in text:
        text = _URI_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _SHAPES.sub(REDACTED, text)


def redact_value(key: str, value: Any) -> Any:
    """A config or parameter value as it may leave the process: a string under a secret
    name is hidden; other strings are redacted; containers are walked."""
    if isinstance(value, str):
        return REDACTED if is_secret_name(key) and value else redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(key, v) for v in value]
    return value


def redact_mapping(items: Mapping[str, Any]) -> dict[str, Any]:
    """Every value of a flat or nested mapping through `redact_value`."""
    return {k: redact_value(k, v) for k, v in items.items()}


def secret_keys(config: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the keys that hold a secret in a YAML document: a string under a
    secret-looking name, or any string that carries credentials. For refusing configs
    that would be logged or shipped."""
    found: list[str] = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            path = f"{prefix}{key}"
            if isinstance(value, str) and value and (is_secret_name(str(key))
                                                     or redact(value) != value):
                found.append(path)
            else:
                found.extend(secret_keys(value, f"{path}."))
    elif isinstance(config, list):
        for i, value in enumerate(config):
            if isinstance(value, str) and redact(value) != value:
                found.append(f"{prefix}{i}")
            else:
                found.extend(secret_keys(value, f"{prefix}{i}."))
    return found


def scrubbed_env(env: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """`env` without the variables that hold secrets (by name, or a URI with credentials),
    except those named in `keep`, which this subprocess needs."""
    wanted = set(keep)
    return {name: value for name, value in env.items()
            if name in wanted or not (is_secret_name(name) or _URI_USERINFO.search(value))}


class RedactingStream:
    """A text stream that redacts what is written to it (the terminal: libraries that print
    links or errors to stdout directly, not through logging)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, …
        return getattr(self._stream, name)


def redact_standard_streams() -> None:
    """Wrap sys.stdout and sys.stderr (once) so that nothing printed carries a secret."""
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))


def install_logging_filter() -> None:
    """Redact every log record of this process when it is created, whichever library's
    logger or handler it goes to (handlers are added later by MLflow and Prefect)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: logging reports it when it is emitted
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        # A traceback is formatted by each handler from `exc_info` (Prefect's API handler
        # ships it with the message): the exception itself must carry no secret.
        if record.exc_info and record.exc_info[1] is not None:
            clean = redact_exception(record.exc_info[1])
            record.exc_info = (type(clean), clean, clean.__traceback__)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redact_process(env: Mapping[str, str]) -> None:
    """What every entry point does first, the CLI as each Prefect flow: `env`'s secrets
    remembered, every log record and the standard streams redacted."""
    remember_environment(env)
    install_logging_filter()
    redact_standard_streams()


class RedactedError(Exception):
    """Stands in for an exception whose text carried a secret that its arguments and
    attributes do not hold (a message computed inside a library): its redacted text."""


def redact_exception(exc: BaseException) -> BaseException:
    """`exc` with the string arguments and attributes of it, its cause and its context
    redacted in place; where its text still carries a secret, a RedactedError with that
    text redacted (same traceback and cause) instead."""
    return _redacted_exception(exc, set())


def _redacted_exception(exc: BaseException, seen: set[int]) -> BaseException:
    if id(exc) in seen:  # a cycle of causes
        return exc
    seen.add(id(exc))
    _redact_in_place(exc)
    for link in ("__cause__", "__context__"):
        linked = getattr(exc, link)
        if linked is not None and (clean := _redacted_exception(linked, seen)) is not linked:
            setattr(exc, link, clean)
    try:
        text = str(exc)
    except Exception:  # a broken __str__: traceback prints no text for it either
        return exc
    if redact(text) == text:
        return exc
    stand_in = RedactedError(f"{type(exc).__name__}: {redact(text)}")
    stand_in.__cause__, stand_in.__context__ = exc.__cause__, exc.__context__
    stand_in.__suppress_context__ = exc.__suppress_context__
    return stand_in.with_traceback(exc.__traceback__)


def _redact_in_place(exc: BaseException) -> None:
    """Strings (and lists of strings: a command) in `exc.args` and its attributes."""
    args = tuple(_redacted_item(a) for a in exc.args)
    # Some C exceptions refuse new arguments, a property refuses a value: the stand-in
    # (`redact_exception`) covers what stays.
    if any(a is not b for a, b in zip(args, exc.args, strict=True)):
        with contextlib.suppress(Exception):
            exc.args = args
    for name, value in list(getattr(exc, "__dict__", {}).items()):
        if (clean := _redacted_item(value)) is not value:
            with contextlib.suppress(Exception):
                setattr(exc, name, clean)


def _redacted_item(value: Any) -> Any:
    """`value` redacted if it is a string or a list or tuple of them; the same object when
    nothing changed."""
    if isinstance(value, str):
        clean = redact(value)
        return value if clean == value else clean
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        items = [redact(v) for v in value]
        return value if items == list(value) else type(value)(items)
    return value


def redacting(fn: Callable[P, T], env: Mapping[str, str]) -> Callable[P, T]:
    """`fn` run as the CLI runs a command (`redact_process(env)` first), its exceptions
    redacted as they leave it: what wraps a Prefect flow or task, whose failure message
    (`State.message`) and stored result are built from the exception it raises."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        redact_process(env)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            clean = redact_exception(exc)
            if clean is exc:
                raise
        # Raised outside the except block, the stand-in's context is not the original.
        raise clean

    run.redacts = True  # type: ignore[attr-defined]
    return run
