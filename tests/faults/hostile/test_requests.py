"""Hostile and careless requests against a live gateway and worker on PostgreSQL + Redis.

Each case states its status and stable `error` code, whether a row may be written, and that
the worker and the gateway are still up afterwards; the gateway's log must hold no traceback
when the package's stack stops (see stack.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.faults.hostile.stack import (
    MAX_BODY,
    TALLY,
    A,
    HostileStack,
    b64,
    headers_for,
    photo,
    png_bomb,
    record,
)

pytestmark = pytest.mark.slow

NOT_ALLOWED = {
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n",
    "psd": b"8BPS\x00\x01" + b"\x00" * 40,
    "gif": photo(1, "GIF"),
    "bmp": photo(3, "BMP"),
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    "text": b"just some notes, not a photo",
}


@dataclass
class Case:
    method: str
    path: str
    status: int
    code: str | None
    key: str | None = "app"  # an attribute of Keys, "operator", or None
    rows: int = 0  # rows the request may add
    kwargs: Callable[[HostileStack], dict[str, Any]] = field(default=lambda _s: {})


def body(**fields: Any) -> Callable[[HostileStack], dict[str, Any]]:
    return lambda _s: {"json": {"advisor": "ansel", **fields}}


def raw(content: bytes, ctype: str | None = "application/json") -> Callable[..., dict[str, Any]]:
    headers = {"Content-Type": ctype} if ctype else {}
    return lambda _s: {"content": content, "headers": headers}


def upload(data: bytes, ctype: str, **fields: str) -> Callable[..., dict[str, Any]]:
    return lambda _s: {"files": {"file": ("p.jpg", data, ctype)},
                       "data": {"advisor": "ansel", **fields}}  # fmt: skip


OK = {"image_base64": b64(photo(0))}
CASES: dict[str, Case] = {
    # -- who may call ---------------------------------------------------------------------
    "no key": Case("POST", A, 401, "unauthorized", key=None, kwargs=body(**OK)),
    "unknown key": Case("POST", A, 401, "unauthorized", key="adv_made-up", kwargs=body(**OK)),
    "revoked key": Case("POST", A, 401, "unauthorized", key="revoked", kwargs=body(**OK)),
    "10 KB key": Case("POST", A, 401, "unauthorized", key="x" * 10_000, kwargs=body(**OK)),
    "basic scheme": Case("POST", A, 401, "unauthorized", key=None, kwargs=lambda s: {
        "json": {"advisor": "ansel", **OK}, "headers": {"Authorization": f"Basic {s.keys.app}"}}),
    "latin-1 junk key": Case("POST", A, 401, "unauthorized", key=None, kwargs=lambda _s: {
        "json": {"advisor": "ansel", **OK}, "headers": {"Authorization": b"Bearer \xff\xfe"}}),
    "read-only key submits": Case("POST", A, 403, "forbidden", key="reader", kwargs=body(**OK)),
    "intake key reads report": Case("GET", "/report", 403, "forbidden"),
    "intake key reads metrics": Case("GET", "/metrics", 403, "forbidden"),
    "no key reads dashboard data": Case("GET", "/dashboard/data", 401, "unauthorized", key=None),
    "intake key lists rollouts": Case("GET", "/rollouts", 401, "unauthorized"),
    "intake key forces a variant": Case("POST", A, 403, "variant_forbidden",
                                        kwargs=body(**OK, variant="fine_tuned")),
    "read-only key reads report": Case("GET", "/report", 200, None, key="reader"),
    "intake key submits": Case("POST", A, 202, None, rows=1, kwargs=body(**OK)),
    # -- bodies ---------------------------------------------------------------------------
    "broken JSON": Case("POST", A, 400, "invalid_body", kwargs=raw(b'{"advisor": ')),
    "JSON nested 100,000 deep": Case("POST", A, 400, "invalid_body",
                                     kwargs=raw(b"[" * 100_000 + b"]" * 100_000)),
    "a field nested 500 deep": Case("POST", A, 422, "validation_error", kwargs=raw(
        b'{"image": "ok.jpg", "advisor": ' + b"[" * 500 + b"]" * 500 + b"}")),
    "JSON array body": Case("POST", A, 422, "validation_error", kwargs=raw(b"[1, 2, 3]")),
    "invalid UTF-8": Case("POST", A, 400, "invalid_body", kwargs=raw(b'{"advisor": "\xff\xfe"}')),
    "text/plain": Case("POST", A, 415, "unsupported_media_type",
                       kwargs=raw(b"image=ok.jpg", "text/plain")),
    "no content type": Case("POST", A, 415, "unsupported_media_type", kwargs=raw(b"{}", None)),
    "declared body over the limit": Case("POST", A, 413, "body_too_large",
                                         kwargs=raw(b"x" * (MAX_BODY + 1))),
    "chunked body over the limit": Case("POST", A, 413, "body_too_large", kwargs=lambda _s: {
        "content": iter([b"x" * 65536] * (MAX_BODY // 65536 + 2)),
        "headers": {"Content-Type": "application/json"}}),
    "garbled multipart": Case("POST", A, 400, "invalid_body", kwargs=raw(
        b"--x\r\nContent-Disposition: form-data\r\n\r\n", "multipart/form-data; boundary=x")),
    "two files": Case("POST", A, 400, "invalid_body", kwargs=lambda _s: {
        "files": [("file", ("a.jpg", photo(0), "image/jpeg")),
                  ("file", ("b.jpg", photo(1), "image/jpeg"))], "data": {"advisor": "ansel"}}),
    "a form field sent as a file": Case("POST", A, 400, "invalid_body", kwargs=lambda _s: {
        "files": {"file": ("a.jpg", photo(0), "image/jpeg"), "advisor": ("x", b"ansel")}}),
    "an unknown field": Case("POST", A, 422, "validation_error", kwargs=body(**OK, admin=True)),
    "two images": Case("POST", A, 422, "validation_error", kwargs=body(**OK, image="ok.jpg")),
    "wait over the maximum": Case("POST", A + "?wait=601", 422, "validation_error",
                                  kwargs=body(**OK)),
    "negative wait": Case("POST", A + "?wait=-1", 422, "validation_error", kwargs=body(**OK)),
    "wait NaN": Case("POST", A + "?wait=nan", 422, "validation_error", kwargs=body(**OK)),
    "5,000-character subject": Case("POST", A, 422, "validation_error",
                                    kwargs=body(**OK, subject="s" * 5000)),
    "5,000-character key": Case("POST", A, 422, "validation_error",
                                kwargs=body(**OK, idempotency_key="k" * 5000)),
    "NUL in a multipart field": Case("POST", A, 422, "validation_error",
                                     kwargs=upload(photo(0), "image/jpeg", subject="a\x00b")),
    # -- images ---------------------------------------------------------------------------
    "traversal": Case("POST", A, 400, "invalid_image", kwargs=body(image="../outside.jpg")),
    "absolute path outside": Case("POST", A, 400, "invalid_image",
                                  kwargs=lambda s: body(image=str(s.root / "outside.jpg"))(s)),
    "symlink out of the roots": Case("POST", A, 400, "invalid_image", kwargs=body(image="out.jpg")),
    "symlink loop": Case("POST", A, 400, "invalid_image", kwargs=body(image="loop-a.jpg")),
    "a directory": Case("POST", A, 400, "invalid_image", kwargs=body(image="album")),
    "a missing file": Case("POST", A, 400, "invalid_image", kwargs=body(image="nope.jpg")),
    "/etc/passwd": Case("POST", A, 400, "invalid_image", kwargs=body(image="/etc/passwd")),
    "/proc/self/environ": Case("POST", A, 400, "invalid_image",
                               kwargs=body(image="/proc/self/environ")),
    "a decompression bomb": Case("POST", A, 400, "invalid_image",
                                 kwargs=body(image_base64=b64(png_bomb()))),
    "a truncated JPEG": Case("POST", A, 400, "invalid_image",
                             kwargs=body(image_base64=b64(photo(0)[:300]))),
    "EPS behind a JPEG signature": Case("POST", A, 400, "invalid_image",
                                        kwargs=body(image_base64=b64(b"\xff\xd8\xff"
                                                                     + NOT_ALLOWED["eps"]))),
    "empty base64": Case("POST", A, 400, "invalid_image", kwargs=body(image_base64="")),
    "bad base64": Case("POST", A, 400, "invalid_base64", kwargs=body(image_base64="not*b64")),
    "non-ASCII base64": Case("POST", A, 400, "invalid_base64",
                             kwargs=body(image_base64="QUJD\u00e9")),
    "base64 over the image limit": Case("POST", A, 413, "body_too_large",
                                        kwargs=body(image_base64="A" * 990_000)),
    "an upload that is text": Case("POST", A, 415, "unsupported_media_type",
                                   kwargs=upload(b"hello", "text/plain")),
    "an EPS uploaded as image/jpeg": Case("POST", A, 415, "unsupported_format",
                                          kwargs=upload(NOT_ALLOWED["eps"], "image/jpeg")),
    "a data: URL": Case("POST", A, 202, None, rows=1, kwargs=body(
        image_base64="data:image/jpeg;base64," + b64(photo(9)))),
    **{f"{name.upper()} inline": Case("POST", A, 415, "unsupported_format",
                                      kwargs=body(image_base64=b64(data)))
       for name, data in NOT_ALLOWED.items()},
    # -- job ids --------------------------------------------------------------------------
    "a job id that is no UUID": Case("GET", "/jobs/not-a-uuid", 404, "job_not_found"),
    "a 5,000-character job id": Case("GET", "/jobs/" + "x" * 5000, 404, "job_not_found"),
    "a NUL job id": Case("GET", "/jobs/%00", 404, "job_not_found"),
    "an unknown job": Case("GET", f"/jobs/{uuid.uuid4()}", 404, "job_not_found"),
    "events of an unknown job": Case("GET", f"/jobs/{uuid.uuid4()}/events", 404, "job_not_found"),
    "an encoded traversal job id": Case("GET", "/jobs/..%2F..%2Fetc", 404, "not_found"),
    # -- rollouts -------------------------------------------------------------------------
    "rollout change with an intake key": Case("PUT", "/rollouts/ansel", 401, "unauthorized",
                                              kwargs=lambda _s: {"json": {"weights": {"base": 1},
                                                                          "reason": "x"}}),
    "NaN weights": Case("PUT", "/rollouts/ansel", 422, "invalid_weights", key="operator",
                        kwargs=raw(b'{"weights": {"base": NaN}, "reason": "x"}')),
    "a rollout body nested 100,000 deep": Case("PUT", "/rollouts/ansel", 400, "bad_request",
                                               key="operator",
                                               kwargs=raw(b"[" * 100_000 + b"]" * 100_000)),
    "NUL in a rollout reason": Case("PUT", "/rollouts/ansel", 422, "validation_error",
                                    key="operator", kwargs=lambda _s: {
                                        "json": {"weights": {"base": 1}, "reason": "a\x00b"}}),
}  # fmt: skip
# NUL bytes and lone surrogates in every string field of POST /analyze.
for _name in ("advisor", "subject", "idempotency_key", "image", "variant"):
    for _label, _text in (("NUL", "a\\u0000b"), ("a lone surrogate", "a\\ud800b")):
        _fields = {"advisor": "ansel", "image": "ok.jpg", _name: "__X__"}
        _raw = json.dumps(_fields).replace("__X__", _text).encode()
        CASES[f"{_label} in {_name}"] = Case(
            "POST", A, 422, "validation_error", key="operator" if _name == "variant" else "app",
            kwargs=raw(_raw),
        )  # fmt: skip

# Every control class in every free-text field, on PostgreSQL (NUL was a 500 in a comment).
_CONTROLS = {"NUL": "\\u0000", "ESC": "\\u001b", "DEL": "\\u007f", "C1": "\\u0085"}
_NOBODY = "/jobs/00000000-0000-0000-0000-000000000000"
_TEXT_FIELDS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    # name: (method, path, key, body with the field set to "__X__")
    "feedback comment": ("POST", f"{_NOBODY}/feedback", "app", {"rating": 4, "comment": "__X__"}),
    "feedback source": ("POST", f"{_NOBODY}/feedback", "app", {"rating": 4, "source": "__X__"}),
    "notify task": ("POST", A, "app", {"advisor": "ansel", "image": "ok.jpg", "notify": "__X__",
                                      "notify_queue": "q"}),
    "notify queue": ("POST", A, "app", {"advisor": "ansel", "image": "ok.jpg", "notify": "t",
                                       "notify_queue": "__X__"}),
    "callback url": ("POST", A, "app", {"advisor": "ansel", "image": "ok.jpg",
                                       "callback_url": "https://a.example/__X__"}),
    "rollout actor": ("PUT", "/rollouts/ansel", "operator",
                      {"weights": {"base": 1}, "reason": "r", "actor": "__X__"}),
    "rollout variant name": ("PUT", "/rollouts/ansel", "operator",
                             {"weights": {"__X__": 1}, "reason": "r"}),
    "rollback reason": ("POST", "/rollouts/ansel/rollback", "operator", {"reason": "__X__"}),
    "plan reason": ("POST", "/rollouts/ansel/plan/pause", "operator", {"reason": "__X__"}),
    "plan variant": ("POST", "/rollouts/ansel/plan", "operator",
                     {"variant": "__X__", "reason": "r"}),
    "advisor in a path": ("POST", "/rollouts/a__X__b/rollback", "operator", {"reason": "r"}),
}  # fmt: skip
for _field, (_method, _path, _key, _body) in _TEXT_FIELDS.items():
    for _label, _escape in _CONTROLS.items():
        _raw = json.dumps(_body).replace("__X__", f"a{_escape}b").encode()
        CASES[f"{_label} in the {_field}"] = Case(
            _method, _path.replace("__X__", quote(chr(int(_escape[2:], 16)))), 422,
            "validation_error", key=_key, kwargs=raw(_raw),
        )  # fmt: skip

# Client-chosen queue names that would reach the broker's or the database's own objects.
for _queue in (
    "unacked",
    "unacked_index",
    "unacked_mutex",
    "_kombu.binding.celery",
    "_kombu.binding.advisor.base",
    "celery",
    "celery.pidbox",
    "advisor.base",
    "advisor.notify._kombu",
    "jobs",
    "pg_catalog.pg_class",
    "alembic_version",
):
    CASES[f"notify_queue {_queue}"] = Case(
        "POST", A, 422, "invalid_submission",
        kwargs=body(**OK, notify="app.done", notify_queue=_queue),
    )  # fmt: skip
CASES["notify task _kombu.binding.x"] = Case(
    "POST",
    A,
    422,
    "invalid_submission",
    kwargs=body(**OK, notify="_kombu.binding.x", notify_queue="advisor.notify.app"),
)


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_request_gets_its_status_and_code_and_writes_nothing_it_should_not(
    files: HostileStack, name: str
) -> None:
    case = CASES[name]
    kwargs = case.kwargs(files)
    headers = {**headers_for(files, case.key), **kwargs.pop("headers", {})}
    before = files.rows()
    with httpx.Client(base_url=files.url, timeout=60) as client:
        response = client.request(case.method, case.path, headers=headers, **kwargs)
    record(name, False)
    assert response.status_code == case.status, response.text[:500]
    if case.code is not None:
        assert response.json()["error"] == case.code, response.text[:500]
        assert "Traceback" not in response.text and "psycopg" not in response.text
    assert files.rows() - before == case.rows
    files.assert_alive()
    record(name, True)


def test_the_tally_of_hostile_cases(files: HostileStack) -> None:
    # Each case passes or fails on its own; in a parallel run the cases of this module may not
    # all have run in this process yet, so the catalogue's size is checked, not the tally's.
    tried, handled = len(TALLY), sum(TALLY.values())
    print(f"hostile cases: catalogue={len(CASES)} run here={tried} handled={handled}")
    assert len(CASES) >= 60
    assert handled == tried, [n for n, ok in TALLY.items() if not ok]
