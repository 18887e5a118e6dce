"""Progress lines: the ETA is the remaining count at the mean rate so far."""

import io

from metatalk_jax.progress import Progress, format_seconds


def test_format_seconds():
    assert format_seconds(12.3) == "12s"
    assert format_seconds(754) == "12m34s"
    assert format_seconds(7300) == "2h01m"
    assert format_seconds(-5) == "0s"


def test_eta_and_lines():
    out = io.StringIO()
    bar = Progress("fit", total=100, interval_s=0.0, stream=out)
    assert bar.eta_s() is None                       # nothing done yet: no rate to go on
    bar.start -= 20.0                                # pretend 20 s have passed ...
    bar.update(25)                                   # ... for a quarter of the work
    eta = bar.eta_s()
    assert 59.0 < eta < 61.5                         # 75 left at 0.8 s each
    line = out.getvalue().strip().splitlines()[-1]
    assert line.startswith("fit: 25/100 (25%)")
    assert line.endswith("ETA 1m00s") or line.endswith("ETA 1m01s")
    bar.close()
    assert out.getvalue().strip().splitlines()[-1].endswith("(done)")
    stream = Progress("track", total=None, interval_s=0.0, stream=io.StringIO())
    stream.update(3)
    assert stream.eta_s() is None and stream.line().startswith("track: 3 done")
