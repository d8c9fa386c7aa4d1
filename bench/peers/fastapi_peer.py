"""A Telegram bot written the usual FastAPI way, in one of the two shapes such bots take.

``PEER_MODE=sync``: the webhook handler shows "typing...", asks the model, sends the
reply with ``sendMessage`` and only then returns 200: Telegram's connection stays busy
for the whole turn, and a crash loses nothing Telegram would not deliver again.
``PEER_MODE=background``: the handler returns 200 at once and answers in a
``BackgroundTask``: fast, but a crash loses every turn in progress, since Telegram
already counts them as delivered. Configured by environment variables (see
``bench_turns.py``); served by uvicorn, one process.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import uvicorn
from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Request

ANSWER_IN_BACKGROUND = os.environ["PEER_MODE"] == "background"
BOT_TOKEN = os.environ["BOT_TOKEN"]
WEBHOOK_SECRET = os.environ["WEBHOOK_SECRET"]
TELEGRAM_API = os.environ.get("TELEGRAM_API_BASE_URL", "https://api.telegram.org")
LLM_BASE_URL = os.environ["LLM_BASE_URL"]
LLM_API_KEY = os.environ["LLM_API_KEY"]
LLM_MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
SYSTEM_PROMPT = "You are the parish's assistant. Answer briefly and kindly."

http: httpx2.AsyncClient


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global http
    # httpx2: httpx's maintained fork, whose connection pool does not slow down with the
    # number of waiting requests (httpx's does, and collapses under a burst). No pool
    # timeout: a burst waits for a connection rather than dropping turns.
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, pool=None)) as client:
        http = client
        yield


app = FastAPI(lifespan=lifespan)


async def telegram(method: str, **params: Any) -> Any:
    response = await http.post(f"{TELEGRAM_API}/bot{BOT_TOKEN}/{method}", json=params)
    response.raise_for_status()
    return response.json()["result"]


async def ask_model(text: str) -> str:
    response = await http.post(
        f"{LLM_BASE_URL}/chat/completions",
        headers={"Authorization": f"Bearer {LLM_API_KEY}"},
        json={
            "model": LLM_MODEL,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
            ],
        },
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


async def answer(chat_id: int, text: str) -> None:
    await telegram("sendChatAction", chat_id=chat_id, action="typing")
    reply = await ask_model(text)
    await telegram("sendMessage", chat_id=chat_id, text=reply)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/webhook")
async def webhook(
    request: Request,
    background: BackgroundTasks,
    x_telegram_bot_api_secret_token: str | None = Header(default=None),
) -> dict[str, bool]:
    if x_telegram_bot_api_secret_token != WEBHOOK_SECRET:
        raise HTTPException(status_code=403)
    update = await request.json()
    message = update.get("message") or {}
    if "text" in message:
        chat_id, text = message["chat"]["id"], message["text"]
        if ANSWER_IN_BACKGROUND:
            background.add_task(answer, chat_id, text)
        else:
            await answer(chat_id, text)
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
