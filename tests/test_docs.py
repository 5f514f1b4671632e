"""The documentation pages load everything from the service itself: they work offline."""

from __future__ import annotations

import re

import httpx
import pytest

# every URL a page can make the browser fetch: src/href attributes, CSS url(), and a
# protocol-relative or absolute address anywhere in the page
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_ABSOLUTE = re.compile(r"(?:[a-z][a-z0-9+.-]*:)?//[^\s\"'<>]+", re.I)


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"text/javascript": 1, "text/css": 1, "image/png": 1}),
        ("/redoc", {"text/javascript": 1, "image/png": 1}),
    ],
)
async def test_docs_pages_load_their_assets_from_the_service(
    client: httpx.AsyncClient, page: str, assets: dict[str, int]
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert _ABSOLUTE.findall(html) == [], "the page refers to another host"
    assert "/openapi.json" in html
    found: dict[str, int] = {}
    for url in _REFERENCE.findall(html):
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        kind = asset.headers["content-type"].split(";")[0]
        found[kind] = found.get(kind, 0) + 1
        assert len(asset.content) > 500, url
    assert found == assets


async def test_swagger_ui_asks_no_outside_validator(client: httpx.AsyncClient) -> None:
    assert '"validatorUrl": null' in (await client.get("/docs")).text


async def test_docs_pages_and_assets_stay_out_of_the_openapi_document(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]
