"""TLS and the per-meter ACL: mosquitto runs the shipped example configuration and ACL
(host_tools/mosquitto/) with a CA and server certificate made here; the firmware connects
with umqtt.simple's ssl option and its own credentials; the head-end commands it over TLS;
another meter's credentials can neither read its commands nor speak for it."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from host_tools import headend
from simulator import scenario as sc
from simulator.mqttpath import Mosquitto, NetworkError
from tests.test_remote_commands import run_paced

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "host_tools" / "mosquitto"
PASSWORDS = {"headend": "hq-secret", "meter-a": "a-secret", "meter-b": "b-secret"}


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=meter-test-ca", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj",
            "/CN=localhost", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)
    openssl("x509", "-in", "ca.crt", "-outform", "DER", "-out", "ca.der", cwd=d)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("openssl and mosquitto_passwd are needed (apt-get install openssl mosquitto)")
    d = tmp_path_factory.mktemp("tls")
    make_certs(d)
    passwd = d / "passwd"
    for user, password in PASSWORDS.items():
        flags = ["-b", "-c"] if not passwd.exists() else ["-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(passwd), user, password], check=True,
                       capture_output=True)

    def conf(port: int) -> str:
        """The shipped configuration, on a free port with the test's certificates."""
        text = (SHIPPED / "mosquitto.conf").read_text()
        text = text.replace("listener 8883", f"listener {port}")
        for name in ("ca.crt", "server.crt", "server.key"):
            text = text.replace(f"/etc/mosquitto/certs/{name}", str(d / name))
        text = text.replace("/etc/mosquitto/passwd", str(passwd))
        text = text.replace("/etc/mosquitto/acl", str(SHIPPED / "acl"))
        # started as root, mosquitto would drop to its own user, who cannot read the files
        return text + f"user {getpass.getuser()}\n"

    try:
        broker = Mosquitto(conf)
    except NetworkError as exc:
        pytest.fail(str(exc))
    yield {"port": broker.port, "dir": d}
    broker.stop()


def client(broker: dict, user: str | None, password: str | None = None):
    """A connected paho client over TLS; None if the broker refused it."""
    refused = threading.Event()
    ok = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.time_ns()}")
    c.tls_set(ca_certs=str(broker["dir"] / "ca.crt"))
    if user:
        c.username_pw_set(user, password or PASSWORDS[user])

    def on_connect(_c, _u, _f, reason, _p):
        (refused if reason.is_failure else ok).set()

    c.on_connect = on_connect
    c.connect("localhost", broker["port"])
    c.loop_start()
    deadline = time.monotonic() + 5
    while not (ok.is_set() or refused.is_set()) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not ok.is_set():
        c.loop_stop()
        return None
    return c


def test_broker_refuses_plain_anonymous_and_wrong_password(tls_broker):
    assert client(tls_broker, None) is None
    assert client(tls_broker, "meter-a", "wrong") is None
    with socket.create_connection(("127.0.0.1", tls_broker["port"]), timeout=2) as s:
        s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # plain CONNECT
        s.settimeout(2)
        try:
            assert not s.recv(4).startswith(b"\x20")  # no CONNACK without TLS
        except (ConnectionResetError, TimeoutError):
            pass
    c = client(tls_broker, "meter-b")
    assert c is not None
    c.loop_stop()
    c.disconnect()


@pytest.mark.mosquitto
@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_meter_over_tls_with_acl(tls_broker, mpy_build, tmp_path, runtime, capsys):
    port, d = tls_broker["port"], tls_broker["dir"]
    keys = tmp_path / "keys.json"
    key = headend.KeyFile(keys).new_key("meter-a")
    seen: list[tuple[str, bytes]] = []
    hq = client(tls_broker, "headend")
    hq.on_message = lambda _c, _u, m: seen.append((m.topic, m.payload))
    hq.subscribe("meters/meter-a/#", qos=1)
    spy_seen: list[bytes] = []
    spy = client(tls_broker, "meter-b")
    spy.on_message = lambda _c, _u, m: spy_seen.append(m.payload)
    spy.subscribe("meters/+/cmd", qos=1)
    scenario = sc.normalise({
        "duration_s": 10,
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
        "config": {"meter_id": "meter-a", "mqtt_host": "localhost", "mqtt_port": port,
                   "mqtt_tls": True, "mqtt_user": "meter-a",
                   "mqtt_password": PASSWORDS["meter-a"], "telemetry_period_s": 5},
        "command_key": key.hex(),
        "files": {"/ca.der": (d / "ca.der").read_bytes().hex()},
    })
    (tmp_path / "pw").write_text(PASSWORDS["headend"])
    # On the ESP32, mbedTLS allocates from the IDF system heap (~40 KB for a handshake), not
    # from MicroPython's; on the unix port it takes the MicroPython heap, so the TLS run gets
    # that much more on top of the 64 KiB. Without it the meter keeps metering and backs off.
    thread, out = run_paced(scenario, runtime, heapsize="128k")
    try:
        deadline = time.monotonic() + 15
        while ("meters/meter-a/status", b"online") not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("meters/meter-a/status", b"online") in seen, (seen, out)
        args = ["--json", "--broker", f"localhost:{port}", "--keys", str(keys), "--cafile",
                str(d / "ca.crt"), "--user", "headend", "--password-file", str(tmp_path / "pw")]
        assert headend.main(args + ["status", "meter-a"]) == 0
        assert '"code": 0' in capsys.readouterr().out
        # meter-b may neither command meter-a nor speak for it
        spy.publish("meters/meter-a/cmd",
                    headend.encode_command(key, "meter-a", 1000, "status"), qos=1)
        spy.publish("meters/meter-a/ack", b"forged", qos=1)
        spy.publish("meters/meter-a/telemetry", b"forged", qos=1)
        time.sleep(2.5)
    finally:
        thread.join(60)
        for c in (hq, spy):
            c.loop_stop()
            c.disconnect()
    assert "error" not in out, out.get("error")
    assert spy_seen == []  # the head-end's command to meter-a never reached meter-b
    assert all(payload != b"forged" for _t, payload in seen)
    acks = [headend.decode_ack(key, p) for t, p in seen if t.endswith("/ack")]
    assert [a["n"] for a in acks] == [1]  # no ack for the command meter-b tried to send
    assert any(t.endswith("/telemetry") for t, _p in seen)
