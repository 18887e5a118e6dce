"""The A2E with and without its training augmentations, on voices and levels it never heard.

    python benchmarks/a2e_voices.py [--steps 700]

On the carphone subject (configs/prepare.py:tiny, cached) with the demo's viseme corpus (40
espeak-ng sentences, generated into a temporary folder), trains configs/a2e.py:cpu twice with
the same seed, once with `augment` as configured (train/mel_augment.py) and once with every
augmentation off, then drives each with the demo's sentence (its 1 s pauses included) spoken

  train_voice    by en-us at pitch 50 (a voice of the corpus);
  unseen_high    by en-us+f5 at pitch 85 and unseen_low by en-gb-x-rp+m6 at pitch 15 (voices
                 and pitches the corpus does not use);
  peak_-30 / peak_-3   by en-us, peak-normalised to -30 and to -3 dBFS;

and reports Pearson r of the A2E's inner-lip gap with the viseme teacher's for the same
phonemes (demo.a2e_lip_sync_check), plus the held-out Pearson and mouth range ratio of training.
The last line of output is one JSON object.
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

from metatalk_jax.runtime import use_xla_convolutions_on_cpu  # noqa: E402

use_xla_convolutions_on_cpu()

OFF = ["augment.level_db=0.0", "augment.warp_prob=0.0", "augment.reverb_prob=0.0",
       "augment.noise_prob=0.0"]
DRIVES = {"train_voice": ("en-us", 50, None), "unseen_high": ("en-us+f5", 85, None),
          "unseen_low": ("en-gb-x-rp+m6", 15, None), "peak_-30": ("en-us", 50, -30.0),
          "peak_-3": ("en-us", 50, -3.0)}


def spoken(voice: str, pitch: int, peak_dbfs: float | None):
    """The demo's sentence in `voice` at `pitch`, optionally peak-normalised (a Speech)."""
    import numpy as np

    from metatalk_jax.config_loading import load_config
    from metatalk_jax.media.speech import Speech, sentences_of, synthesize, with_pauses
    demo = load_config("demo")
    parts = [synthesize(text, voice=voice, rate_wpm=int(demo.rate_wpm), pitch=pitch)
             for text in sentences_of(demo.sentence)]
    speech = with_pauses(parts, float(demo.pause_s))
    if peak_dbfs is None:
        return speech
    audio = speech.audio / np.max(np.abs(speech.audio)) * 10 ** (peak_dbfs / 20)
    return Speech(audio.astype(np.float32), speech.phonemes, speech.sample_rate, speech.text,
                  speech.voice)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=700)
    args = parser.parse_args(argv)
    from benchmarks.infer import bench_subject
    from benchmarks.machine_info import machine_description
    from metatalk_jax.config_loading import load_config
    from metatalk_jax.demo import a2e_lip_sync_check, last_evaluation
    from metatalk_jax.pseudo_video.viseme_teacher import generate_viseme_corpus
    from metatalk_jax.runtime import enable_compilation_cache
    from metatalk_jax.train.loop import train_and_evaluate
    enable_compilation_cache()
    subject = bench_subject()
    drives = {name: spoken(*settings) for name, settings in DRIVES.items()}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "visemes")
        pseudo = load_config("pseudo")
        pseudo.visemes.max_clips = int(load_config("demo").viseme_clips)
        generate_viseme_corpus(subject, corpus, pseudo, log=lambda *_: None)
        for name, extra in (("augmented", []), ("not_augmented", OFF)):
            work = os.path.join(tmp, name)
            config = load_config("a2e:cpu", [f"data.subject={subject}",
                                             f"data.pseudo_dirs={corpus}", "data.pseudo_ratio=1.0",
                                             "data.eval_on=pseudo", f"total_steps={args.steps}",
                                             *extra])
            train_and_evaluate(config, work, log=lambda *_: None)
            evaluation = last_evaluation(work)
            row = {"held_out_pearson": evaluation.get("pearson"),
                   "held_out_mouth_range_ratio": evaluation.get("mouth_range_ratio")}
            for drive, speech in drives.items():
                check = a2e_lip_sync_check(subject, work, speech)
                row[drive] = round(check["r_lip_gap_vs_teacher"], 3)
            rows[name] = row
            print(name, json.dumps(row), flush=True)
    print(json.dumps({"bench": "a2e_voices", "steps": args.steps, "results": rows,
                      "machine": machine_description({}), "load_avg": list(os.getloadavg())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
