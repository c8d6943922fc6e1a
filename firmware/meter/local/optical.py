# Local readout over the optical port, after IEC 62056-21 mode C: a request "/?!\r\n" is
# answered with an identification line and a data block of OBIS-coded registers.


def _bcc(data):
    bcc = 0
    for b in data:
        bcc ^= b
    return bcc


class OpticalPort:
    def __init__(self, uart, meter_id):
        self._uart = uart
        self._id = meter_id
        self._rx = b""

    def service(self, meter):
        """Answer a pending readout request; cheap when nothing is waiting."""
        if not self._uart.any():
            return
        data = self._uart.read()
        if data:
            self._rx = (self._rx + data)[-32:]
        if b"/?!" not in self._rx or not self._rx.endswith(b"\r\n"):
            return
        if not meter.durable():  # the supply is going: the registers are not to be shown
            return
        self._rx = b""
        meter.refresh_instant()
        uart = self._uart
        uart.write(b"/SIM5METER\r\n\x02")
        # Line by line, the block check character kept running: no big string on the heap.
        bcc = 0
        for line in (
            "0.0.0(" + self._id + ")\r\n",
            "1.8.0(" + meter.imp.kwh_text() + "*kWh)\r\n",
            "2.8.0(" + meter.exp.kwh_text() + "*kWh)\r\n",
            "32.7.0(" + str(meter.inst[0] / 100) + "*V)\r\n",
            "31.7.0(" + str(meter.inst[1] / 1000) + "*A)\r\n",
            "1.7.0(" + str(meter.inst[2]) + "*W)\r\n",
            meter.readout_extra(),
        ):
            data = line.encode()
            bcc ^= _bcc(data)
            uart.write(data)
        bcc ^= _bcc(b"!\r\n\x03")
        uart.write(b"!\r\n\x03" + bytes((bcc,)))
