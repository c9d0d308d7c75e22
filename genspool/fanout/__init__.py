"""Parallel fan-out (pattern 5): one request to several models, agents or pieces of work at once.

A fan-out is a parent job (model :data:`~genspool.fanout.spec.FANOUT_MODEL`) whose branches are
ordinary child jobs on the same queue, under the same limits, retries, tenants and events. The
API turns a request into a :class:`~genspool.fanout.spec.Plan` (routes matched, templates
rendered, prompts counted); a worker's coordinator (:mod:`genspool.fanout.coordinator`) submits
the branches, follows them, cancels what is no longer needed, and aggregates
(:mod:`genspool.fanout.aggregate`).
"""
