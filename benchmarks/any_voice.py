"""The trained talker on voices and levels it never heard: what the output pixels show.

    python benchmarks/any_voice.py --demo demo_out        # a finished `make demo` folder

Drives the demo's trained A2E and renderer (DEMO/work/) through `run_inference` (the code behind
`python -m metatalk_jax.infer`) with:

  espeak_-30 / espeak_-3   the demo's sentence (with its pauses), peak-normalised to -30 and to
                           -3 dBFS: the same words at two levels (the front end's level step);
  unseen_voice             the same text in espeak-ng voices the viseme corpus does not use
                           (en-us+f5 at pitch 85);
  jfk, meeting_f, meeting_m, audiobook
                           real human speech from the package registries (metatalk_jax/
                           real_speech.py): a speech with pauses, two quiet meeting recordings,
                           an audiobook reader;

and reports each video's pixel measures (eval/pixel_lip_sync.py: r_drive, r_background, the
mouth's sharpness against the real frames, its opening in pauses over speech and the drive's),
plus, for the two levels, how far apart their drives are (max |opening difference|). The last
line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):
    sys.path.insert(0, REPO)

KEYS = ("r_drive", "r_background", "r_drive_background", "r_background_given_drive",
        "mouth_sharpness", "silence_ratio", "drive_silence_ratio", "detection_rate")


def _peak(audio, dbfs: float):
    import numpy as np
    return (audio / np.max(np.abs(audio)) * 10 ** (dbfs / 20)).astype(np.float32)


def drives(config, tmp: str) -> dict[str, str]:
    """{name: wav path} of every driving audio (module docstring)."""
    from metatalk_jax.demo import spoken_text
    from metatalk_jax.media.audio_files import load_audio, write_wav
    from metatalk_jax.real_speech import real_speech
    speech = spoken_text(config)
    out = {f"espeak_{level}": write_wav(os.path.join(tmp, f"espeak_{level}.wav"),
                                        _peak(speech.audio, level), speech.sample_rate)
           for level in (-30, -3)}
    unseen = config.copy_and_resolve_references()
    unseen.voice = "en-us+f5"
    voice = spoken_text(unseen)
    out["unseen_voice"] = write_wav(os.path.join(tmp, "unseen.wav"), voice.audio,
                                    voice.sample_rate)
    for name in ("jfk", "meeting_f", "meeting_m", "audiobook"):
        out[name] = write_wav(os.path.join(tmp, f"{name}.wav"),
                              load_audio(real_speech(name), 16000), 16000)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="demo_out", help="a finished demo output folder")
    parser.add_argument("--only", default=None, help="comma-separated drive names")
    args = parser.parse_args(argv)
    import numpy as np

    from benchmarks.machine_info import machine_description
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.eval.pixel_lip_sync import DriveRecord
    from metatalk_jax.inference.pipeline import InferenceSettings, run_inference
    from metatalk_jax.runtime import enable_compilation_cache, use_xla_convolutions_on_cpu
    use_xla_convolutions_on_cpu()
    enable_compilation_cache()
    work = os.path.join(os.path.abspath(args.demo), "work")
    settings = InferenceSettings(show_progress=False, lip_sync_frames=250, preset="veryfast")
    rows, openings = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, wav in drives(load_config("demo"), tmp).items():
            if args.only and name not in args.only.split(","):
                continue
            out = os.path.join(tmp, f"{name}.mp4")
            summary = run_inference(os.path.join(work, "subject"), os.path.join(work, "a2e"),
                                    os.path.join(work, "renderer"), wav, out, settings)
            rows[name] = {"seconds": round(summary["seconds"], 1),
                          **{k: summary["lip_sync"][k] for k in KEYS}}
            openings[name] = DriveRecord.read(summary["drive_sidecar"]).drive_opening
            print(name, json.dumps(rows[name]), flush=True)
    if "espeak_-30" in openings and "espeak_-3" in openings:
        rows["levels"] = {"max_drive_difference": round(float(np.max(np.abs(
            openings["espeak_-30"] - openings["espeak_-3"]))), 5),
            "r_drive_difference": round(abs(rows["espeak_-30"]["r_drive"]
                                            - rows["espeak_-3"]["r_drive"]), 4)}
    print(json.dumps({"bench": "any_voice", "results": rows,
                      "machine": machine_description({}), "load_avg": list(os.getloadavg())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
