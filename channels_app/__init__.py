"""Channels: each channel's job (ChannelPolicy + lint), provider backends, delivery, receipts, inbox.

Settings (orchestrator/settings.py, `CHANNELS`): a backend per channel by dotted path (env
CHANNEL_<EMAIL|SMS|PUSH|IN_APP>_BACKEND); email uses Django's EMAIL_BACKEND, so SMTP or any
django-anymail ESP works by settings; the retry schedule (CHANNEL_RETRY_*), the claim lease, the
sweeper's re-drive delay, the Twilio-style SMS API (SMS_HTTP_*), Web Push VAPID keys (WEBPUSH_*) and
webhook shared secrets (CHANNEL_WEBHOOK_TOKENS). The sweeper `channels_app.delivery.deliveries_sweep`
is registered in ORCHESTRATOR["DUE_WORK"].
"""
