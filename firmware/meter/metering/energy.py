# Cumulative energy registers that never lose a fraction of a watt-hour to rounding.
# Each register is kept as whole kWh + whole Wh + a remainder in the IC's own units, so
# every field stays a small int (< 2**30) for centuries at Imax on a 31-bit ESP32 int.


class Register:
    def __init__(self, den):
        self.den = den  # remainder units per Wh (e.g. the meter constant for 100/MC Wh LSBs)
        self.kwh = 0
        self.wh = 0
        self.rem = 0  # 0 <= rem < den: sub-Wh energy in 1/den Wh
        self.unsaved_wh = 0  # whole Wh added since the owner last persisted the register
        # what was last persisted (kWh, mWh): a value shown beyond it could come back lower
        # after a reset, and a cumulative register must never be seen to run backwards
        self.saved_kwh = 0
        self.saved_mwh = 0

    def add(self, count, num):
        """Add count IC units of num/den Wh each; whole Wh carry over, the rest stays."""
        rem = self.rem + count * num
        whole = rem // self.den
        self.rem = rem - whole * self.den
        if whole:
            self.unsaved_wh += whole
            wh = self.wh + whole
            if wh >= 1000:
                kwh = wh // 1000
                self.kwh += kwh
                wh -= kwh * 1000
            self.wh = wh

    def total_mwh(self):
        """Milli-Wh below the kWh figure (0..999999), for display and persistence."""
        return self.wh * 1000 + self.rem * 1000 // self.den

    def set(self, kwh, mwh):
        """Restore a persisted (kWh, mWh): the smallest remainder that shows those mWh again.
        Rounding down instead would show one mWh less than was saved (and published)."""
        self.kwh = kwh
        self.wh = mwh // 1000
        self.rem = -((mwh % 1000) * -self.den // 1000)  # ceil(f * den / 1000)
        self.saved(kwh, mwh)

    def saved(self, kwh, mwh):
        """The register as it stands is on flash as (kwh, mwh)."""
        self.saved_kwh = kwh
        self.saved_mwh = mwh

    def on_flash(self):
        """Whether what the register shows is what was last persisted."""
        return self.kwh == self.saved_kwh and self.total_mwh() == self.saved_mwh

    def kwh_text(self):
        """kWh with six decimals (mWh resolution), e.g. '12.345678'."""
        frac = self.total_mwh()
        text = str(frac)
        return str(self.kwh) + "." + "000000"[len(text):] + text

    def wh_float(self):
        return self.kwh * 1000 + self.wh + self.rem / self.den
