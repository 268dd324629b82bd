"""``python -m backfill_sa``: the command line (see :mod:`backfill_sa.cli`)."""

from backfill_sa.cli import main

raise SystemExit(main())
