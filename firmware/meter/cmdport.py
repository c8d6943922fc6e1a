# A local command port (a UART line protocol): "disconnect" or "reconnect", one per line,
# each answered "<code> <reason>". Loaded the first time something arrives on the port.
_MAX = 128
_line = bytearray()


def service(ctl):
    port = ctl.port
    data = port.read()
    if not data:
        return
    for b in data:
        if b == 10:
            try:
                cmd = bytes(_line).decode().strip().split(" ", 1)[0]
            except UnicodeError:
                cmd = ""
            _line[:] = b""
            code, reason = ctl.remote(cmd)
            port.write(("%d %s\n" % (code, reason)).encode())
        elif len(_line) < _MAX:
            _line.append(b)
