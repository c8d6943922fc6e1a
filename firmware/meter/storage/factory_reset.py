# Factory reset, imported only when called (from the REPL or a remote command).


def factory_reset(fs):
    """Forget readings, profiles and logs; keep calibration (/calib.json) and provisioning
    (/config.json). From the REPL: `import board; from meter.storage.factory_reset import
    factory_reset; factory_reset(board.mount_data())`, then reset; the meter logs
    factory_reset at boot."""
    for path in ("/energy.a", "/energy.b", "/period.a", "/period.b", "/fwd.a", "/fwd.b"):
        try:
            fs.remove(path)
        except OSError:
            pass
    for folder in ("/ev", "/p"):
        try:
            names = [entry[0] for entry in fs.ilistdir(folder)]
        except OSError:
            continue
        for name in names:
            fs.remove(folder + "/" + name)
        fs.rmdir(folder)
    with fs.open("/reset.flag", "wb") as f:
        f.write(b"1")
