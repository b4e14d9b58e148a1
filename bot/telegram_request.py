"""PTB's transport to the Bot API on aiohttp's client, in place of `HTTPXRequest` (httpx).

Under load (make bench, "many"), httpx's client took about 3 ms of the bot's CPU per task (an
acknowledgement, a text, a share of getUpdates); aiohttp's, already here for the web server,
takes about 1 ms, and CPU per task fell by about 2.5 ms (of 20-25 ms). This
is a `telegram.request.BaseRequest`: it only sends the request and returns the status and
body, and PTB's `BaseRequest.post` turns those into results or exceptions (BadRequest,
RetryAfter, Forbidden, ...), as it does for HTTPXRequest.

What it keeps of HTTPXRequest's behaviour:

- The parameters as an urlencoded form (httpx's ``data=``), or, with files (sendDocument),
  as multipart/form-data: the form fields first, then each file with its filename and content
  type. Filenames go as UTF-8, unquoted, as httpx sends them.
- Timeouts given as `BaseRequest.DEFAULT_NONE` are the instance's; a file upload's default
  write timeout is `media_write_timeout`.
- A timeout raises `telegram.error.TimedOut` (the delivery loop reads it as "perhaps sent"),
  a wait for a free connection past `pool_timeout` too (the request was not sent); any other
  failure raises `telegram.error.NetworkError` with the aiohttp error's name and message.
  aiohttp's exceptions never escape. The request's URL (which holds the bot token) is never
  in a message.
- No redirects followed, no cookies kept, certificates checked against certifi's bundle (or
  SSL_CERT_FILE / SSL_CERT_DIR), and a proxy named in the environment (HTTPS_PROXY,
  HTTP_PROXY, NO_PROXY) used, like httpx. Unlike httpx, aiohttp reads no ALL_PROXY and takes
  only an http:// proxy (an https:// one is ignored, with a warning).

Timeouts, mapped onto aiohttp's:

- pool: a semaphore of `connection_pool_size` (the connector's limit too);
- connect: aiohttp's ``connect`` (DNS, TCP and TLS, and a wait in the connector, which the
  semaphore keeps from happening);
- read: aiohttp's ``sock_read``, the longest wait for the next bytes of the reply, which starts
  once the request is sent (httpx's read timeout is also per read);
- write: aiohttp has no timeout per write. A request whose upload stalls would wait for ever,
  so the whole request (connection, upload and reply) is bounded by connect + write + read
  (when all three are set); a stalled upload then ends in TimedOut.
"""

from __future__ import annotations

import asyncio
import io
import os
import ssl
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import aiohttp
import certifi
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData
from yarl import URL

FORM_URLENCODED = "application/x-www-form-urlencoded"
POOL_TIMEOUT_MESSAGE = (
    "Pool timeout: All connections in the connection pool are occupied. Request was *not* sent "
    "to Telegram. Consider adjusting the connection pool size or the pool timeout."
)


class AiohttpRequest(BaseRequest):
    """A `BaseRequest` on one `aiohttp.ClientSession`, opened by `initialize` and closed by
    `shutdown` (and opened again by another `initialize`). Defaults as HTTPXRequest's."""

    __slots__ = (
        "_connect_timeout",
        "_media_write_timeout",
        "_pool",
        "_pool_size",
        "_pool_timeout",
        "_read_timeout",
        "_session",
        "_write_timeout",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool: asyncio.Semaphore | None = None

    @property
    def read_timeout(self) -> float | None:
        """The read timeout used when a call gives none."""
        return self._read_timeout

    @property
    def is_open(self) -> bool:
        return self._session is not None and not self._session.closed

    async def initialize(self) -> None:
        if self.is_open:
            return
        # In the running loop: aiohttp's session and connector belong to it.
        self._pool = asyncio.Semaphore(self._pool_size)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=_ssl_context()),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": self.USER_AGENT},
            raise_for_status=False,
            # As httpx did: HTTPS_PROXY / HTTP_PROXY and NO_PROXY from the environment
            # (where Telegram is blocked, the way out is often a proxy); not ALL_PROXY.
            trust_env=True,
        )

    async def shutdown(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session, pool = self._session, self._pool
        if session is None or session.closed or pool is None:
            raise RuntimeError("This AiohttpRequest is not initialized!")

        # contains_files is a flag; multipart_data is worked out on each call.
        files = (
            request_data.multipart_data
            if request_data is not None and request_data.contains_files
            else None
        )
        if isinstance(read_timeout, DefaultValue):
            read_timeout = self._read_timeout
        if isinstance(connect_timeout, DefaultValue):
            connect_timeout = self._connect_timeout
        if isinstance(pool_timeout, DefaultValue):
            pool_timeout = self._pool_timeout
        if isinstance(write_timeout, DefaultValue):
            write_timeout = self._media_write_timeout if files else self._write_timeout

        body = _body(request_data, files) if request_data is not None else None
        if pool.locked():
            try:
                async with asyncio.timeout(pool_timeout):
                    await pool.acquire()
            except TimeoutError as exc:
                raise TimedOut(POOL_TIMEOUT_MESSAGE) from exc
        else:
            await pool.acquire()  # free: returns without waiting
        try:
            async with session.request(
                method,
                url,
                data=body,
                timeout=_timeout(connect_timeout, write_timeout, read_timeout),
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's ServerTimeoutError and its kinds too
            raise TimedOut from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {_without_url(exc, url)}") from exc
        finally:
            pool.release()


def _body(request_data: RequestData, files: dict[str, Any] | None) -> Any:
    """What httpx sends for ``data=json_parameters, files=multipart_data``: an urlencoded form,
    or with files a multipart form (fields first, then the files); nothing when empty."""
    fields = request_data.json_parameters  # each value JSON-encoded on each call: once here
    if not files:
        if not fields:
            return None
        return aiohttp.BytesPayload(urlencode(fields).encode(), content_type=FORM_URLENCODED)
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, content_type) in files.items():
        if isinstance(content, bytes):  # written in chunks, as aiohttp asks of large bodies
            content = io.BytesIO(content)
        form.add_field(name, content, filename=filename, content_type=content_type)
    return form


@lru_cache(maxsize=64)
def _timeout(
    connect: float | None, write: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    total = None if connect is None or write is None or read is None else connect + write + read
    return aiohttp.ClientTimeout(total=total, connect=connect, sock_read=read)


def _ssl_context() -> ssl.SSLContext:
    """As httpx verifies (trust_env): SSL_CERT_FILE, else SSL_CERT_DIR, else certifi."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    return ssl.create_default_context(cafile=certifi.where())


def _without_url(exc: BaseException, url: str) -> str:
    """The error's message with the URL's path (the bot token is in it) left out."""
    message = str(exc)
    secrets = {url}
    try:
        parsed = URL(url)
        secrets |= {str(parsed), parsed.raw_path, parsed.path}
    except ValueError:
        pass
    for secret in sorted(secrets - {"", "/"}, key=len, reverse=True):
        message = message.replace(secret, "<url>")
    return message
