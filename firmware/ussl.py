# umqtt.simple's TLS goes through `ussl`, a name newer MicroPython no longer provides.
from ssl import wrap_socket  # noqa: F401
