"""The studio: review, fix and name a run's clusters in a browser (``mediacluster studio RUN``).

Every edit is an event in ``RUN/edits.sqlite`` (:mod:`.editlog`, handed out by
``RunDir.edits()``); the curated state is derived from the events (:mod:`.state`) and written
back into the run (``assignments.curated_cluster``, ``curated.json``) for the rest of the tool.
:mod:`.session` holds one open run (data, state, edits) and delegates to :mod:`.media`
(thumbnails, previews, sounds), :mod:`.search`, :mod:`.split` (split previews),
:mod:`.levels`, :mod:`.writer` (the curated state written back), :mod:`.exports` and
:mod:`.publish`; :mod:`.app` serves it over HTTP with the shared web stack
(:mod:`mediacluster.web`), and ``static/`` is the front end (plain JavaScript and CSS,
shipped as package data).

Kept light on purpose: ``rundir`` imports :mod:`.editlog` from here, so nothing heavy may be
imported at package level.
"""
