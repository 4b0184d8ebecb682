"""Fixtures for the admin tests: signed-in browsers-in-a-client, one per organization."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from agent_stream.models import User
from agent_stream.store import Store
from tests.conftest import MakeTenant, Tenant

PASSWORD = "correct horse battery"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF_RE.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


@dataclass
class Page:
    status: int
    html: str
    url: str
    headers: Any


@dataclass
class Operator:
    """A person signed in to the admin: GET pages and POST forms like a browser would."""

    client: TestClient
    user: User
    tenant: Tenant
    csrf: str = ""

    async def get(self, path: str, **kwargs: Any) -> Page:
        response = await self.client.get(path, **kwargs)
        return await self._page(response)

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> Page:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        response = await self.client.post(path, data=form, **kwargs)
        return await self._page(response)

    async def _page(self, response: ClientResponse) -> Page:
        html = await response.text()
        if match := _CSRF_RE.search(html):
            self.csrf = match.group(1)
        return Page(response.status, html, str(response.url), response.headers)


async def sign_in(client: TestClient, email: str, password: str) -> ClientResponse:
    """Through the real login form: its page sets the pre-session CSRF cookie."""
    page = await client.get("/login")
    return await client.post(
        "/login",
        data={
            "csrf_token": csrf_of(await page.text()),
            "email": email,
            "password": password,
        },
    )


async def make_operator(
    client: TestClient,
    store: Store,
    tenant: Tenant,
    *,
    admin: bool = True,
    email: str | None = None,
) -> Operator:
    user = await store.create_user(
        organization_id=tenant.org_id,
        email=email or f"{'admin' if admin else 'member'}-{tenant.org_id}@example.com",
        password=PASSWORD,
        is_admin=admin,
    )
    client.session.cookie_jar.clear()
    response = await sign_in(client, user.email, PASSWORD)
    assert response.status == 200, await response.text()
    operator = Operator(client, user, tenant)
    await operator.get("/agents")
    return operator


@pytest.fixture
async def operator(client: TestClient, store: Store, tenant: Tenant) -> Operator:
    """An organization admin, signed in, in the `tenant` organization."""
    return await make_operator(client, store, tenant)


@pytest.fixture
async def other_tenant(make_tenant: MakeTenant) -> Tenant:
    """A second organization, whose things the operator must never see."""
    return await make_tenant(
        name="Other Org", domain="other.cloudonix.net", token="cx-other-token-ZZZZ-9876543210"
    )
