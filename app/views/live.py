"""What the Training page shows of a live run (app/serving/live.py): its state in a sentence, the figures, the
curve with its reference lines, and the samples kept at fixed steps, oldest first."""

from __future__ import annotations

from app.serving.live import Job, duration
from app.views.figures import line_chart
from model.training import live as training

MAX_POINTS = 150


def readable(text: str) -> str:
    """A sample as a page shows it: bytes that are no character, and control characters (an untrained model writes
    them), as "�"; line breaks and tabs stay."""
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


def state_sentence(job: Job) -> str:
    if job.state == "failed":
        return f"The run failed: {job.error}. Start it again."
    if job.state == "training" and not job.ready:
        return "Starting the training process…"
    if job.state == "training":
        return f"Training: {duration(job.left_s())} left in this sitting."
    return {"stopped": "Stopped.", "time": "Time is up.", "steps": "Done: the steps asked for are trained."}.get(
        job.why or "", "Paused.") + " Continue trains on from the same step."


def curve(job: Job) -> dict | None:
    train = [[p["tokens"], p["train_loss"]] for p in job.points if p["step"] > 0]
    train = train[::-(-len(train) // MAX_POINTS)] if train else train  # a long run's line, thinned: the page gets it every second
    val = [[p["tokens"], p["val_loss"]] for p in job.points if p.get("val_loss") is not None]
    series = [{"label": "training loss", "class": "s-train", "key": "train", "points": train},
              {"label": "validation loss (the held-out tenth)", "class": "s-val", "key": "val", "points": val,
               "dots": True}]
    base = job.ready.get("baselines", {})
    levels = [{"y": base["uniform"], "label": f"a uniform guess: ln 257 = {base['uniform']:.2f}", "class": "uniform"},
              {"y": base["unigram"], "label": f"byte frequencies alone: {base['unigram']:.2f}", "class": "unigram"}
              ] if base else []
    chart = line_chart([s for s in series if s["points"]], [], "bytes seen", "loss (nats per byte)", levels)
    return {"series": series, "chart": chart} if chart else None


def context(job: Job | None, live_loaded: bool) -> dict:
    if job is None:
        return {"job": None}
    last = job.last
    val = next((p["val_loss"] for p in reversed(job.points) if p.get("val_loss") is not None), None)
    rates = [p["tokens_per_s"] for p in job.points if p["tokens_per_s"]]
    size = training.SIZES[job.plan.size]
    return {
        "job": job, "state": state_sentence(job), "curve": curve(job),
        "samples": [{"step": s["step"], "text": readable(s["text"])} for s in sorted(job.samples, key=lambda s: s["step"])],
        "figures": {"step": job.step, "tokens": last["tokens"] if last else 0, "val": val,
                    "train": last["train_loss"] if last and job.step else None,
                    "rate": rates[-1] if rates else None, "trained": duration(job.trained_s()),
                    "left": duration(job.left_s())},
        "size": size, "live_loaded": live_loaded and job.state == "paused",
    }
