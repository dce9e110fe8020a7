"""HTTP for the SDSS clients: sessions with a time-out, typed errors, retries with backoff.

Every failure becomes a :class:`~ulisse.plugins.sdss.errors.ServiceError` whose
``retryable`` says whether trying again may help (HTTP 5xx, 408, 429, time-outs,
broken connections); :func:`with_retries` retries those with exponential backoff.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

import requests

from .config import SDSSConfig
from .errors import SDSSError, ServiceError

LOG = logging.getLogger(__name__)

T = TypeVar("T")


class TimeoutSession:
    """A session that gives every request a default time-out (pyvo sets none); all else goes to ``session``."""

    def __init__(self, session: requests.Session, timeout: float):
        self._session = session
        self.timeout = timeout

    def request(self, method: str, url: str, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return getattr(self._session, method.lower())(url, **kwargs)

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url, data=None, **kwargs):
        return self.request("POST", url, data=data, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


def new_session() -> requests.Session:
    """A requests session with ulisse's user agent."""
    from ulisse import __version__

    s = requests.Session()
    s.headers["User-Agent"] = f"ulisse/{__version__} (SDSS plugin) python-requests/{requests.__version__}"
    return s


def _transient(status: int | None) -> bool:
    return status is None or status >= 500 or status in (408, 429)


def service_error(exc: BaseException, url: str, what: str, timeout: float | None = None) -> ServiceError:
    """Turn a requests or pyvo exception into a :class:`ServiceError` that says whether a retry may help."""
    from pyvo.dal.exceptions import DALFormatError, DALQueryError, DALServiceError

    if isinstance(exc, DALFormatError) and isinstance(getattr(exc, "cause", None), requests.RequestException):
        exc = exc.cause
    if isinstance(exc, requests.Timeout):
        return ServiceError(f"{what}: no answer within {timeout:g} s from {url}" if timeout else f"{what}: timed out ({url})",
                            url, None, retryable=True)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = exc.response.status_code
        return ServiceError(f"{what}: HTTP {status} {exc.response.reason or ''} from {url}".replace("  ", " "),
                            url, status, retryable=_transient(status))
    if isinstance(exc, requests.RequestException):
        return ServiceError(f"{what}: {exc.__class__.__name__} talking to {url} ({short(exc)})", url, None, retryable=True)
    if isinstance(exc, DALQueryError):
        return ServiceError(f"{what}: the TAP service rejected the query ({short(exc)})", url, None, retryable=False)
    if isinstance(exc, DALServiceError):
        status = exc.code or None
        text = f"HTTP {status}" if status else short(exc)
        return ServiceError(f"{what}: {text} from {url}", url, status, retryable=_transient(status))
    if isinstance(exc, DALFormatError):
        return ServiceError(f"{what}: unreadable answer from {url} ({short(exc)})", url, None, retryable=True)
    return ServiceError(f"{what}: {exc.__class__.__name__}: {short(exc)} ({url})", url, None, retryable=False)


def short(exc: BaseException, n: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def http_get(session, url: str, what: str, timeout: float, params: dict | None = None) -> requests.Response:
    """GET ``url``; every failure becomes a :class:`ServiceError`."""
    try:
        response = session.get(url, params=params, timeout=timeout)
        response.raise_for_status()
        response.content  # read the body now, so that a broken download fails here
    except requests.RequestException as exc:
        raise service_error(exc, url, what, timeout) from None
    return response


def with_retries(fn: Callable[[], T], config: SDSSConfig, what: str = "request",
                 sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[int, SDSSError], None] | None = None) -> T:
    """Call ``fn()``; on a retryable :class:`SDSSError` wait (exponential backoff) and call it again,
    at most ``config.retries`` more times. The last error is raised with ``attempts`` set on it."""
    attempt = 0
    while True:
        try:
            return fn()
        except SDSSError as exc:
            attempt += 1
            exc.attempts = attempt
            if not exc.retryable or attempt > config.retries:
                raise
            delay = config.retry_delay(attempt)
            LOG.debug("%s: %s; retry %d of %d in %.2f s", what, exc, attempt, config.retries, delay)
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(delay)

