"""Power cut at every flash program and erase of one run, checked from a single run.

Running a day again for each of its ~20,000 flash operations would take hours. Instead the
run goes once, and just before each program or erase the flash image is looked at as a cut
right there would leave it: a program torn after its first half (as FlashChip does for
`power_cut_at_write`), an erase not done. The image is the whole data flash: LittleFS's
partition and the last-gasp journal's (a torn record there must be skipped). It is mounted
read-only-in-effect (writes land in a RAM overlay) with the firmware's own boot-time
readers, and checked:

- LittleFS mounts;
- the energy registers the meter would restore are never above the true energy and never
  below it by more than the checkpoint bound (plus what earlier real outages lost);
- every block-profile record present is exactly the record the uncut run wrote with that
  number (none half-written or altered), and their times strictly increase (none duplicated
  or reordered);
- the event logs read back without error;
- with a CommandFeed of signed remote commands: the relay, the control record and the
  command counter are as last commanded, the control log has one transition event per state
  change, and /cmd.ctr names the command it counts and whether it completed (see
  ControlChecks below).

A sample of cut points is also booted for real (`reboot_from`) to show the firmware runs on.
"""

from __future__ import annotations

import sys
from typing import Any

from simulator import paths
from simulator.device.shim import Partition
from simulator.images import measure_loss

BLOCK = 4096
JOURNAL_FIRST = Partition.TABLE["lastgasp"][0]  # the last-gasp journal's first chip block


class OverlayFlash:
    """The image as a cut would leave it: reads from the live image file, the torn program
    patched in, and any writes (mkdir at mount) kept in RAM."""

    def __init__(self, fh: Any, blocks: int, torn: tuple | None) -> None:
        self.fh = fh
        self.blocks = blocks
        self.torn = torn
        self.dirty: dict[int, bytearray] = {}

    def _block(self, block: int) -> bytearray:
        data = self.dirty.get(block)
        if data is None:
            self.fh.seek(block * BLOCK)
            data = bytearray(self.fh.read(BLOCK))
            if self.torn is not None and self.torn[0] == block:
                _b, off, part = self.torn
                data[off:off + len(part)] = part
            self.dirty[block] = data
        return data

    def readblocks(self, block: int, buf: Any, offset: int = 0) -> None:
        data = self._block(block)
        buf[:] = data[offset:offset + len(buf)]

    def writeblocks(self, block: int, buf: Any, offset: int = 0) -> None:
        data = self._block(block)
        data[offset:offset + len(buf)] = buf

    def ioctl(self, op: int, arg: Any) -> int:
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:
            self._block(arg)[:] = b"\xff" * BLOCK
        return 0


def read_state(bdev: Any) -> dict:
    """What the firmware finds at boot on this image of the whole data flash (its own
    readers): LittleFS on the data partition, a newer last-gasp record in the journal."""
    from meter.metering.energy import Register
    from meter.storage import checkpoint as store
    from meter.storage import events
    from meter.storage import profiles as profile
    from meter.storage import reader as maint

    from simulator import lfs_vfs

    # OSError if it does not mount
    fs = lfs_vfs.VfsLfs2(Partition(bdev, "meterdata"), cache_size=BLOCK)
    imp, exp = Register(1000), Register(1000)
    energy = store.EnergyStore(fs, Partition(bdev, "lastgasp"))
    from meter.storage.restore import load_energy

    load_energy(energy, imp, exp)
    block = profile.block(fs, energy.period.head)
    records = []
    for n, rec in maint.read(block):
        records.append((n, rec))
    events.EventLog(fs)  # what boot does: find each log's head
    seqs = [r[0] for r in maint.all_events(fs)]
    return {"wh": imp.wh_float() + exp.wh_float(), "profile": records, "event_seqs": seqs}


class Sweep:
    def __init__(self, bound_wh: float, from_ms: int = 0) -> None:
        self.bound_wh = bound_wh
        self.from_ms = from_ms  # cut points before this virtual time are not checked
        self.world: Any = None
        self.cuts = 0
        self.programs = 0
        self.erases = 0
        self.journal_programs = 0  # of which on the last-gasp journal partition
        self.journal_erases = 0
        self.failures: list[str] = []
        self.snapshots: list[tuple] = []  # (op index, truth Wh, state)
        self.control: Any = None  # ControlChecks when the run carries remote commands

    def on_op(self, kind: str, block: int, offset: int, data: Any) -> None:
        world = self.world
        if world.now_ms < self.from_ms:
            return
        chip = world.flash
        chip.fh.flush()
        torn = None
        journal = block >= JOURNAL_FIRST
        if kind == "P":
            self.programs += 1
            self.journal_programs += journal
            torn = (block, offset, bytes(data[:len(data) // 2]))
        else:
            self.erases += 1
            self.journal_erases += journal
        self.cuts += 1
        truth = world.true_import_wh + world.true_export_wh
        try:
            state = read_state(OverlayFlash(chip.fh, chip.block_count, torn))
        except Exception as exc:  # noqa: BLE001 - any failure to boot is the finding
            self.failures.append(f"cut {self.cuts} ({kind} block {block}): {exc!r}")
            return
        deficit = truth - state["wh"]
        before = getattr(world, "deficit_wh", 0.0)
        if deficit < -0.001:
            self.failures.append(f"cut {self.cuts}: restores {-deficit:.3f} Wh above the truth")
        if deficit - before > self.bound_wh:
            self.failures.append(f"cut {self.cuts}: loses {deficit - before:.3f} Wh")
        times = [rec[0] for _n, rec in state["profile"]]
        if any(b <= a for a, b in zip(times, times[1:], strict=False)):
            self.failures.append(f"cut {self.cuts}: profile times not increasing {times}")
        if len(set(state["event_seqs"])) != len(state["event_seqs"]):
            self.failures.append(f"cut {self.cuts}: duplicated event sequence numbers")
        self.snapshots.append((self.cuts, truth, state["profile"]))
        if self.control is not None:
            self.control.check(self.cuts, chip, torn)


def run(scenario: dict, flash_path: str, bound_wh: float,
        feed: Any = None, from_ms: int = 0) -> tuple[Sweep, dict, list]:
    """Run the scenario once on CPython with a sweep hooked to every flash operation from
    virtual time from_ms on (feed: a CommandFeed of signed remote commands, checked at every
    cut point too)."""
    paths.ensure_paths()
    from simulator.device import runner

    sweep = Sweep(bound_wh, from_ms)
    provision = runner.provision

    def provision_then_sweep(world: Any, config: dict, *more: Any) -> None:
        provision(world, config, *more)  # formatting and provisioning are not the meter's
        sweep.world = world
        world.flash.on_op = sweep.on_op
        if feed is not None:
            feed.attach(world)
            sweep.control = ControlChecks(feed)

    runner.provision = provision_then_sweep
    try:
        raw = runner.run(scenario, flash_path, None, measure_loss)
    finally:
        runner.provision = provision
    # The uncut run's profile: every record any cut left behind must be one of these.
    from simulator.device.flash import FlashChip

    chip = FlashChip(flash_path, 64)
    try:
        final = read_state(OverlayFlash(chip.fh, 64, None))["profile"]
    finally:
        chip.close()
    reference = dict(final)
    for cut, _truth, records in sweep.snapshots:
        for n, rec in records:
            if reference.get(n) != rec:
                sweep.failures.append(f"cut {cut}: profile record {n} is {rec}, "
                                      f"the run wrote {reference.get(n)}")
    sweep.snapshots = [s for s in sweep.snapshots[:: max(1, len(sweep.snapshots) // 64)]]
    if feed is not None:
        sweep.failures += feed.failures + sweep.control.failures
    _forget_meter()
    return sweep, raw, final


def _forget_meter() -> None:
    for name in list(sys.modules):
        if name == "meter" or name.startswith("meter."):
            del sys.modules[name]


# --- Supply control and remote commands at every cut point ----------------------------------
#
# "Last commanded", at a cut point: the state and counter committed by the last persist that
# had completed before the cut. A remote command is handled in this order
# (meter/remote/commands.py, meter/supply/transitions.py): its counter goes to /cmd.ctr, then the
# control writes the new state (the intent, before the relay moves), then the ack goes out. So:
#
# - between commands, the image must hold exactly the state and mode of the last ack (the
#   head-end's view), and a counter >= the last counter acked;
# - while one is being handled, a cut may come before or after each of those writes: the
#   image must hold the previous commanded state or the new one (nothing else), and once the
#   new one has been seen on flash no later cut may show the old one again. A command whose
#   state write had not completed counts as not commanded;
# - the counter on flash is never below a counter the meter has acted on (persisted before
#   acting: checked the moment the control is called) or acknowledged, and never lower than
#   at any earlier cut point (it never goes backwards);
# - every state change on flash has exactly one transition event, logged or to be logged by
#   boot (the intent record carries it, meter/supply/startup.py missing()), the last one naming the
#   persisted state;
# - /cmd.ctr with the in-flight counter carries that message's digest, and "done" only once
#   the handler has returned; between commands it holds the last answered command, done,
#   with the code of its ack.


def transitions(fs: Any, rec: Any = None) -> list:
    """The supply-control transition events (CONTROL + cause * 3 + state) on this image in
    order, with the one boot would log for a transition cut short (meter/supply/startup.py)."""
    from meter.storage import events
    from meter.storage import reader as maint
    from meter.supply import startup as ctlboot

    codes = [c for _s, _t, c in sorted(maint.all_events(fs))
             if events.CONTROL <= c < events.RELAY_FAULT]
    lost = ctlboot.missing(fs, ctlboot.load(fs) if rec is None else rec)
    return codes + [lost] if lost else codes


def read_control_state(fs: Any, default_mode: int = 1) -> dict:
    """What boot restores of supply control and the command counter on this image, read with
    the firmware's own readers: meter/supply/startup.py's slot reader (no record: Connected, the
    configured mode), meter/remote/commands.py's counter reader (None: unreadable) and the last
    accepted command's record (digest, done, ack code), and the transition events."""
    from meter.remote.commands import Commands
    from meter.supply import startup as ctlboot

    rec = ctlboot.load(fs)
    state, mode = (rec[1], rec[2]) if rec else (1, default_mode)
    cmds = Commands(fs, "", None, None, None, b"-")  # a key given: /cmd.key unread
    return {"state": state, "mode": mode, "counter": cmds.last,
            "outcome": getattr(cmds, "rec", None), "transitions": transitions(fs, rec)}


class _Watched:
    """The meter's Control as meter/remote/commands.py's handler, telling the feed when a command
    starts to act (the counter must already be on flash by then)."""

    def __init__(self, ctl: Any, acting: Any) -> None:
        self._ctl = ctl
        self._acting = acting

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._ctl, name)
        if name not in ("disconnect", "reconnect"):
            return method

        def act(args: dict) -> Any:
            self._acting()
            result = method(args)
            self._acting(True)
            return result

        return act


class CommandFeed:
    """Signed remote commands for an in-process CPython run, delivered through the firmware's
    own MQTT receive path: meter.remote.link.Link._received, which verifies them with
    meter.remote.commands (HMAC, counter persisted before acting) and hands them to the meter's
    Control. They are signed by the head-end's code (host_tools/headend.py) with the key the
    scenario provisions (`command_key`). A command whose time has come is delivered at the
    meter's next poll (one per poll), as the link would between its sleeps; one cut short by a
    power cut is delivered again, the very same bytes, after the reboot (MQTT QoS 1 redelivers
    an unacked message).

    It also checks, at the first poll of every boot (after boot's relay re-assertion), that
    the relay's contact in the World matches the persisted commanded state."""

    def __init__(self, key: bytes, schedule: list, default_mode: int = 1) -> None:
        self.key = key
        self.schedule = schedule  # (at_s, counter, cmd)
        self.default_mode = default_mode
        self.world: Any = None
        self.due: list[tuple] = []
        self.module: Any = None  # the meter.supply.control module of the current boot
        self.link: Any = None
        self.booted = False
        self.ack: bytes | None = None
        self.acks: list[tuple] = []  # (t_s, counter, verified ack body or None)
        self.boots: list[tuple] = []  # (t_s, persisted state, contact closed)
        self.windows: list[tuple] = []  # (counter, first flash op, last flash op) handled
        self.failures: list[str] = []
        self.commanded = (1, default_mode)  # (state, mode) as last acked
        self.used = 0  # highest counter the meter acted on or acked
        self.in_flight: int | None = None
        self.digest = b""  # the in-flight message's (its ack's "for")
        self.acted = False  # its handler has returned
        self.outcome: tuple | None = None  # (n, digest, code) of the last command answered
        # by the handler: what /cmd.ctr must hold between commands
        self.on_done: Any = None  # callable(previous (state, mode), new) after each command

    def attach(self, world: Any) -> None:
        self.world = world
        for at_s, n, cmd in self.schedule:
            world.schedule(int(at_s * 1000), lambda item=(n, cmd): self.due.append(item))
        advance = world.advance

        def hooked_advance(ms: int) -> int:
            self._hook()
            return advance(ms)

        world.advance = hooked_advance

    def _hook(self) -> None:
        """Each boot imports meter.supply.control afresh: have its polls deliver the commands."""
        mod = sys.modules.get("meter.supply.control")
        if mod is None or mod is self.module:
            return
        self.module = mod
        self.link = None
        self.booted = False
        service = mod.Control.service
        feed = self

        def polled(ctl: Any, meter: Any) -> Any:
            feed.poll(ctl, meter)
            return service(ctl, meter)

        mod.Control.service = polled

    def poll(self, ctl: Any, meter: Any) -> None:
        if not self.booted:
            self.booted = True
            self.check_boot(ctl, meter)
        if self.due:
            self.deliver(ctl, meter, *self.due.pop(0))

    def check_boot(self, ctl: Any, meter: Any) -> None:
        from meter.supply import startup as ctlboot

        rec = ctlboot.load(meter.hw.fs)
        state = rec[1] if rec else 1
        closed = self.world.relays[0].closed
        t_s = self.world.now_ms // 1000
        self.boots.append((t_s, state, closed))
        if closed != (state == 1) or ctl.state != state:
            self.failures.append(f"boot at {t_s} s: relay closed={closed}, persisted state "
                                 f"{state}, control state {ctl.state}")

    def publish(self, topic: Any, msg: bytes, *more: Any) -> None:  # the link's MQTT client
        self.ack = bytes(msg)

    def _acting(self, returned: bool = False) -> None:
        self.used = max(self.used, self.in_flight or 0)
        self.acted = returned

    def deliver(self, ctl: Any, meter: Any, n: int, cmd: str, msg: bytes = b"") -> None:
        """msg: the very bytes delivered before, when the broker delivers them again."""
        import hashlib

        from host_tools.wire import decode_ack, encode_command

        world = self.world
        if self.link is None:
            from meter.remote.link import Link

            self.link = Link(meter.cfg, meter.clock, None, meter.hw.fs, meter.log)
            self.link.client = self
        self.link.handler = _Watched(ctl, self._acting)
        msg = msg or encode_command(self.key, meter.cfg["meter_id"], n, cmd,
                                    issued=world.now_unix())
        first = world.flash.ops + 1
        self.in_flight = n
        self.digest = hashlib.sha256(msg).digest()[:16]
        self.acted = False
        self.ack = None
        try:
            self.link._received(b"cmd", msg)
        except BaseException:
            self.due.insert(0, (n, cmd, msg))  # the broker delivers it again after the reboot
            self.in_flight = None
            raise
        finally:
            self.windows.append((n, first, world.flash.ops))
        ack = decode_ack(self.key, self.ack or b"")
        t_s = world.now_ms // 1000
        self.acks.append((t_s, n, ack))
        before = self.commanded
        if ack is None or ack.get("n") != n:
            self.failures.append(f"command {n} at {t_s} s: no verifiable ack ({self.ack!r})")
        elif ack["code"] == 0:
            self.used = max(self.used, n)
            if "state" in ack:
                self.commanded = (ack["state"], ack["mode"])
        if ack is not None and "state" in ack:  # the handler's answer (or its record's)
            self.outcome = (n, self.digest, ack["code"])
            if world.relays[0].closed != (self.commanded[0] == 1):
                self.failures.append(f"command {n} at {t_s} s: acked state "
                                     f"{self.commanded[0]}, relay closed="
                                     f"{world.relays[0].closed}")
        self.in_flight = None
        if self.on_done is not None:
            self.on_done(before, self.commanded)


class ControlChecks:
    """The relay / control / counter checks of one sweep (see the comment above)."""

    def __init__(self, feed: CommandFeed) -> None:
        self.feed = feed
        self.failures: list[str] = []
        self.cuts = 0  # cut points checked
        self.in_command = 0  # of which while a command was being handled
        self.open = 0  # of which with the relay commanded open
        self.counter_max = 0
        self.state = 1  # the persisted state at the last cut point
        self.changes = 0  # state changes on flash so far: each must have its one event
        self.window: list[tuple] = []  # (cut, (state, mode)) while a command is handled
        feed.on_done = self.command_done

    def check(self, cut: int, chip: Any, torn: tuple | None) -> None:
        from simulator import lfs_vfs

        feed = self.feed
        try:
            fs = lfs_vfs.VfsLfs2(Partition(OverlayFlash(chip.fh, chip.block_count, torn),
                                           "meterdata"), cache_size=BLOCK)
            got = read_control_state(fs, feed.default_mode)
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            self.failures.append(f"cut {cut}: control state unreadable: {exc!r}")
            return
        self.cuts += 1
        counter = got["counter"]
        if counter is None:
            self.failures.append(f"cut {cut}: command counter unreadable")
        else:
            if counter < feed.used:
                self.failures.append(f"cut {cut}: counter {counter} on flash, but the meter "
                                     f"already acted on or acked {feed.used}")
            if counter < self.counter_max:
                self.failures.append(f"cut {cut}: counter went back from {self.counter_max} "
                                     f"to {counter}")
            self.counter_max = max(self.counter_max, counter)
        self._events(cut, got)
        self._outcome(cut, got)
        pair = (got["state"], got["mode"])
        closed = feed.world.relays[0].closed  # the contact as the cut would leave it
        if feed.in_flight is not None:
            self.in_command += 1
            self.window.append((cut, pair, closed))
        else:
            if pair != feed.commanded:
                self.failures.append(f"cut {cut}: control (state, mode) {pair} on flash, "
                                     f"last commanded {feed.commanded}")
            if closed != (feed.commanded[0] == 1):
                self.failures.append(f"cut {cut}: relay closed={closed}, last commanded "
                                     f"state {feed.commanded[0]}")
        if feed.commanded[0] != 1:
            self.open += 1

    def _events(self, cut: int, got: dict) -> None:
        """Every state change on flash has exactly one transition event (logged, or logged
        by boot for one cut short), and the last one names the persisted state."""
        if got["state"] != self.state:
            self.changes += 1
            self.state = got["state"]
        codes = got["transitions"]
        if len(codes) != self.changes:
            self.failures.append(f"cut {cut}: {len(codes)} transition events (with boot's) "
                                 f"for {self.changes} state changes on flash: {codes}")
        elif codes and (codes[-1] - 150) % 3 != got["state"]:
            self.failures.append(f"cut {cut}: the last transition event {codes[-1]} is not "
                                 f"to the persisted state {got['state']}")

    def _outcome(self, cut: int, got: dict) -> None:
        """/cmd.ctr names the command it counts and says whether it completed."""
        feed = self.feed
        rec = got["outcome"]
        counter = got["counter"]
        last = feed.outcome
        if (feed.in_flight is not None and counter == feed.in_flight
                and not (last and (counter, rec) == (last[0], (last[1], 1, last[2])))):
            # (the record of an earlier command with that counter stays: a replay)
            if rec is None or rec[0] != feed.digest:
                self.failures.append(f"cut {cut}: counter {counter} on flash without the "
                                     f"digest of the command it counts: {rec}")
            elif rec[1] and not feed.acted:
                self.failures.append(f"cut {cut}: command {counter} recorded done before "
                                     f"its handler returned")
        elif feed.in_flight is None and feed.outcome is not None:
            n, digest, code = feed.outcome
            if (counter, rec) != (n, (digest, 1, code)):
                self.failures.append(f"cut {cut}: /cmd.ctr holds {counter} {rec}, the last "
                                     f"command answered was {n} code {code}")

    def command_done(self, before: tuple, after: tuple) -> None:
        seen_new = False
        for cut, pair, closed in self.window:
            if pair == after:
                seen_new = True
            elif pair != before or seen_new:
                self.failures.append(f"cut {cut}: control (state, mode) {pair} on flash while "
                                     f"{before} -> {after} was being commanded")
            elif closed != (before[0] == 1):
                # boot would put the relay back: the intent must be on flash before it moves
                self.failures.append(f"cut {cut}: relay already moved for {before} -> "
                                     f"{after}, flash still holds {pair}")
        self.window = []


def run_with_commands(scenario: dict, flash_path: str, feed: CommandFeed) -> dict:
    """Run a normalised scenario on CPython (power cuts, faults and all) with the feed's
    signed commands; returns the runner's raw results."""
    paths.ensure_paths()
    from simulator.device import runner

    provision = runner.provision

    def provision_then_feed(world: Any, config: dict, *more: Any) -> None:
        provision(world, config, *more)
        feed.attach(world)

    runner.provision = provision_then_feed
    try:
        return runner.run(scenario, flash_path, None, measure_loss)
    finally:
        runner.provision = provision
        _forget_meter()
