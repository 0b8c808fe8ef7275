"""RemoteInferenceClient as a value: it pickles, round-trips through JSON and never shows its secrets;
the retry policy and redaction are pure functions checked here without a server."""

from __future__ import annotations

import base64
import copy
import logging
import pickle

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from foveal.renderers.inference.client import RemoteInferenceClient, split_credentials
from foveal.renderers.inference.errors import InferenceError, error_from_answer
from foveal.renderers.inference.redaction import redact_text
from foveal.renderers.inference.retry import RetryPolicy, backoff_s, is_retryable_status
from foveal.renderers.inference.wire import RETRYABLE_CODES, ErrorBody, ErrorDetail

TOKEN = "tok-5ecret-abc"
PASSWORD = "pa55word"
URL = f"http://alice:{PASSWORD}@127.0.0.1:8123/prefix/"


def make_client() -> RemoteInferenceClient:
    return RemoteInferenceClient(base_urls=(URL, "https://router.example:9000"), api_token=TOKEN)


def test_client_round_trips_through_pickle_and_json() -> None:
    client = make_client()
    for copy_ in (
        pickle.loads(pickle.dumps(client)),
        RemoteInferenceClient.model_validate_json(client.model_dump_json()),
        copy.deepcopy(client),
    ):
        assert copy_ == client
        assert copy_.api_token is not None and copy_.api_token.get_secret_value() == TOKEN
        assert copy_.base_urls == (URL.rstrip("/"), "https://router.example:9000")


def test_repr_and_str_show_no_secret() -> None:
    client = make_client()
    for text in (repr(client), str(client), f"{client}", repr(client.api_token)):
        assert TOKEN not in text and PASSWORD not in text and "alice" not in text
    assert "127.0.0.1:8123" in repr(client)


def test_bad_base_url_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        RemoteInferenceClient(base_urls=(f"ftp://bob:{PASSWORD}@host",), api_token=TOKEN)
    assert "base_urls" in str(caught.value)
    assert PASSWORD not in str(caught.value) and TOKEN not in str(caught.value)


@pytest.mark.parametrize("url", ["http://", "localhost:8000", "http://h/x?token=1", "http://h/#frag", "http://h:99999"])
def test_malformed_base_urls_are_rejected(url: str) -> None:
    with pytest.raises(ValidationError, match="base_urls"):
        RemoteInferenceClient(base_urls=(url,))


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ValidationError, match="retries"):
        RemoteInferenceClient(base_urls=("http://127.0.0.1:1",), retries=3)  # type: ignore[call-arg]


def test_credentials_in_url_become_basic_auth() -> None:
    url, auth = split_credentials(URL.rstrip("/"))
    assert url == "http://127.0.0.1:8123/prefix" and auth is not None
    sent = next(auth.sync_auth_flow(httpx.Request("GET", url)))  # the header httpx puts on the request
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert split_credentials("http://127.0.0.1:1") == ("http://127.0.0.1:1", None)


def test_percent_encoded_url_credentials_are_decoded_as_httpx_would() -> None:
    url, auth = split_credentials("http://al%40ice:p%40ss%3Aword@127.0.0.1:1/v1")
    sent = next(auth.sync_auth_flow(httpx.Request("GET", url)))
    assert url == "http://127.0.0.1:1/v1"
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"al@ice:p@ss:word").decode()


def test_redact_text_hides_tokens_userinfo_and_bearer_values() -> None:
    text = f"GET {URL} failed; header Authorization: Bearer {TOKEN}; token={TOKEN}"
    redacted = redact_text(text, [TOKEN])
    assert TOKEN not in redacted and PASSWORD not in redacted and "alice" not in redacted
    assert "http://***@127.0.0.1:8123/prefix/" in redacted
    assert redact_text("Bearer abc.def-ghi") == "Bearer ***"


SECRET_CHARS = st.characters(codec="utf-8", exclude_characters="*")


@given(st.text(SECRET_CHARS, min_size=1, max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_redacted_text_never_contains_the_secret(secret: str, before: str, after: str) -> None:
    assert secret not in redact_text(f"{before}{secret}{after} {secret}", [secret])


@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0.0, max_value=1.0))
def test_backoff_grows_then_caps_and_stays_non_negative(failed: int, draw: float) -> None:
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=2.0)
    wait = backoff_s(policy, failed, lambda: draw)
    assert 0.0 <= wait <= min(2.0, 0.05 * 2 ** (failed - 1))
    assert backoff_s(policy, failed, lambda: 1.0) == min(2.0, 0.05 * 2 ** (failed - 1))


def test_retry_policy_rejects_cap_below_initial() -> None:
    with pytest.raises(ValidationError, match="max_backoff_s"):
        RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0)


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422, 429, 500, 502])
def test_only_503_is_ever_retryable(status: int) -> None:
    assert not any(is_retryable_status(status, code) for code in [*RETRYABLE_CODES, "internal", "overloaded"])


def test_503_is_retryable_only_with_a_retryable_code() -> None:
    assert is_retryable_status(503, "aborted") and is_retryable_status(503, "unavailable")
    assert not is_retryable_status(503, "overloaded")


def test_error_answers_become_typed_errors() -> None:
    body = ErrorBody(error=ErrorDetail(code="invalid_ref", message="bad ref", field="image_refs.0"))
    error = error_from_answer("http://h/v1/generate", 400, body.model_dump_json().encode())
    assert (error.status, error.code, error.field, error.message) == (400, "invalid_ref", "image_refs.0", "bad ref")
    assert "image_refs.0" in str(error) and "HTTP 400" in str(error)
    plain = error_from_answer("http://h/v1/generate", 503, b"<html>busy</html>")
    assert (plain.status, plain.code) == (503, "unavailable")
    assert isinstance(error.after(3), InferenceError) and error.after(3).attempts == 3


def test_nothing_is_logged_while_building_and_copying(caplog: pytest.LogCaptureFixture) -> None:
    for name in (None, "httpx", "httpcore"):  # named too: an imported library (the tinker SDK) may quiet httpx
        caplog.set_level(logging.DEBUG, logger=name)
    client = make_client()
    logging.getLogger("test").info("client %s %r", client, client)
    pickle.loads(pickle.dumps(client))
    assert TOKEN not in caplog.text and PASSWORD not in caplog.text
