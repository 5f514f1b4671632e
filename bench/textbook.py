"""(b) The textbook approach: validate with Pydantic, answer 202, and in a BackgroundTask render
the Jinja2 templates, build an EmailMessage and send it with `aiosmtplib.send` over a new
connection per mail. Nothing is stored.

Settings: SMTP_HOST, SMTP_PORT, TEMPLATES_DIR from the environment.
"""

from __future__ import annotations

import os
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from fastapi import BackgroundTasks, FastAPI
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, EmailStr

app = FastAPI()
env = Environment(
    loader=FileSystemLoader(os.environ.get("TEMPLATES_DIR", "templates")),
    autoescape=select_autoescape(["html"]),
)


class Notification(BaseModel):
    template: str
    to: list[EmailStr]
    context: dict[str, Any] = {}


async def deliver(notification: Notification) -> None:
    def render(part: str) -> str:
        return env.get_template(f"{notification.template}/{part}").render(**notification.context)

    message = EmailMessage()
    message["From"] = "Notifier <noreply@example.com>"
    message["To"] = ", ".join(notification.to)
    message["Subject"] = render("subject.txt").strip()
    message.set_content(render("body.txt"))
    message.add_alternative(render("body.html"), subtype="html")
    await aiosmtplib.send(
        message,
        hostname=os.environ.get("SMTP_HOST", "127.0.0.1"),
        port=int(os.environ.get("SMTP_PORT", "1025")),
    )


@app.post("/v1/notifications", status_code=202)
async def accept(notification: Notification, background: BackgroundTasks) -> dict[str, str]:
    background.add_task(deliver, notification)
    return {"status": "queued"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
