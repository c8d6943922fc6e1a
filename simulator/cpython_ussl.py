"""MicroPython's `ussl.wrap_socket` for CPython, over the `usocket` shim's sockets: what
umqtt.simple's ssl option calls. Certificates are DER bytes (`cadata`), as on the meter."""

from __future__ import annotations

import ssl as _ssl
from typing import Any

CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2


def wrap_socket(sock: Any, server_side: bool = False, key: Any = None, cert: Any = None,
                cert_reqs: int = CERT_NONE, cadata: bytes | None = None,
                server_hostname: str | None = None, do_handshake: bool = True) -> Any:
    if server_side or key is not None or cert is not None:
        raise OSError("the meter is a TLS client without a client certificate")
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    if cert_reqs == CERT_NONE:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=cadata)
        ctx.check_hostname = server_hostname is not None
    timeout = sock._sock.gettimeout()
    sock._sock = ctx.wrap_socket(sock._sock, server_hostname=server_hostname,
                                 do_handshake_on_connect=do_handshake)
    sock._sock.settimeout(timeout)
    return sock  # the same shim object (and class), now reading and writing through TLS
