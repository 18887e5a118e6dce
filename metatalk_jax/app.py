"""A web page for a trained talker: `python -m metatalk_jax.app --talker me.talker`.

    pip install 'metatalk_jax[app]'                       # Gradio, an optional extra
    python -m metatalk_jax.app --talker me.talker [--port 7860] [--host 127.0.0.1]
    python -m metatalk_jax.app --subject S --a2e A --renderer R     (the work dirs instead)

Type a sentence (spoken by espeak-ng) or upload / record audio; the page shows the video, its
preview (3DMM render | output | background frame | the two mouths) and the lip-sync figures
measured on the output pixels. The talker is loaded and compiled once (inference/talker.py); one
job runs at a time and the others wait in a queue (at most --queue). Uploads are limited in size
(--max-upload-mb) and the audio in length (--max-seconds); bad audio gets its one-line message on
the page, nothing crashes. It binds 127.0.0.1 (this machine only) unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from metatalk_jax import runtime
from metatalk_jax.cli_errors import report_bad_input
from metatalk_jax.errors import InputError

TITLE = "metatalk_jax: say it"


def build_page(talker, *, work_dir: str, max_upload_mb: float, queue: int):
    """The Gradio Blocks of the page around a loaded Talker (not launched)."""
    import gradio as gr

    counter = {"n": 0}

    def make(text, audio_path):
        text = (text or "").strip()
        if not text and not audio_path:
            raise gr.Error("Type a sentence or give some audio first.")
        counter["n"] += 1
        out = os.path.join(work_dir, f"talk_{counter['n']:04d}.mp4")
        try:
            summary = talker.say(audio_path if audio_path else text, out, preview=True,
                                 show_progress=False)
        except InputError as err:            # bad audio, too long, silent: shown on the page
            message = str(err)
            if audio_path:                   # the upload's name, not the server's temp folder
                message = message.replace(os.path.dirname(audio_path) + os.sep, "")
            raise gr.Error(message.replace(work_dir + os.sep, "")) from None
        figures = {k: summary.get(k) for k in ("frames", "seconds", "total_s")}
        figures.update(summary.get("lip_sync", {}))
        return out, summary["preview"], figures

    with gr.Blocks(title=TITLE) as page:
        gr.Markdown(f"## {TITLE}\nType a sentence, or upload or record speech "
                    f"(at most {talker.settings.max_seconds:.0f} s, {max_upload_mb:g} MB).")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Sentence", elem_id="sentence",
                                  placeholder="Good morning, everyone.")
                audio = gr.Audio(label="or audio", sources=["upload", "microphone"],
                                 type="filepath", elem_id="audio")
                say = gr.Button("Say it", variant="primary", elem_id="say")
            with gr.Column():
                video = gr.Video(label="Video", elem_id="video")
                preview = gr.Video(label="Preview: render | output | background | mouths",
                                   elem_id="preview")
                figures = gr.JSON(label="Lip sync on the output pixels", elem_id="figures")
        say.click(make, inputs=[text, audio], outputs=[video, preview, figures],
                  concurrency_limit=1)
    page.queue(default_concurrency_limit=1, max_size=int(queue))
    return page


def main(argv=None) -> int:
    runtime.start()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--talker", help="a talker bundle (python -m metatalk_jax.export)")
    parser.add_argument("--subject", help="prepared subject directory (without --talker)")
    parser.add_argument("--a2e", help="A2E work dir or checkpoint step dir")
    parser.add_argument("--renderer", help="renderer work dir or checkpoint step dir")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="longest audio or sentence accepted, seconds (default 60)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0,
                        help="largest upload, MB (default 20)")
    parser.add_argument("--queue", type=int, default=8,
                        help="jobs that may wait behind the running one (default 8)")
    args = parser.parse_args(argv)
    trio = (args.subject, args.a2e, args.renderer)
    if (args.talker is None) != all(v is not None for v in trio):
        parser.error("pass --talker, or all of --subject, --a2e and --renderer")
    try:
        import gradio  # noqa: F401
    except ImportError:
        return report_bad_input(InputError("the web page needs Gradio: pip install "
                                           "'metatalk_jax[app]' (or pip install gradio)"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # nothing leaves the machine
    from metatalk_jax.inference.pipeline import InferenceSettings
    from metatalk_jax.inference.talker import Talker
    settings = InferenceSettings(max_seconds=args.max_seconds, lip_sync_frames=100)
    try:
        talker = Talker.load(args.talker, subject=args.subject, a2e=args.a2e,
                             renderer=args.renderer, settings=settings)
    except InputError as err:
        return report_bad_input(err)
    work_dir = tempfile.mkdtemp(prefix="metatalk_app_")
    page = build_page(talker, work_dir=work_dir, max_upload_mb=args.max_upload_mb,
                      queue=args.queue)
    print(f"[app] serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    page.launch(server_name=args.host, server_port=args.port, share=False,
                max_file_size=f"{args.max_upload_mb:g}mb", allowed_paths=[work_dir],
                show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
