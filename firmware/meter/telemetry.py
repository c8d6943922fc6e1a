# Telemetry over MQTT (umqtt.simple): instantaneous values and energy registers every
# telemetry period. The network never blocks metering for longer than its socket timeout,
# and a failed broker is retried with a growing back-off.
import json

from umqtt.simple import MQTTClient, MQTTException

_BACKOFF_MIN_S = 1
_BACKOFF_MAX_S = 300


class Telemetry:
    def __init__(self, cfg, clock, wlan=None):
        self._cfg = cfg
        self._clock = clock
        self._wlan = wlan
        self._client = None
        self._topic = ("meters/" + cfg["meter_id"] + "/telemetry").encode()
        self._next_s = 0
        self._retry_s = 0
        self._backoff_s = _BACKOFF_MIN_S
        self.seq = 0
        self.published = 0
        self.failures = 0

    def _wifi_ready(self, now):
        """True once the station has an IP; otherwise (re)starts joining and says False."""
        wlan = self._wlan
        if wlan is None or wlan.isconnected():
            return True
        if not wlan.active():
            wlan.active(True)
        wlan.connect(self._cfg["wifi_ssid"], self._cfg["wifi_key"])  # returns at once
        if wlan.isconnected():
            return True
        self._retry_s = now + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)
        return False

    def _connect(self):
        cfg = self._cfg
        client = MQTTClient(
            cfg["meter_id"], cfg["mqtt_host"], cfg["mqtt_port"],
            keepalive=cfg["mqtt_keepalive_s"],
        )
        client.connect()
        sock = client.sock
        sock.settimeout(cfg["mqtt_timeout_s"])
        sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: no 40 ms Nagle wait per packet
        self._client = client

    def _drop(self):
        client = self._client
        self._client = None
        if client is not None:
            try:
                client.sock.close()
            except OSError:
                pass

    def service(self, meter):
        if not self._cfg["mqtt_host"]:
            return
        now = self._clock.now()
        if now < self._next_s or now < self._retry_s:
            return
        if not self._wifi_ready(now):
            return
        try:
            if self._client is None:
                self._connect()
            self._publish(meter, now)
            self._backoff_s = _BACKOFF_MIN_S
            self._next_s = now + self._cfg["telemetry_period_s"]
        except (OSError, IndexError, AssertionError, MQTTException) as exc:
            # umqtt raises IndexError reading a closed socket and AssertionError on a bad
            # reply. Whatever the cause: drop the connection, back off, retry.
            self.failures += 1
            self._drop()
            self._retry_s = now + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, _BACKOFF_MAX_S)
            print("telemetry: broker unreachable:", exc)

    def _publish(self, meter, now):
        self.seq += 1
        meter.refresh_instant()
        inst = meter.inst
        msg = json.dumps({
            "id": self._cfg["meter_id"],
            "seq": self.seq,
            "t": self._clock.unix(),
            "import_kwh": meter.imp.kwh_text(),
            "export_kwh": meter.exp.kwh_text(),
            "v": inst[0] / 100,
            "i": inst[1] / 1000,
            "p": inst[2],
            "pf": inst[3] / 1000,
            "hz": inst[4] / 100,
        })
        self._client.publish(self._topic, msg.encode())
        self.published += 1
