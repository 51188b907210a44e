"""Operator-level GPU cost model grounded in measured profiles.

* :mod:`llmplan.opcost.collectives` -- NCCL all-reduce and send/recv pricing
  (``allreduce_time``, ``send_recv_time``): latency + steps + bus bytes / (link bandwidth x efficiency),
  fitted on Vidur's A100 NCCL measurements.
* :mod:`llmplan.opcost.params` -- the fitted parameter table (``fitted.json``, written by
  ``benchmarks/fit_costmodel.py``; no raw data is committed).
"""
