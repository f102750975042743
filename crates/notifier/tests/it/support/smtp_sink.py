"""An SMTP sink (aiosmtpd) for the notifier's e-mail tests.

Usage: smtp_sink.py PORT. Prints READY once listening on 127.0.0.1:PORT, then one JSON line per
message, parsed by Python's e-mail package (an independent MIME parser). Stops when stdin closes.
"""
import email
import json
import sys
from email import policy

from aiosmtpd.controller import Controller


class Sink:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        print(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "from": str(message["from"]),
                    "to": str(message["to"]),
                    "subject": str(message["subject"]),
                    "message_id": str(message["message-id"]),
                    "content_type": message.get_content_type(),
                    "text": text.get_content() if text is not None else None,
                    "html": html.get_content() if html is not None else None,
                }
            ),
            flush=True,
        )
        return "250 Message accepted for delivery"


controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print("READY", flush=True)
sys.stdin.read()
controller.stop()
