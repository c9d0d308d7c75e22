"""Webhooks: signed (Standard Webhooks) POSTs of batch, job and pipeline-run events to the
URLs a tenant subscribed, each delivery a job of the queue (retried with backoff, dead-lettered
when the receiver refuses). :func:`verify` is for receivers."""

from genspool.webhooks.signing import WebhookVerificationError, new_secret, sign, verify

__all__ = ["WebhookVerificationError", "new_secret", "sign", "verify"]
