"""Verifies a Standard Webhooks signature with the reference Python library (standardwebhooks).

Usage: verify_signature.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body
Prints "verified" and exits 0, or prints the library's error and exits 1.
"""
import sys

from standardwebhooks.webhooks import Webhook

secret, msg_id, timestamp, signature = sys.argv[1:5]
body = sys.stdin.buffer.read()
try:
    Webhook(secret).verify(
        body,
        {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature},
    )
except Exception as err:  # noqa: BLE001 - report whatever the library raised
    print(f"rejected: {type(err).__name__}: {err}")
    sys.exit(1)
print("verified")
