"""All runtime SQL, as SQLAlchemy Core builders, one module per entity.

Module and function names read entity first, then verb (``jobs_insert``,
``jobs_runtime.claim_batch``), so a sorted listing is a catalogue of everything the
queue does to the database.
"""
