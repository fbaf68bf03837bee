"""Where a GitLab token may follow a redirect (`llmops.redirects`): the one rule both
clients (the init container's fetch, python-gitlab's session) apply."""

from __future__ import annotations

import pytest

from llmops.redirects import redirect_refusal, same_origin

SIGNED = "?X-Amz-Signature=secret-part"


@pytest.mark.parametrize(("first", "target", "why"), [
    ("https://gitlab.example/api", "http://gitlab.example/file", "downgrades https"),
    ("https://gitlab.example/api", "http://s3.example/file", "downgrades https"),
    ("http://127.0.0.1:8/api", "http://localhost:8/file", "plain http to another host"),
    ("http://gitlab.local/api", "http://minio.local:9000/file", "plain http to another host"),
    ("https://gitlab.example/api", "ftp://gitlab.example/file", "only https"),
    ("https://gitlab.example/api", "http://gitlab.example:notaport/file", "not a valid URL"),
])
def test_refused_redirects_say_which_url_why_and_what_to_do(first: str, target: str,
                                                           why: str) -> None:
    refusal = redirect_refusal(first, target + SIGNED)
    assert refusal is not None and why in refusal
    assert first in refusal and target.split("?")[0] in refusal
    assert "proxy_download" in refusal  # the fix, on GitLab's side
    assert "secret-part" not in refusal  # a pre-signed URL's query is a credential


@pytest.mark.parametrize(("first", "target"), [
    ("https://gitlab.example/api", "https://s3.example/file"),  # the pre-signed URL
    ("https://gitlab.example/api", "https://gitlab.example/other"),
    ("http://gitlab.local/api", "https://s3.example/file"),  # an upgrade
    ("http://127.0.0.1:8/api", "http://127.0.0.1:9/file"),  # the emulator's object store
])
def test_https_and_plain_http_on_the_hosts_own_name_are_followed(first: str,
                                                                  target: str) -> None:
    assert redirect_refusal(first, target) is None


@pytest.mark.parametrize(("a", "b", "same"), [
    ("https://gitlab.example/a", "https://GITLAB.example:443/b?x=1", True),
    ("http://127.0.0.1:8/a", "http://127.0.0.1:8/b", True),
    ("http://gitlab.example/a", "https://gitlab.example/a", False),  # the scheme is the origin's
    ("http://127.0.0.1:8/a", "http://127.0.0.1:9/a", False),
    ("https://gitlab.example/a", "https://gitlab.example.evil/a", False),
])
def test_the_token_goes_only_to_the_same_scheme_host_and_port(a: str, b: str,
                                                              same: bool) -> None:
    assert same_origin(a, b) is same
