"""Writing a planned carry into the new run (:mod:`.carry` plans it): the planned edits and the
``carry`` record event in one transaction of the new run's edit log, each checked against the
state as it is then (:func:`record_plan`); ``carry.json``, the carry's summary
(:func:`write_summary`); and the curated state written back into the run, as the studio writes
it (:func:`write_curated_state`). ``nw``: the new run's side of a carry (``carry._Side``: its
``run``, ``ids``, edit ``log`` and curated ``state``).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from ..errors import InputError, RunLockedError
from ..rundir import RunDir
from .state import EditConflict
from .writer import StateWriter

log = logging.getLogger(__name__)

#: the log event that records a carry (it changes no state)
CARRY_EVENT = "carry"


def write_summary(run: RunDir, summary: dict, tries: int = 20) -> None:
    """``carry.json``, under the folder's lock (a studio writing its state holds it a moment)."""
    for k in range(tries):
        try:
            with run.writing("carry"):
                run.write_carry(summary)
            return
        except RunLockedError:
            if k == tries - 1:
                raise
            time.sleep(0.5)


def record_plan(nw, from_run_id: str, from_seq: int, plan: list, since: int | None = None,
           last: int | None = None) -> tuple[dict, int, list, int]:
    """Record the planned edits and the ``carry`` event in one transaction of the new run's log
    (each checked against the state as it is then, as the studio checks an edit). ``since``:
    the previous run's edit the last carry reached, ``last``: that carry's event here (None
    for the first); another carry from the same run meanwhile is a conflict."""
    st, lg = nw.state, nw.log
    client = f"carried from {from_run_id}"
    counts: dict[str, int] = defaultdict(int)
    moved = 0
    skipped = []
    with lg.writing():
        for ev in lg.events(since=st.seq):  # a studio's edits made meanwhile first
            st.apply(ev)
        carries = [e.seq for e in lg.events() if e.kind == CARRY_EVENT and e.payload.get("from_run_id") == from_run_id]
        if (carries[-1] if carries else None) != last:
            raise EditConflict(f"run {from_run_id} was carried into this run meanwhile")
        created = None
        made: dict[str, int] = {}  # "made:<previous cluster>" -> the cluster a carried move made for it
        for kind, req, what, extra in plan:
            if req.get("clusters") == ["created"]:
                if created is None:
                    continue
                req = {**req, "clusters": [created]}
            req = _made(req, made)
            if req is None:  # names a part a carried move did not make (its move skipped, listed)
                continue
            if kind == "move":
                created = None
            try:
                payload = st.prepare(kind, req)
            except (InputError, EditConflict) as e:
                skipped.append({"what": what, "edit": kind, "reason": str(e)})
                continue
            ev = lg.insert(kind, {**payload, "carried_from": from_run_id, **extra}, client)
            st.apply(ev)
            if kind == "move":
                created = (payload.get("create") or {}).get("id")
                moved += len(payload["items"])
                if created is not None and extra.get("carried_cluster") is not None:
                    made[f"made:{extra['carried_cluster']}"] = created
            counts[what] += 1
        ev = lg.insert(CARRY_EVENT, {"from_run_id": from_run_id, "from_seq": from_seq, "since": since,
                                     "events": int(sum(counts.values()))},
                       client)
        st.apply(ev)
    return dict(counts), moved, skipped, st.seq


def _made(req: dict, made: dict[str, int]) -> dict | None:
    """``req`` with the clusters it names ``made:<previous cluster>`` (a split part a carry
    makes again, ``carry._plan_split_parts``) replaced by the one made; None when it was not made."""
    def one(v):
        return made.get(v, v) if isinstance(v, str) and v.startswith("made:") else v

    out = {**req, **({"to": one(req["to"])} if "to" in req else {}),
           **({"clusters": [one(c) for c in req["clusters"]]} if req.get("clusters") else {})}
    left = [v for v in [out.get("to"), *(out.get("clusters") or [])] if isinstance(v, str) and v.startswith("made:")]
    return None if left else out


def write_curated_state(nw) -> None:
    """The curated state written back into the new run (``curated.json``, ``curated_*``), as
    the studio writes it; a studio open on the run writes it itself when its folder is busy."""
    st = nw.state
    if not st.done:
        return
    writer = StateWriter(nw.run, nw.ids, nw.run.read_extra("imagenet_probs", mmap=True),
                         write_state=lambda: st.seq, replaced=lambda: False)
    try:
        writer.write(st.seq, st.labels.copy(), st.cluster_table(), st.status(),
                     {i: list(t) for i, t in st.item_tags.items()},
                     level_names={k: dict(v) for k, v in st.level_names.items()})
    except RunLockedError as e:
        log.warning("carry: the curated state is in the edit log but could not be written into "
                    "the run now (%s); the studio writes it when it opens the run", e)
