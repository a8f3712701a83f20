"""The generating pages' form and live view: values from a link or the visitor's last choice, the layer picker,
the estimate under the form, queue position or progress with ETA, and the loop that streams live frames."""

from __future__ import annotations

import time

import streamlit as st

from app_pages._chrome import server_line
from app_pages._server import app_words, device, manager, session_alive, session_id
from viz import DEFAULT_METHOD, LAYER_NAMES, LAYERS, METHODS, VizError
from viz.base.progress import fmt_time
from viz.dashboard.links import parse_link
from viz.engine.settings import MAX_SIZE, MIN_SIZE
from viz.serving.budget import fmt_seconds


def link_state(default_layer: str | None = "conv5_1", current_layer: str | None = None):
    """The URL's parameters, validated: each bad one is shown as one friendly warning and dropped from the URL (a
    channel without a layer is checked against ``current_layer``, the layer the page shows)."""
    link = parse_link(st.query_params.to_dict(), default_layer, current_layer)
    for problem in link.problems:
        st.warning(f"Ignored part of the link: {problem}.", icon=":material/link_off:")
    for name in link.bad:
        st.query_params.pop(name, None)
    return link


PERSIST = {"persist_state": "session"}  # a visitor's choices survive a visit to another page


def seed_from_link(prefix: str, defaults: dict) -> None:
    """The form's values: a new link's (layer, channel, size, steps, method) when the URL changed since it was
    last applied, else what this visitor chose before (widgets persist across pages), else ``defaults``."""
    ss = st.session_state
    for name, value in {"layer": "conv5_1", "channel": 104, **defaults}.items():
        ss.setdefault(f"{prefix}_{name}", value)
    link = link_state(default_layer=None, current_layer=ss[f"{prefix}_layer"])
    given = {k: v for k, v in link.given().items() if k != "page"}
    if given and given != ss.get(f"_{prefix}_link"):
        for name, value in given.items():
            ss[f"{prefix}_{name}"] = value
        ss[f"_{prefix}_link"] = given
        top = LAYERS[ss[f"{prefix}_layer"]].channels - 1  # a new layer whose range ends below the last channel
        if isinstance(ss[f"{prefix}_channel"], int) and ss[f"{prefix}_channel"] > top:
            ss[f"{prefix}_channel"] = top


def remember_link(prefix: str, **values) -> None:
    """Put a submitted request in the URL (a shareable link) without it counting as a new link."""
    st.query_params.update({k: str(v) for k, v in values.items()})
    st.session_state[f"_{prefix}_link"] = values


def url_form(prefix: str, fields: dict[str, tuple[str, object]]) -> None:
    """Form values that live in the URL beside the link's (view options, Compare's sides): ``fields`` maps a
    query parameter to (session key, parser: text -> value, raising ``VizError``/``ValueError`` when bad). A link
    whose values changed since they were last applied sets the form (a new link, or Back and Forward); a bad value
    is one warning and dropped."""
    ss = st.session_state
    given = {}
    for name, (key, parse) in fields.items():
        raw = st.query_params.get(name)
        if raw is None:
            continue
        try:
            given[key] = parse(raw)
        except (VizError, ValueError, TypeError) as exc:
            st.warning(f"Ignored part of the link: {name}={raw[:24]!r} ({app_words(exc) or 'not a value here'}).",
                       icon=":material/link_off:")
            st.query_params.pop(name)
    marker = f"_{prefix}_url_form"
    if given and given != ss.get(marker):
        for key, value in given.items():
            ss[key] = value
        ss[marker] = given


def write_url_form(prefix: str, fields: dict[str, tuple[str, object]], shown: dict[str, object]) -> None:
    """Put the form's current values in the URL (``shown``: parameter -> value, None to leave it out), so the view
    a visitor sees is a link that reproduces it; remembered as applied so it is not read back as a new link."""
    applied = {}
    for name in fields:
        value = shown.get(name)
        if value is None:
            st.query_params.pop(name, None)
        else:
            text = f"{value:g}" if isinstance(value, float) else str(value)
            st.query_params[name] = text
            applied[fields[name][0]] = value
    st.session_state[f"_{prefix}_url_form"] = applied


def one_of(choices):
    """A :func:`url_form` parser that takes one of ``choices``."""
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"choose {' or '.join(map(str, choices))}")
        return text
    return parse


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("not a fraction")
    return value


def layer_picker(label: str, key: str, container=st) -> str:
    """A layer selectbox whose value lives in ``st.session_state[key]`` (set it first to choose the default)."""
    return container.selectbox(label, list(LAYER_NAMES), key=key, **PERSIST,
                               format_func=lambda n: f"{n} ({LAYERS[n].channels} ch, RF {LAYERS[n].receptive_field}px)")


def defaults_for(device_name: str) -> tuple[int, int]:
    """(size, steps): under ~30 s for conv5_1 on a laptop CPU; Lucid's 224 px x 512 steps on a GPU."""
    return (224, 512) if device_name.startswith("cuda") else (128, 128)


def generation_page(title: str, caption: str, prefix: str, **defaults) -> tuple[str, int, int]:
    """The top of a page that generates: title, caption, the device (the page stops with a message when it is
    not available), the form's values from the link or the visitor's last choice; returns (device, default
    size, default steps)."""
    st.title(title)
    st.caption(caption)
    dev = device()
    if dev is None:
        st.stop()
    size, steps = defaults_for(dev)
    seed_from_link(prefix, {"size": size, "steps": steps, **defaults})
    return dev, size, steps


def follow(draw, every: float = 1.0) -> bool:
    """Stream live frames from this script run: ``draw(tick)`` renders one frame into a fresh container and
    returns True once there is nothing left to wait for. Returns whether it had to wait.

    Not ``st.fragment(run_every=...)``: with 8 sessions on 2 cores a fragment's browser-side timer was seen to
    stop, leaving a session on its first frame for good. A script run that keeps redrawing its own placeholder
    needs no timer; any click stops it and starts an ordinary rerun.
    """
    slot = st.empty()
    tick = 0
    sid = session_id()
    while True:
        if session_alive(sid) is False:  # the tab is gone (the server may keep its script running): stop, and
            return tick > 0  # stop vouching for it, so its jobs are dropped after VIZ_SESSION_TIMEOUT
        manager().heartbeat(sid)  # this visitor still watches: its jobs keep running
        server_line()  # the sidebar's counts move with the frames
        with slot.container():
            if draw(tick):
                return tick > 0
        tick += 1
        time.sleep(every)


def settle(jobs, deadline: float = 3.0) -> None:
    """After a Cancel: give the cancelled jobs nobody else waits for up to ``deadline`` seconds to stop (a render
    stops between two steps), so the page and the sidebar redraw with the server's real state."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and any(not j.finished and not j.subscribers for j in jobs):
        time.sleep(0.05)


def redraw_when_stopped(jobs, deadline: float = 120.0) -> None:
    """At the end of the page after a Cancel: once the cancelled jobs nobody else waits for have stopped (on a busy
    machine a step can outlast :func:`settle`), the sidebar's line is drawn again, so that its counts agree with
    the page without a reload."""
    end, sid = time.monotonic() + deadline, session_id()
    while any(not j.finished and not j.subscribers for j in jobs) and time.monotonic() < end:
        if session_alive(sid) is False:
            return
        time.sleep(0.2)
    server_line()


def job_progress(job, position: int) -> None:
    """Queue position, or a progress bar with ETA, for a job that is not finished."""

    if job.state == "queued":
        st.info(f"Queued: position {position} — starts when the server has a free slot (this render: about "
                f"{fmt_seconds(job.estimate)}).", icon=":material/hourglass:")
        return
    frac = job.step / max(job.steps, 1)
    eta = "…" if job.eta is None else fmt_time(job.eta)
    st.progress(frac, text=f"step {job.step}/{job.steps} · {fmt_time(job.elapsed)} elapsed · ETA {eta}")


def size_help(*requests: tuple[str, int]) -> str:
    """The size field's help: the sizes any request may ask for, and the largest this server renders for the
    ``(method, images)`` the form asks for (the smallest cap of them; the default recipe's when none)."""
    lim = manager().limits
    caps = {(method, images): min(MAX_SIZE, lim.side_cap(method, images)) for method, images in requests
            if method in METHODS} or {(DEFAULT_METHOD, 1): min(MAX_SIZE, lim.size_cap)}
    method, images = min(caps, key=caps.get)
    cap = caps[(method, images)]
    if cap >= MAX_SIZE:
        return f"{MIN_SIZE}-{MAX_SIZE} px"
    what = method + (f", {images} images at once" if images > 1 else "")
    return f"{MIN_SIZE}-{MAX_SIZE} px; this server renders at most {cap} px ({what})"


def estimate_line(specs) -> bool:
    """Under a generation form: the request's estimated time on this server, or why it would be refused.
    Returns whether the request fits."""
    m = manager()
    try:
        seconds = m.check_request(specs)
    except VizError as exc:
        st.warning(app_words(exc), icon=":material/timer_off:")
        return False
    lim = m.limits
    st.caption(f"Estimated time on this server: {'instant (cached)' if seconds == 0 else 'about ' + fmt_seconds(seconds)}"
               f" · limits here: {fmt_seconds(lim.max_job_seconds)} per request and {min(lim.size_cap, 1024)} px")
    return True
