"""Where a GitLab token may follow a redirect: the one rule of every client that sends one
(the init container's fetch, python-gitlab's session in the registry).

GitLab with object storage answers a package file GET with a 302 to a pre-signed URL on
another host: the file must still come, but the token must stay behind. A redirect is
followed only to https, or, when the URL first asked for was plain http, to plain http on
that same host (a local GitLab and its object store: nothing new goes in clear text);
the token goes again only to the origin first asked. Standard library only: shipped into
the init container with `llmops.kubernetes.fetch`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
# What GitLab should do instead, said in every refusal.
REMEDY = ("serve GitLab's object storage over https, or turn on its proxy_download so "
          "that GitLab serves the file itself")


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default when none is written)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", parts.port or DEFAULT_PORTS.get(scheme)


def same_origin(a: str, b: str) -> bool:
    """Whether a token sent to `a` may be sent to `b`."""
    return origin(a) == origin(b)


def redirect_refusal(first: str, target: str) -> str | None:
    """Why a redirect from `first` (the URL first asked for) to `target` must not be
    followed, naming both URLs and the remedy; None when it may be."""
    # The query of a pre-signed URL is a credential of its own: never in a message.
    said = f"GET {first.split('?')[0]} was redirected to {target.split('?')[0]}"
    try:
        (first_scheme, first_host, _), (scheme, host, _) = origin(first), origin(target)
    except ValueError:
        return f"{said}, which is not a valid URL; {REMEDY}"
    if scheme == "https":
        return None
    if scheme != "http":
        return f"{said}: only https is followed; {REMEDY}"
    if first_scheme != "http":
        return f"{said}, which downgrades https to plain http; {REMEDY}"
    if host != first_host:
        return f"{said}, plain http to another host; {REMEDY}"
    return None
