"""Small helpers for web frameworks; each module imports its framework only when used.

* :mod:`.fastapi`: a request-scoped AsyncSession dependency, a lifespan that runs a
  worker in the same process, the admin app mounted behind the application's auth
  (extra ``fastapi``).
* :mod:`.flask`: the ``flask backfill worker`` command and sessions for tests
  (extra ``flask``).

See ``docs/integrations.md``.
"""
