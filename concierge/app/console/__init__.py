"""The staff console at ``/console``: one page, one script, one stylesheet, an icon, no build step.

Plain JavaScript against the operator API (no library, so nothing to pin), served with
a strict Content-Security-Policy: only this origin's script, style and API, no inline
code, Trusted Types required (the page builds its DOM from text, never from markup),
no framing, no form posts. The files ship inside the package.
"""

from __future__ import annotations

from importlib import resources

from quart import Blueprint, Response

CONSOLE_PATH = "/console"
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
_FILES = {
    "page": ("console.html", "text/html; charset=utf-8"),
    "script": ("console.js", "text/javascript; charset=utf-8"),
    "style": ("console.css", "text/css; charset=utf-8"),
    "icon": ("favicon.svg", "image/svg+xml"),
}


def console_blueprint() -> Blueprint:
    """``GET /console`` and its two assets, each with the console's security headers."""
    static = resources.files(__package__).joinpath("static")
    bodies = {
        name: (static.joinpath(file).read_bytes(), content_type)
        for name, (file, content_type) in _FILES.items()
    }
    bp = Blueprint("console", __name__)

    def serve(name: str) -> Response:
        body, content_type = bodies[name]
        return Response(body, status=200, content_type=content_type, headers=_HEADERS)

    @bp.get(CONSOLE_PATH)
    async def page() -> Response:
        return serve("page")

    @bp.get(f"{CONSOLE_PATH}/console.js")
    async def script() -> Response:
        return serve("script")

    @bp.get(f"{CONSOLE_PATH}/console.css")
    async def style() -> Response:
        return serve("style")

    @bp.get(f"{CONSOLE_PATH}/favicon.svg")
    async def icon() -> Response:
        return serve("icon")

    return bp
