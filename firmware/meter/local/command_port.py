# A local command port (a UART line protocol): "disconnect" or "reconnect", one per line,
# each answered "<code> <reason>". Loaded when something arrives on the port, then unloaded;
# a partial line waits in ctl.line.
_MAX = 128


def service(ctl):
    port = ctl.port
    data = port.read()
    if not data:
        return
    line = ctl.line
    if line is None:
        line = ctl.line = bytearray()
    for b in data:
        if b == 10:
            try:
                cmd = bytes(line).decode().strip().split(" ", 1)[0]
            except UnicodeError:
                cmd = ""
            line[:] = b""
            code, reason = ctl.remote(cmd)
            port.write(("%d %s\n" % (code, reason)).encode())
        elif len(line) < _MAX:
            line.append(b)
