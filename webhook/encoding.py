"""Request bodies in a Content-Encoding: identity as it is, gzip and deflate inflated within the
size limit, anything else refused (415).

aiohttp's own decompression is switched off for the webhook (create_app's handler_args), so a
corrupt or unknown encoding is answered here, and a zip bomb stops at `limit` inflated bytes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Literal

from webhook.refusal import Refusal

Encoding = Literal["identity", "gzip", "deflate"]

_NAMES: dict[str, Encoding] = {
    "identity": "identity",
    "gzip": "gzip",
    "x-gzip": "gzip",
    "deflate": "deflate",
}
# Inflated in steps of this many bytes, so memory never runs far past the limit.
_STEP = 64 * 1024


def content_encoding(headers: Iterable[str]) -> Encoding:
    """The one encoding the `Content-Encoding` header values name (none or identity: identity).

    More than one real encoding, or one we do not inflate (br, zstd, compress...), is a 415.
    """
    named = [
        token.strip().lower() for value in headers for token in value.split(",") if token.strip()
    ]
    encodings = [_NAMES.get(name) for name in named if name != "identity"]
    if not encodings:
        return "identity"
    if len(encodings) > 1 or encodings[0] is None:
        raise Refusal(415, "unsupported Content-Encoding (identity, gzip or deflate only)")
    return encodings[0]


def decode_body(raw: bytes, encoding: Encoding, limit: int) -> bytes:
    """The body as it was before it was encoded; over `limit` bytes once inflated is a 413."""
    if encoding == "identity":
        if len(raw) > limit:
            raise Refusal(413, "body too large")
        return raw
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif _has_zlib_header(raw):
        wbits = zlib.MAX_WBITS
    else:  # "deflate" as many clients send it: a raw deflate stream without the zlib header
        wbits = -zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = raw
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, _STEP)
            out += chunk
            if len(out) > limit:
                raise Refusal(413, "body too large once inflated")
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break  # the input ended before the stream did
    except zlib.error:
        raise Refusal(400, f"body is not valid {encoding} data") from None
    if not inflater.eof or inflater.unused_data:
        raise Refusal(400, f"body is not valid {encoding} data")
    return bytes(out)


def _has_zlib_header(raw: bytes) -> bool:
    """RFC 1950: compression method 8, and the first two bytes a multiple of 31."""
    return len(raw) >= 2 and raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
