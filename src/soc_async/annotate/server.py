"""The annotate web app (aiohttp): the page, each rater's queue, answers appended durably.

:func:`open_session` reads the run (and run B for a comparison), makes or reloads the
plan stored in the run directory, reads the answers given so far and the rubric;
:func:`make_app` serves it. State that matters lives in files: the plan and
annotations.jsonl. What is only in memory is which item each rater has open (so two
raters are not handed the same unshared item at once); a restarted server rebuilds the
rest from the files, and a rater resumes at their first unanswered item.

Bound to loopback by default. Bound elsewhere, every data request (``/api/``) must carry
the session's token (printed in the URL), compared in constant time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from soc_async.annotate.payload import conversation_payload
from soc_async.annotate.plan import (
    AB_PLAN_FILE,
    PLAN_FILE,
    ItemFacts,
    Plan,
    make_ab_plan,
    make_rate_plan,
    queue,
)
from soc_async.annotate.records import (
    ANNOTATIONS,
    Annotation,
    AnswerError,
    Preference,
    Rating,
    check_rater,
    make_answer,
)
from soc_async.annotate.rubric import RUBRIC_FILE, Rubric
from soc_async.errors import InputError, RunDirError
from soc_async.records import Conversation
from soc_async.store.appendlog import AppendLog, read_log
from soc_async.store.files import write_atomic
from soc_async.store.rundata import RunData
from soc_async.timestamps import utc_now

__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_SAMPLE",
    "Session",
    "is_loopback",
    "make_app",
    "open_session",
    "run_server",
]

DEFAULT_SAMPLE = 40
DEFAULT_OVERLAP = 0.2
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
_decode_plan = msgspec.json.Decoder(Plan).decode


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Session:
    """One annotate session: the runs, the plan, the rubric, the log and who did what."""

    run: RunData
    other: RunData | None
    plan: Plan
    rubric: Rubric
    log: AppendLog
    conversations: dict[str, Conversation]  # A's sampled chats (and B's, keyed "B:<id>")
    answers: dict[tuple[str, str], Annotation] = field(default_factory=dict)
    done: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    claimed: dict[str, str] = field(default_factory=dict)
    plan_note: str = ""

    def record(self, a: Annotation) -> None:
        self.answers[(a.rater, a.item)] = a
        if a.rater not in self.done[a.item]:
            self.done[a.item].append(a.rater)

    def queue(self, rater: str) -> list[str]:
        return queue(self.plan, rater, self.done, self.claimed)

    def progress(self, rater: str) -> dict[str, Any]:
        q = self.queue(rater)
        done = [i for i in q if (rater, i) in self.answers]
        position = next((k for k, i in enumerate(q) if (rater, i) not in self.answers), len(q))
        return {"queue": q, "done": done, "position": position}


def _facts(data: RunData) -> tuple[list[ItemFacts], int]:
    facts = [
        ItemFacts(
            chat_id=c.chat_id, model=c.model, style=c.style, cadence=c.cadence, turns=len(c.turns)
        )
        for c in data.conversations()
    ]
    return facts, len(facts)


def _no_conversations(path: Path) -> InputError:
    return InputError(
        f"{path}: no conversations to rate (conversations.jsonl is missing or empty); "
        "expected a run directory with finished chats"
    )


def _load_plan(path: Path, mode: str) -> Plan | None:
    if not path.is_file():
        return None
    try:
        plan = _decode_plan(path.read_bytes())
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RunDirError(
            f"{path}: not a sampling plan ({exc}); remove it to make a new one"
        ) from exc
    if plan.mode != mode:
        raise RunDirError(f"{path}: a plan for mode {plan.mode}, expected {mode}")
    return plan


def _check_asked(plan: Plan, path: Path, sample: int | None, overlap: float | None) -> None:
    """A stored plan is the session's: asking for another sample is an error, not a
    silent change under raters who already started."""
    if sample is not None and sample != plan.sample:
        raise InputError(
            f"--sample {sample}: {path} already holds a plan of {plan.sample}; every rater "
            "must rate the same sample (leave --sample out, or remove the plan to start over)"
        )
    if overlap is not None and abs(overlap - plan.overlap) > 1e-9:
        raise InputError(
            f"--overlap {overlap}: {path} already holds a plan with overlap {plan.overlap} "
            "(leave --overlap out, or remove the plan to start over)"
        )


def open_session(
    run_dir: str | Path,
    *,
    rubric: Rubric,
    compare: str | Path | None = None,
    sample: int | None = None,
    overlap: float | None = None,
    seed: int = 0,
) -> Session:
    """Everything a server needs; InputError for a directory without conversations,
    a bad sample or overlap, or a stored plan that does not fit the arguments."""
    if sample is not None and sample < 1:
        raise InputError(f"--sample {sample}: expected a number of conversations >= 1")
    if overlap is not None and not 0 <= overlap <= 1:
        raise InputError(f"--overlap {overlap}: expected a fraction from 0 to 1")
    run = RunData(run_dir)
    other = RunData(compare) if compare is not None else None
    mode = "ab" if other is not None else "rate"
    plan_path = run.path / (AB_PLAN_FILE if other is not None else PLAN_FILE)
    plan = _load_plan(plan_path, mode)
    note = f"plan {plan_path} reused"
    if plan is not None:
        _check_asked(plan, plan_path, sample, overlap)
        if other is not None and Path(plan.compare).resolve() != other.path.resolve():
            raise InputError(
                f"--compare {compare}: {plan_path} pairs this run with {plan.compare}; "
                "compare with that run, or remove the plan to start over"
            )
    else:
        facts, n = _facts(run)
        if n == 0:
            raise _no_conversations(run.path)
        n_sample = sample or DEFAULT_SAMPLE
        share = DEFAULT_OVERLAP if overlap is None else overlap
        if other is None:
            plan = make_rate_plan(facts, n=n_sample, overlap=share, seed=seed, created=utc_now())
        else:
            facts_b, n_b = _facts(other)
            if n_b == 0:
                raise _no_conversations(other.path)
            plan = make_ab_plan(
                facts,
                facts_b,
                n=n_sample,
                overlap=share,
                seed=seed,
                created=utc_now(),
                compare=str(compare),
                compare_key=other.identity.key if other.identity else "",
            )
        write_atomic(plan_path, msgspec.json.format(msgspec.json.encode(plan), indent=2) + b"\n")
        note = f"plan {plan_path} written"
    wanted_a = {i.a or i.id for i in plan.items}
    conversations = {c.chat_id: c for c in run.conversations() if c.chat_id in wanted_a}
    if other is not None:
        wanted_b = {i.b for i in plan.items}
        conversations.update(
            {f"B:{c.chat_id}": c for c in other.conversations() if c.chat_id in wanted_b}
        )
    if not conversations:
        raise _no_conversations(run.path)
    write_atomic(run.path / RUBRIC_FILE, rubric.text.encode())
    path = run.path / ANNOTATIONS
    session = Session(
        run=run,
        other=other,
        plan=plan,
        rubric=rubric,
        log=AppendLog(path),
        conversations=conversations,
        plan_note=note,
    )
    kind = Preference if other is not None else Rating
    for a in read_log(path, Annotation):
        if isinstance(a, kind) and plan.item(a.item) is not None:
            session.record(a)
    return session


# ---- the app --------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _rater(request: web.Request) -> str:
    try:
        return check_rater(request.query.get("rater"))
    except AnswerError as exc:
        raise web.HTTPBadRequest(
            text=msgspec.json.encode({"error": str(exc)}).decode(), content_type="application/json"
        ) from exc


def _rubric_view(r: Rubric) -> dict[str, Any]:
    return {
        "version": r.version,
        "criteria": [
            {
                "key": c.key,
                "label": c.label,
                "question": c.question,
                "low": c.low,
                "high": c.high,
                "anchors": {k: c.anchors[k] for k in sorted(c.anchors, key=int)},
            }
            for c in r.criteria
        ],
        "flags": [[f, r.flag_keys[f]] for f in r.flags],
        "comment": r.comment,
    }


def _answer_view(a: Annotation | None) -> dict[str, Any] | None:
    if a is None:
        return None
    if isinstance(a, Rating):
        return {"scores": a.scores, "flags": a.flags, "comment": a.comment}
    return {"choices": a.choices, "comment": a.comment}


def _item_view(s: Session, item_id: str) -> dict[str, Any]:
    item = s.plan.item(item_id)
    assert item is not None
    run, other = s.run, s.other

    def draw(key: str, data: RunData, blind: bool) -> dict[str, Any]:
        c = s.conversations[key]
        return conversation_payload(
            c, data.experiences.get(c.experience_id), data.personas, blind=blind
        )

    if s.plan.mode == "rate":
        return {"conv": draw(item.id, run, False)}
    assert other is not None
    a, b = draw(item.a, run, True), draw(f"B:{item.b}", other, True)
    left, right = (a, b) if item.left == "A" else (b, a)
    return {"left": left, "right": right}


def make_app(session: Session, token: str | None = None) -> web.Application:
    """The app: ``/`` the page, ``/static/*`` its files, ``/api/*`` its JSON."""
    static = resources.files("soc_async.annotate") / "static"
    viewer_css = (resources.files("soc_async.view") / "static" / "app.css").read_bytes()
    page = (static / "index.html").read_bytes()

    @web.middleware
    async def guard(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if token is not None and request.path.startswith("/api/"):
            # The page and its scripts hold no data; the answers and conversations do.
            given = request.query.get("token") or request.headers.get("X-Annotate-Token", "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                return _error(403, "a token is needed: open the URL the server printed")
        response: web.StreamResponse = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self'"
        )
        return response

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "viewer.css":
            return web.Response(body=viewer_css, content_type="text/css", charset="utf-8")
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=(static / name).read_bytes(), content_type=ASSETS[name], charset="utf-8"
        )

    async def start(request: web.Request) -> web.Response:
        rater = _rater(request)
        body = {
            "mode": session.plan.mode,
            "rubric": _rubric_view(session.rubric),
            **session.progress(rater),
        }
        return web.json_response(body)

    async def item(request: web.Request) -> web.Response:
        rater = _rater(request)
        item_id = request.query.get("id", "")
        plan_item = session.plan.item(item_id)
        if plan_item is None:
            return _error(404, f"item {item_id!r}: not in this session's sample")
        if not plan_item.shared:
            # Held for this rater while it is open, so another is not handed it too.
            for k in [k for k, r in session.claimed.items() if r == rater]:
                del session.claimed[k]
            if not any(r != rater for r in session.done.get(item_id, ())):
                session.claimed.setdefault(item_id, rater)
        body = {
            "id": item_id,
            "mode": session.plan.mode,
            **_item_view(session, item_id),
            "answer": _answer_view(session.answers.get((rater, item_id))),
            **session.progress(rater),
        }
        return web.json_response(body)

    async def answer(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "expected a JSON object")
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        try:
            record = make_answer(body, rubric=session.rubric, plan=session.plan, at=utc_now())
        except AnswerError as exc:
            return _error(400, str(exc))
        # fsync off the event loop: the other rater's requests go on meanwhile.
        await asyncio.to_thread(session.log.append, record)
        session.record(record)
        if session.claimed.get(record.item) == record.rater:
            del session.claimed[record.item]
        return web.json_response({"saved": record.item, **session.progress(record.rater)})

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/api/start", start)
    app.router.add_get("/api/item", item)
    app.router.add_post("/api/answer", answer)
    return app


def run_server(session: Session, *, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve ``session`` until Ctrl-C; ``on_ready(url)`` once listening (the URL has the
    token when ``host`` is not loopback)."""
    token = None if is_loopback(host) else secrets.token_urlsafe(18)

    async def main() -> None:
        runner = web.AppRunner(make_app(session, token), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise InputError(f"--port {port}: cannot listen on {host} ({exc.strerror})") from exc
        bound = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{bound}/" + (f"?token={token}" if token else ""))
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("annotate: stopped", file=sys.stderr)
    finally:
        session.log.close()
