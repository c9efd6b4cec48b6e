"""One shared HTTP client for every destination: keep-alive, rate limit, retries.

Answers are sorted into two kinds, as in SPEC 4:

- transient (429, 5xx, connection errors, timeouts) are retried with exponential
  backoff and jitter, waiting at least what ``Retry-After`` or ``X-RateLimit-Reset``
  asks for; when the attempts run out they raise :class:`TransientError`;
- terminal (any other 4xx) raise :class:`TerminalError` at once: the caller fails that
  batch or record, logs it, and goes on.

Redirects are never followed: a 3xx is terminal. Following one would resend a write
as a GET without its body (requests' behaviour for 301-303), so nothing would have
been delivered though the answer was a success.

Error messages carry the method, the URL's scheme and host (and the caller's path
template, when it gives one) and the status, never a URL path, a body or a header:
webhook paths often hold tokens, so neither secrets nor PII reach a log.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import tenacity
from requests.adapters import HTTPAdapter

from sync.errors import AuthError, SinkError, TerminalError, TransientError

TRANSIENT_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
AUTH_STATUSES = frozenset({401, 403})
DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, read (seconds)


@dataclass
class Clock:
    """Time as the client sees it; tests pass fakes so nothing really sleeps.

    ``monotonic`` paces the rate limiter; ``wall`` (unix seconds) reads
    ``X-RateLimit-Reset``.
    """

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


class RateLimiter:
    """A token bucket: at most ``rate`` requests per second, bursts up to ``burst``.

    Thread-safe; ``rate=None`` means no limit.

    Examples:
        >>> now = [0.0]
        >>> slept = []
        >>> clock = Clock(monotonic=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
        >>> limiter = RateLimiter(rate=2.0, burst=2, clock=clock)
        >>> for _ in range(4):
        ...     limiter.acquire()
        >>> slept
        [0.5, 0.5]
    """

    def __init__(self, rate: float | None, burst: int = 1, clock: Clock | None = None):
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock or Clock()
        self._tokens = float(self.burst)
        self._updated = self.clock.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self.rate is None:
            return
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.clock.sleep(wait)


def retry_after_seconds(headers: requests.structures.CaseInsensitiveDict[str] | dict[str, str], now: float) -> float | None:
    """How long the server asked us to wait, from ``Retry-After`` (seconds or an
    HTTP date) or ``X-RateLimit-Reset`` (unix seconds), or None.

    Examples:
        >>> retry_after_seconds({"Retry-After": "7"}, now=0)
        7.0
        >>> retry_after_seconds({"Retry-After": "Thu, 01 Jan 1970 00:00:30 GMT"}, now=10)
        20.0
        >>> retry_after_seconds({"X-RateLimit-Reset": "1000"}, now=990.5)
        9.5
        >>> retry_after_seconds({"X-RateLimit-Reset": "900"}, now=990) is None
        True
        >>> retry_after_seconds({"Retry-After": "soon"}, now=0) is None
        True
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    value = lowered.get("retry-after")
    if value is not None:
        value = value.strip()
        if value.replace(".", "", 1).isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return max(0.0, when.timestamp() - now)
    reset = lowered.get("x-ratelimit-reset")
    if reset is not None:
        try:
            wait = float(reset) - now
        except ValueError:
            return None
        return wait if wait > 0 else None
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts in all, and the backoff between them (seconds)."""

    attempts: int = 8
    initial_wait: float = 1.0
    max_wait: float = 120.0
    jitter: float = 1.0


class _ServerAskedWait(tenacity.wait.wait_base):
    """Backoff with jitter, but never less than the server asked for (capped)."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.backoff = tenacity.wait_exponential_jitter(
            multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.jitter
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.backoff(retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, SinkError) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.policy.max_wait))
        return wait


def origin(url: str) -> str:
    """The URL's scheme, host and port only: the one part of a URL that is printed,
    logged or stored (paths and queries may carry tokens, user info passwords).

    Examples:
        >>> origin("https://user:pw@example.com:8443/hooks/T0KEN?sig=x")
        'https://example.com:8443'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port: still never echo the text
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _where(url: str, path: str | None = None) -> str:
    """What an error message names: the URL's :func:`origin`, plus ``path`` when the
    caller gives a template of its own (never the URL's path).

    Examples:
        >>> _where("https://user:pw@example.com:8443/a/b?token=x")
        'https://example.com:8443'
        >>> _where("https://example.com/t/contacts/919812345678", "/{tenant}/contacts/{phone}")
        'https://example.com/{tenant}/contacts/{phone}'
    """
    return origin(url) + (path or "")


@dataclass
class HttpClient:
    """A retrying, rate-limited client over one keep-alive ``requests.Session``.

    One client serves one destination (its own rate limit); clients may share a session.
    """

    session: requests.Session
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None))
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    clock: Clock = field(default_factory=Clock)
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    on_retry: Callable[[SinkError, float], None] | None = None

    def request(self, method: str, url: str, *, where: str | None = None, **kwargs: object) -> requests.Response:
        """Send until a 2xx answer (returned), a terminal error, or no attempts left.

        ``where`` names the request in error messages instead of the URL's path, for
        paths that carry PII (a phone number): say ``/api/v1/contacts/{phone}``.

        Raises:
            AuthError: 401 or 403.
            TerminalError: a 3xx (redirects are not followed) or any other 4xx answer
                but 408, 425 and 429.
            TransientError: the last attempt was throttled, failed on the server, or got no answer.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            wait=_ServerAskedWait(self.policy),
            stop=tenacity.stop_after_attempt(self.policy.attempts),
            sleep=self.clock.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(self._once, method, url, where, kwargs)

    def _before_sleep(self, retry_state: tenacity.RetryCallState) -> None:
        if self.on_retry is not None and retry_state.outcome is not None and retry_state.next_action is not None:
            error = retry_state.outcome.exception()
            if isinstance(error, SinkError):
                self.on_retry(error, retry_state.next_action.sleep)

    def _once(self, method: str, url: str, where: str | None, kwargs: dict[str, object]) -> requests.Response:
        self.limiter.acquire()
        where = f"{method} {_where(url, where)}"
        if callable(kwargs.get("headers")):  # made per attempt: fresh timestamps and signatures
            kwargs = {**kwargs, "headers": kwargs["headers"]()}  # type: ignore[operator]
        try:
            response = self.session.request(
                method, url, timeout=self.timeout, allow_redirects=False, **kwargs,  # type: ignore[arg-type]
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise TransientError(f"{where}: no answer ({type(error).__name__})") from None
        if response.is_redirect or 300 <= response.status_code < 400:
            response.close()
            raise TerminalError(
                f"{where} answered {response.status_code} {response.reason or ''}".rstrip()
                + ": a redirect, not followed (point the destination at the final URL)",
                response.status_code,
            )
        if response.ok:
            return response
        wait = retry_after_seconds(response.headers, self.clock.wall())
        message = f"{where} answered {response.status_code} {response.reason or ''}".rstrip()
        response.close()
        if response.status_code in TRANSIENT_STATUSES:
            raise TransientError(message, response.status_code, wait)
        if response.status_code in AUTH_STATUSES:
            raise AuthError(message, response.status_code)
        raise TerminalError(message, response.status_code)


def new_session(pool_size: int = 8, user_agent: str = "segments-sync") -> requests.Session:
    """A keep-alive session whose pool fits ``pool_size`` concurrent requests.

    Retries are :class:`HttpClient`'s job, so urllib3's own are off.
    """
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    return session
