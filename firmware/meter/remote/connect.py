# Connecting the MQTT link: an overlay (see meter/remote/link.py), loaded only to (re)connect.
def connect(link, client, timed, state):
    cfg = link._cfg
    wlan = link._wlan
    if wlan is not None and not wlan.isconnected():
        wlan.active(True)
        wlan.connect(cfg["wifi_ssid"], cfg["wifi_key"])  # returns at once
        if not wlan.isconnected():
            raise OSError("wifi")
    params = {}
    if cfg["mqtt_tls"]:
        with link._fs.open(cfg["mqtt_ca"], "rb") as f:
            params = {"cert_reqs": 2, "cadata": f.read(),  # 2: CERT_REQUIRED
                      "server_hostname": cfg["mqtt_host"]}
    c = client(cfg["meter_id"], cfg["mqtt_host"], cfg["mqtt_port"],
                          cfg["mqtt_user"] or None, cfg["mqtt_password"] or None,
                          cfg["mqtt_keepalive_s"], cfg["mqtt_tls"], params)
    status = link._base + "status"
    c.set_last_will(status, b"offline", True, 1)
    c.set_callback(link._received)
    c.topic = (link._base + "cmd").encode()  # the one topic read (meter/remote/link.py Client)
    c.buf = bytearray(256)  # where anything else is read and discarded
    link.client = c
    c.connect(False)  # a kept session: commands sent while the link was down come on return
    c.sock = timed(c.sock, state[1])  # state[1]: the plain socket umqtt opened
    state[1] = None
    c.subscribe(link._base + "cmd", 1)
    c.publish(status, b"online", True, 1)
