"""All runtime SQL, as SQLAlchemy Core builders, one module per entity.

Module and function names read entity first, then verb (``jobs_insert``,
``jobs_runtime.claim_batch``), so a sorted listing is a catalogue of everything the
queue does to the database.

The worker does not compile them at run time: :mod:`.render` writes the SQL of
:mod:`.jobs_runtime` and :mod:`.workers` into :mod:`.worker_sql` (regenerate with
``python -m backfill_sa.statements.render``; a test fails while the two disagree), so
a worker process never loads SQLAlchemy.
"""
