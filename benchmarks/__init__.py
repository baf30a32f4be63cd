"""The benchmarks: ``suite`` is what ``digest bench`` runs; the scripts beside it time one part each.

They live outside the ``digest`` package because they need a checkout: the workload comes from
tests/samples.py (recorded papers in tests/fixtures), and the send part starts an SMTP sink (aiosmtpd,
a dev dependency). A built wheel holds none of this.
"""
