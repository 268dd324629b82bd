"""A tiny shop: orders committed together with their background jobs.

* :mod:`examples.shop.models`: the application's own declarative models.
* :mod:`examples.shop.tasks`: the application's task registry.
* :mod:`examples.shop.app`: places orders (enqueueing jobs in the same transaction)
  and runs a worker in burst mode: ``python -m examples.shop.app``.

The worker can also run from the command line::

    python -m backfill_sa worker --tasks examples.shop.tasks:make_registry --burst
"""
