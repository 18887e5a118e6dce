"""Which subject a training run belongs to: recorded in its work dir, checked on resume and by
infer.

    check_run_subject(config, workdir)        # train: records, or refuses another subject
    note = check_trained_on(subject, step_dir, "renderer", allow_other=False)       # infer

A subject is identified by its prepare fingerprint (subject.json: the source video's SHA-256,
the morphable model's SHA-256, the prepare config and the format version), so a subject
re-prepared at the same path from another video is another subject. The record,
WORKDIR/trained_on.json, holds that fingerprint and, for people, the subject's path, video name
and the video's and model's hashes.
"""

from __future__ import annotations

import json
import os

from metatalk_jax.errors import InputError

RECORD = "trained_on.json"


def subject_identity(meta: dict, path: str) -> dict:
    """{fingerprint, path, video, video_sha256, model_sha256} of a subject's subject.json."""
    source = meta.get("source", {})
    video = source.get("original_path") or source.get("path") or ""
    return {"fingerprint": meta.get("fingerprint"), "path": os.path.abspath(path),
            "video": os.path.basename(video), "video_sha256": source.get("sha256"),
            "model_sha256": meta.get("model", {}).get("sha256")}


def _describe(record: dict) -> str:
    return (f"{record.get('path')} (video {record.get('video') or '?'}, fingerprint "
            f"{str(record.get('fingerprint'))[:12]})")


def read_record(workdir: str) -> dict | None:
    """The work dir's trained_on.json (a local dir or a gs:// URL), or None (no record: a new
    run or one from before the records)."""
    from metatalk_jax.train import workdir as workdir_lib
    path = workdir_lib.join(workdir, RECORD)
    if not workdir_lib.exists(path):
        return None
    return json.loads(workdir_lib.read_bytes(path).decode())


def _write_record(workdir: str, record: dict) -> None:
    from metatalk_jax.train import workdir as workdir_lib
    workdir_lib.makedirs(workdir)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    workdir_lib.write_bytes(workdir_lib.join(workdir, RECORD), text.encode())


def check_run_subject(config, workdir: str, *, write: bool = True, log=print) -> None:
    """Records config.data.subject's identity in `workdir` (when `write`: process 0), or raises
    ValueError (one line) when the work dir's run was trained on another subject, before
    anything in the work dir is touched. Configs without data.subject are not checked."""
    data = config.get("data") if hasattr(config, "get") else None
    path = str(data.get("subject", "") or "") if data is not None else ""
    if not path:
        return
    from metatalk_jax.subject.layout import read_subject_meta
    mine = subject_identity(read_subject_meta(path), path)
    recorded = read_record(workdir)
    if recorded is not None and recorded.get("fingerprint") != mine["fingerprint"]:
        raise InputError(f"{workdir}: this run was trained on subject {_describe(recorded)}, "
                         f"not on {_describe(mine)}; resuming would train it on another "
                         "subject's data: use a new --workdir")
    if recorded is None and write:
        from metatalk_jax.train import workdir as workdir_lib
        if workdir_lib.exists(workdir_lib.join(workdir, "checkpoints")):
            log(f"note: {workdir} has checkpoints but no {RECORD} (a run from before subject "
                f"records): it is taken to be of {path}")
        _write_record(workdir, mine)


def check_trained_on(subject, step_dir: str, what: str, *, allow_other: bool = False) -> str:
    """Checks that the run of checkpoint `step_dir` (WORKDIR/checkpoints/<step>) was trained on
    `subject` (a layout.Subject). Returns a note for the summary ("same subject", or why it
    could not be checked or was allowed); raises ValueError (one line naming the run, both
    subjects and --allow-other-subject) for another subject unless allow_other."""
    from metatalk_jax.train import workdir as workdir_lib
    step = workdir_lib.resolve(step_dir)          # a gs:// step dir stays a URL
    workdir = os.fspath(workdir_lib.epath_of(step).parent.parent)
    recorded = read_record(workdir)
    mine = subject_identity(subject.meta, subject.path)
    if recorded is None:
        return (f"{what}: not checked ({workdir} has no {RECORD}; a run from before subject "
                "records)")
    if recorded.get("fingerprint") == mine["fingerprint"]:
        return f"{what}: trained on this subject"
    message = (f"{workdir}: the {what} was trained on subject {_describe(recorded)}, not on "
               f"{_describe(mine)}")
    if not allow_other:
        raise InputError(f"{message}; pass --allow-other-subject to use it anyway")
    return f"{what}: trained on another subject, used with --allow-other-subject ({message})"
