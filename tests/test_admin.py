"""The browser admin through the real app: sign-in, sessions, CSRF, throttling, scoping
across organizations, and what each page says to the person reading it."""

from __future__ import annotations

import html as htmllib
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.admin.common import SESSION_COOKIE, token_hash
from agent_stream.providers import PROVIDERS
from agent_stream.store import MIGRATIONS, Store
from agent_stream.store.migrations import MIGRATIONS_DIR
from agent_stream.workflow import starter_definition
from tests.admin_fixtures import (
    PASSWORD,
    Operator,
    csrf_of,
    make_operator,
    operator,
    other_tenant,
)
from tests.conftest import Tenant, stored_rows

__all__ = ["operator", "other_tenant"]  # fixtures


def cookie(client: TestClient, name: str) -> Any:
    return next((c for c in client.session.cookie_jar if c.key == name), None)


# -- first run -----------------------------------------------------------------------------------


async def test_first_run_creates_organization_admin_and_starter_agent(
    client: TestClient, store: Store, settings: Any
) -> None:
    response = await client.get("/", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/setup"
    assert (await client.get("/login", allow_redirects=False)).headers["Location"] == "/setup"
    page = await client.get("/setup")
    html = await page.text()
    assert page.status == 200
    assert "Welcome to Agent Stream" in html and "Create organization" in html
    token = csrf_of(html)

    bad = await client.post(
        "/setup",
        data={
            "csrf_token": token,
            "organization": "Acme",
            "email": "ops@acme.test",
            "password": "long enough",
            "password_again": "different",
        },
    )
    assert bad.status == 400
    assert "The two passwords differ." in await bad.text()
    assert await store.count_users() == 0

    response = await client.post(
        "/setup",
        data={
            "csrf_token": token,
            "organization": "Acme",
            "email": "ops@acme.test",
            "password": "long enough",
            "password_again": "long enough",
        },
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"].startswith("/agents/")
    set_cookie = response.headers.getall("Set-Cookie")
    session_header = next(h for h in set_cookie if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in session_header and "SameSite=Lax" in session_header

    user = await store.get_user_by_email("ops@acme.test")
    assert user.is_admin
    [agent] = await store.list_workflows(user.organization_id)
    assert agent.name == "Front desk" and agent.status == "draft"
    assert [n["id"] for n in agent.definition["nodes"]] == ["start", "book", "human", "bye"]
    editor = await client.get(response.headers["Location"])
    assert "Welcome! Here is your starter agent." in await editor.text()

    # passwords are hashed; sessions are stored by a hash of the cookie, never the cookie
    [password_hash] = [r[0] for r in await stored_rows(settings, "SELECT password_hash FROM users")]
    stored = [r[0] for r in await stored_rows(settings, "SELECT token_hash FROM sessions")]
    assert password_hash.startswith("scrypt$") and "long enough" not in password_hash
    session_value = cookie(client, SESSION_COOKIE).value
    assert stored == [token_hash(session_value)] and session_value not in stored

    # the first run happens once
    assert (await client.get("/setup", allow_redirects=False)).headers["Location"] == "/login"
    again = await client.post(
        "/setup",
        data={
            "csrf_token": token,
            "organization": "Evil",
            "email": "evil@x.test",
            "password": "long enough",
            "password_again": "long enough",
        },
        allow_redirects=False,
    )
    assert again.status == 303 and again.headers["Location"] == "/login"
    assert await store.count_users() == 1


# -- sign-in, sessions, sign-out -----------------------------------------------------------------


async def test_every_page_but_login_and_first_run_needs_a_session(
    client: TestClient, tenant: Tenant
) -> None:
    uuid = tenant.workflow.uuid
    for path in [
        "/agents",
        f"/agents/{uuid}",
        f"/agents/{uuid}/settings",
        f"/agents/{uuid}/runs",
        f"/agents/{uuid}/runs/1",
        f"/agents/{uuid}/runs/1/recording",
        f"/agents/{uuid}/runs/1/status",
        "/telephony",
        "/telephony/1",
        "/users",
    ]:
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/login?next="), path
    response = await client.post("/agents", data={"name": "x"}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    login = await client.get("/login")
    assert login.status == 200 and "Sign in" in await login.text()


async def test_a_session_cookie_that_is_not_utf8_is_no_session(
    client: TestClient, tenant: Tenant, non_utf8_headers: str
) -> None:
    """aiohttp reads a cookie's bytes that are not UTF-8 as lone surrogates: no session."""
    cookie = {"Cookie": f"agent_stream_session=abc{non_utf8_headers}def"}
    response = await client.get("/agents", headers=cookie, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/login?next=")


async def test_sign_in_goes_to_next_and_sign_out_ends_the_session_server_side(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    await store.create_user(
        organization_id=tenant.org_id, email="ann@example.com", password=PASSWORD
    )
    page = await client.get(f"/login?next=/agents/{tenant.workflow.uuid}/runs")
    html = await page.text()
    wrong = await client.post(
        "/login",
        data={
            "csrf_token": csrf_of(html),
            "email": "ann@example.com",
            "password": "nope",
            "next": f"/agents/{tenant.workflow.uuid}/runs",
        },
    )
    assert wrong.status == 401
    assert "Wrong email or password." in await wrong.text()
    response = await client.post(
        "/login",
        data={
            "csrf_token": csrf_of(html),
            "email": "ANN@example.com",
            "password": PASSWORD,
            "next": f"/agents/{tenant.workflow.uuid}/runs",
        },
        allow_redirects=False,
    )
    assert response.status == 303
    assert response.headers["Location"] == f"/agents/{tenant.workflow.uuid}/runs"
    session_value = cookie(client, SESSION_COOKIE).value

    agents = await client.get("/agents")
    html = await agents.text()
    assert "ann@example.com" in html and "Sign out" in html
    out = await client.post("/logout", data={"csrf_token": csrf_of(html)}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    assert await store.session_user(token_hash(session_value)) is None
    # the old cookie no longer opens anything, even if a browser kept it
    client.session.cookie_jar.update_cookies({SESSION_COOKIE: session_value})
    response = await client.get("/agents", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/login")


async def test_sign_in_never_redirects_off_site(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    await store.create_user(
        organization_id=tenant.org_id, email="bo@example.com", password=PASSWORD
    )
    page = await client.get("/login")
    response = await client.post(
        "/login",
        data={
            "csrf_token": csrf_of(await page.text()),
            "email": "bo@example.com",
            "password": PASSWORD,
            "next": "//evil.example/phish",
        },
        allow_redirects=False,
    )
    assert response.headers["Location"] == "/agents"


async def test_failed_sign_ins_are_throttled_per_email_and_address(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    await store.create_user(
        organization_id=tenant.org_id, email="cy@example.com", password=PASSWORD
    )
    html = await (await client.get("/login")).text()
    token = csrf_of(html)
    for _ in range(5):
        response = await client.post(
            "/login", data={"csrf_token": token, "email": "cy@example.com", "password": "guess"}
        )
        assert response.status == 401
    blocked = await client.post(
        "/login", data={"csrf_token": token, "email": "cy@example.com", "password": PASSWORD}
    )
    text = await blocked.text()
    assert blocked.status == 429
    assert "Too many failed sign-ins" in text and "Try again in 15 minutes" in text
    assert 1 <= int(blocked.headers["Retry-After"]) <= 900
    assert cookie(client, SESSION_COOKIE) is None
    # another email from the same address is not blocked by this one's failures
    other = await client.post(
        "/login",
        data={"csrf_token": token, "email": tenant_email(tenant), "password": "pw"},
        allow_redirects=False,
    )
    assert other.status == 303


def tenant_email(tenant: Tenant) -> str:
    return f"user{tenant.org_id}@example.com"


async def test_forms_without_the_sessions_csrf_token_are_refused(
    client: TestClient, operator: Operator, store: Store
) -> None:
    before = len(await store.list_workflows(operator.tenant.org_id))
    for token in (None, "", "forged-token-1234567890"):
        data = {"name": "Forged"} | ({"csrf_token": token} if token is not None else {})
        page = await operator.post("/agents", data, csrf=False)
        assert page.status == 403
        assert "Form expired" in page.html and "security token" in page.html
    assert len(await store.list_workflows(operator.tenant.org_id)) == before
    # a token from before sign-in (the login form's) does not work after it either
    page = await operator.post(
        "/telephony",
        {
            "csrf_token": cookie(client, "agent_stream_csrf").value,
            "domain_id": "x",
            "bearer_token": "y",
        },
        csrf=False,
    )
    assert page.status == 403
    # the login form itself needs its cookie-bound token
    client.session.cookie_jar.clear()
    response = await client.post(
        "/login", data={"email": "a@b.c", "password": "x", "csrf_token": "x"}
    )
    assert response.status == 403


# -- agents --------------------------------------------------------------------------------------


async def test_agents_list_create_rename_archive_restore(operator: Operator, store: Store) -> None:
    tenant = operator.tenant
    page = await operator.get("/agents")
    assert page.status == 200
    assert tenant.workflow.name in page.html and "Draft" in page.html
    assert "Runs today" in page.html and "Last run" in page.html

    page = await operator.post("/agents", {"name": ""})
    assert page.status == 400 and "Give the agent a name." in page.html
    page = await operator.post("/agents", {"name": "Night line"})
    assert page.status == 200 and "Agent created." in page.html
    uuid = page.url.rsplit("/", 1)[1]
    agent = await store.get_workflow(tenant.org_id, uuid)
    assert agent.name == "Night line" and agent.owner_user_id == operator.user.id

    page = await operator.post(f"/agents/{uuid}/rename", {"name": "Night desk"})
    assert "Agent renamed." in page.html
    assert (await store.get_workflow(tenant.org_id, uuid)).name == "Night desk"

    # from the list: rename goes back to the list
    page = await operator.post(f"/agents/{uuid}/rename", {"name": "Night owl", "back": "/agents"})
    assert page.url.endswith("/agents") and "Night owl" in page.html
    for elsewhere in ("//evil.example/x", "/\\evil.example", "/\t/evil.example", "https://evil.example"):
        page = await operator.post(
            f"/agents/{uuid}/rename", {"name": "Night desk", "back": elsewhere},
            allow_redirects=False,
        )
        assert (page.status, page.headers["Location"]) == (303, f"/agents/{uuid}/settings")

    page = await operator.post(f"/agents/{uuid}/archive")
    assert "Agent archived" in page.html and "Archived" in page.html
    assert await store.find_stream_workflow(uuid) is None
    page = await operator.post(f"/agents/{uuid}/restore")
    assert "Agent restored." in page.html
    assert (await store.get_workflow(tenant.org_id, uuid)).status == "draft"


async def test_editor_header_has_the_more_options_menu_and_publish_keeps_the_uuid(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}")
    assert page.status == 200
    assert '<button type="button" class="icon-button" aria-label="More options"' in page.html
    assert (
        f'data-copy="{uuid}" data-toast="Agent UUID copied">Copy Agent UUID</button>' in page.html
    )
    assert "Publish" in page.html and "Draft" in page.html
    for node_id in ("start", "book", "human", "bye"):
        assert f'value="{node_id}"' in page.html
    assert "Raw JSON" in page.html and "&#34;global_prompt&#34;" in page.html

    page = await operator.post(f"/agents/{uuid}/publish")
    assert page.status == 200 and "The Agent UUID is unchanged" in page.html
    assert page.url.endswith(f"/agents/{uuid}")
    published = await store.get_workflow(operator.tenant.org_id, uuid)
    assert published.status == "published" and published.published_version == 1

    # a new draft after publishing: the header says so, and publishing again keeps the uuid
    page = await operator.post(
        f"/agents/{uuid}/prompt", {"global_prompt": "Be terse.", "revision": "2"}
    )
    assert "Saved as a new draft version" in page.html and "Unpublished changes" in page.html
    await operator.post(f"/agents/{uuid}/publish")
    assert (await store.get_workflow(operator.tenant.org_id, uuid)).published_version == 2


async def test_node_and_edge_forms_show_problems_next_to_their_fields(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    # a transfer node without destination: the message sits in node 2's destination field
    page = await operator.post(
        f"/agents/{uuid}/nodes/2",
        {
            "id": "human",
            "kind": "transfer",
            "say": "Connecting.",
            "destination": "",
            "revision": "1",
        },
    )
    assert page.status == 400
    assert 'id="node-2-destination-error"' in page.html
    section = page.html.split('id="node-2-destination-error"')[1].split("</ul>")[0]
    assert "a transfer node needs a destination" in section
    assert 'aria-invalid="true"' in page.html
    # a bad digit on an edge: next to edge 0's digit field
    page = await operator.post(
        f"/agents/{uuid}/edges/0",
        {"from": "start", "to": "book", "phrases": "yes", "dtmf": "x", "revision": "1"},
    )
    assert page.status == 400
    assert (
        "dtmf must be one digit" in page.html.split('id="edge-0-dtmf-error"')[1].split("</ul>")[0]
    )
    assert (await store.get_workflow(operator.tenant.org_id, uuid)).version == 1

    # a node added without an edge would be unreachable: said next to "Reached from"
    page = await operator.post(
        f"/agents/{uuid}/nodes/4",
        {"id": "hours", "kind": "end", "say": "We open at nine.", "revision": "1"},
    )
    assert page.status == 400
    reached_from = page.html.split('id="node-4-reached_from-error"')[1].split("</ul>")[0]
    assert "node &#39;hours&#39; is unreachable from the start node" in reached_from
    assert ">We open at nine.</textarea>" in page.html  # what was typed is kept

    # with the edge that reaches it, it is saved (a new draft version)
    page = await operator.post(
        f"/agents/{uuid}/nodes/4",
        {
            "id": "hours",
            "kind": "end",
            "say": "We open at nine.",
            "reached_from": "start",
            "phrases": "opening hours, when are you open",
            "dtmf": "2",
            "revision": "1",
        },
    )
    assert page.status == 200 and "Saved as a new draft version" in page.html
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert agent.version == 2 and agent.definition["nodes"][4]["id"] == "hours"
    assert agent.definition["edges"][-1] == {
        "from": "start",
        "to": "hours",
        "phrases": ["opening hours", "when are you open"],
        "dtmf": "2",
    }

    # renaming a node keeps its edges; editing an edge; deleting an edge and a node
    await operator.post(
        f"/agents/{uuid}/nodes/4",
        {
            "id": "opening",
            "kind": "end",
            "say": "Nine to five.",
            "interruptible": "on",
            "revision": "2",
        },
    )
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert agent.definition["edges"][-1]["to"] == "opening"
    await operator.post(
        f"/agents/{uuid}/edges/4",
        {
            "from": "start",
            "to": "opening",
            "phrases": "hours",
            "dtmf": "3",
            "fallback": "",
            "condition": "asks about hours",
            "revision": "3",
        },
    )
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert agent.definition["edges"][4] == {
        "from": "start",
        "to": "opening",
        "phrases": ["hours"],
        "dtmf": "3",
        "condition": "asks about hours",
    }
    page = await operator.post(f"/agents/{uuid}/nodes/4/delete", {"revision": "4"})
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert [n["id"] for n in agent.definition["nodes"]] == ["start", "book", "human", "bye"]
    assert all("opening" not in (e["from"], e["to"]) for e in agent.definition["edges"])

    # deleting the start node is refused, with the reason
    page = await operator.post(f"/agents/{uuid}/nodes/0/delete", {"revision": str(agent.revision)})
    assert page.status == 400 and "was not deleted" in page.html and "no start node" in page.html


# -- edits are compare-and-set: a stale form is refused, not lost ---------------------------------

AGENT_CHANGED = "This agent was changed by someone else since you opened this page"
_REVISION_RE = re.compile(r'name="revision" value="(\d+)"')


def revisions_in(html: str) -> set[int]:
    """The revisions the page's forms were rendered from (hidden `revision` inputs)."""
    return {int(r) for r in _REVISION_RE.findall(html)}


def theirs() -> dict[str, Any]:
    """Another person's edit: same nodes and edges, another global prompt."""
    return starter_definition() | {"global_prompt": "Theirs."}


# (page the form is on, where it posts, what it sends)
AGENT_FORMS = [
    ("", "prompt", {"global_prompt": "Mine."}),
    ("", "nodes/1", {"id": "book", "kind": "agent", "say": "Mine.", "prompt": "Mine."}),
    ("", "nodes/2/delete", {}),
    ("", "edges/0", {"from": "start", "to": "book", "phrases": "mine", "dtmf": "1"}),
    ("", "edges/2/delete", {}),
    ("", "definition", {"definition": json.dumps(starter_definition() | {"global_prompt": "Mine."})}),
    ("", "publish", {}),
    ("/settings", "settings", {"engine": "scripted", "language": "fr"}),
    ("/settings", "rename", {"name": "Mine"}),
    ("/settings", "archive", {}),
]


@pytest.mark.parametrize(("shown_on", "action", "data"), AGENT_FORMS, ids=[f[1] for f in AGENT_FORMS])
async def test_a_stale_agent_form_is_refused_and_the_other_edit_stays(
    operator: Operator, store: Store, shown_on: str, action: str, data: dict[str, str]
) -> None:
    tenant = operator.tenant
    uuid = tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}{shown_on}")
    assert page.status == 200 and revisions_in(page.html) == {1}  # every form of the page

    # someone else saves through the API while the page is open
    response = await operator.client.patch(
        f"/api/v1/workflows/{uuid}", json={"name": "Theirs", "definition": theirs()},
        headers=tenant.headers,
    )
    assert response.status == 200
    after_theirs = await store.get_workflow(tenant.org_id, uuid)
    assert after_theirs.revision == 2

    page = await operator.post(f"/agents/{uuid}/{action}", data | {"revision": "1"})
    assert page.status == 409 and AGENT_CHANGED in page.html
    assert revisions_in(page.html) == {2} and "Theirs" in page.html  # the page as it is now
    assert await store.get_workflow(tenant.org_id, uuid) == after_theirs  # nothing lost

    # the page shown again is a fresh form: the same change now goes through
    page = await operator.post(f"/agents/{uuid}/{action}", data | {"revision": "2"})
    assert page.status == 200 and AGENT_CHANGED not in page.html, page.html
    assert (await store.get_workflow(tenant.org_id, uuid)).revision == 3


async def test_a_stale_editor_form_keeps_the_other_edit_of_the_definition(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    (opened,) = revisions_in((await operator.get(f"/agents/{uuid}")).html)
    await store.update_workflow(operator.tenant.org_id, uuid, definition=theirs())
    page = await operator.post(
        f"/agents/{uuid}/prompt", {"global_prompt": "Stale.", "revision": str(opened)}
    )
    assert page.status == 409 and AGENT_CHANGED in page.html
    assert ">Theirs.</textarea>" in page.html  # the prompt as it is now, to edit again
    stored = await store.get_workflow(operator.tenant.org_id, uuid)
    assert stored.definition["global_prompt"] == "Theirs." and stored.version == 2


async def test_a_stale_telephony_form_is_refused_and_the_other_edit_stays(
    operator: Operator, store: Store
) -> None:
    tenant = operator.tenant
    (config,) = await store.list_telephony_configs(tenant.org_id)
    page = await operator.get(f"/telephony/{config.id}")
    assert revisions_in(page.html) == {config.revision}
    form = {"name": "Mine", "domain_id": config.account_id, "bearer_token": "",
            "from_numbers": "+15555550100"}

    response = await operator.client.patch(
        f"/api/v1/telephony-configurations/{config.id}", json={"name": "Theirs"},
        headers=tenant.headers,
    )
    assert response.status == 200
    after_theirs = await store.get_telephony_config(tenant.org_id, config.id)

    page = await operator.post(f"/telephony/{config.id}", form | {"revision": str(config.revision)})
    assert page.status == 409
    assert ("This telephony configuration was changed by someone else since you opened this "
            "page") in page.html
    assert 'value="Theirs"' in page.html and revisions_in(page.html) == {after_theirs.revision}
    stored = await store.get_telephony_config(tenant.org_id, config.id)
    assert (stored.name, stored.from_numbers, stored.revision) == (
        "Theirs", after_theirs.from_numbers, after_theirs.revision)

    page = await operator.post(
        f"/telephony/{config.id}", form | {"revision": str(after_theirs.revision)}
    )
    assert page.status == 200 and "Telephony configuration saved." in page.html
    stored = await store.get_telephony_config(tenant.org_id, config.id)
    assert (stored.name, stored.from_numbers) == ("Mine", ["+15555550100"])


async def test_a_stale_quota_form_is_refused_and_the_other_edit_stays(
    operator: Operator, store: Store
) -> None:
    tenant = operator.tenant
    target = operator.user
    page = await operator.get("/users")
    form_html = page.html.split(f'id="quota-{target.id}">')[1].split("</form>")[0]
    (opened,) = revisions_in(form_html)
    assert opened == target.revision

    await store.set_user_quotas(
        tenant.org_id, target.id, monthly_minutes_limit=30, max_concurrent_calls=1
    )
    mine = {"monthly_minutes_limit": "500", "max_concurrent_calls": "9"}
    page = await operator.post(f"/users/{target.id}/quotas", mine | {"revision": str(opened)})
    assert page.status == 409
    assert "This user was changed by someone else since you opened this page" in page.html
    assert f'id="monthly-{target.id}" name="monthly_minutes_limit"' in page.html
    assert 'value="30"' in page.html  # the limits as they are now
    stored = await store.get_user(target.id)
    assert (stored.monthly_minutes_limit, stored.max_concurrent_calls) == (30, 1)

    page = await operator.post(
        f"/users/{target.id}/quotas", mine | {"revision": str(stored.revision)}
    )
    assert page.status == 200 and "Limits saved." in page.html
    stored = await store.get_user(target.id)
    assert (stored.monthly_minutes_limit, stored.max_concurrent_calls) == (500, 9)


async def test_a_form_without_a_revision_still_saves_and_a_garbled_one_is_a_400(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    page = await operator.post(f"/agents/{uuid}/prompt", {"global_prompt": "No revision."})
    assert page.status == 200 and "Saved as a new draft version" in page.html
    page = await operator.post(f"/agents/{uuid}/prompt", {"global_prompt": "x", "revision": "-1"})
    assert page.status == 400
    stored = await store.get_workflow(operator.tenant.org_id, uuid)
    assert stored.definition["global_prompt"] == "No revision."


async def test_raw_json_view_saves_whole_definitions_and_lists_every_problem(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    page = await operator.post(f"/agents/{uuid}/definition", {"definition": "{not json"})
    assert page.status == 400 and "Not valid JSON" in page.html
    assert "{not json" in page.html  # what was typed is kept
    bad = '{"nodes": [{"id": "a", "kind": "agent"}], "edges": [{"from": "a", "to": "zz"}]}'
    page = await operator.post(f"/agents/{uuid}/definition", {"definition": bad})
    assert page.status == 400
    assert "there is no start node" in page.html and "unknown node" in page.html
    good = (
        '{"version": 1, "nodes": [{"id": "s", "kind": "start", "say": "Hi."},'
        ' {"id": "e", "kind": "end", "say": "Bye."}],'
        ' "edges": [{"from": "s", "to": "e", "phrases": ["bye"], "fallback": true}]}'
    )
    page = await operator.post(f"/agents/{uuid}/definition", {"definition": good})
    assert page.status == 200
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert [n["id"] for n in agent.definition["nodes"]] == ["s", "e"]


# -- settings ------------------------------------------------------------------------------------


async def test_settings_page_shows_the_agent_uuid_stream_url_and_cxml(
    operator: Operator, client: TestClient
) -> None:
    uuid = operator.tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}/settings")
    assert page.status == 200
    html = page.html
    assert '<nav class="sidenav" aria-label="Settings sections">' in html
    assert '<a href="#agent-uuid">Agent UUID</a>' in html
    assert '<section id="agent-uuid"' in html and ">Agent UUID</h2>" in html
    assert (
        f'data-copy-target="agent-uuid-value" data-toast="Agent UUID copied">{uuid}</code>' in html
    )
    assert ">Copy UUID</button>" in html
    host = f"127.0.0.1:{client.port}"
    url = f"ws://{host}/api/v1/agent-stream/{uuid}?provider=cloudonix&amp;Domain=acme.cloudonix.net"
    assert url in html
    cxml = (
        f"&lt;Response&gt;&lt;Connect&gt;&lt;Stream url=&#34;ws://{host}/api/v1/agent-stream/"
        f"{uuid}?provider=cloudonix&amp;amp;Domain=acme.cloudonix.net&#34;/&gt;"
        "&lt;/Connect&gt;&lt;/Response&gt;"
    )
    assert cxml in html
    # behind a TLS proxy the URL is wss://
    page = await operator.get(f"/agents/{uuid}/settings", headers={"X-Forwarded-Proto": "https"})
    assert f"wss://{host}/api/v1/agent-stream/{uuid}?provider=cloudonix" in page.html
    # a proxy passes the host the client used on
    page = await operator.get(f"/agents/{uuid}/settings",
                              headers={"X-Forwarded-Host": "voice.example.com"})
    assert f"ws://voice.example.com/api/v1/agent-stream/{uuid}?provider=cloudonix" in page.html


async def test_a_forwarded_host_that_is_no_text_is_not_used(
    operator: Operator, client: TestClient, non_utf8_headers: str
) -> None:
    """Bytes that are not UTF-8 (read as lone surrogates) are no host name: the page shows
    the request's own host (it was a 500: no page can carry them)."""
    uuid = operator.tenant.workflow.uuid
    forwarded = {"X-Forwarded-Host": f"voice{non_utf8_headers}.example.com"}
    page = await operator.get(f"/agents/{uuid}/settings", headers=forwarded)
    assert page.status == 200
    assert f"ws://127.0.0.1:{client.port}/api/v1/agent-stream/{uuid}?provider=" in page.html


async def test_settings_page_shows_every_provider_s_url_and_snippet(
    operator: Operator, client: TestClient
) -> None:
    uuid = operator.tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}/settings", headers={"X-Forwarded-Proto": "https"})
    host = f"127.0.0.1:{client.port}"
    for provider in PROVIDERS.values():
        if not provider.needs_configuration:  # the browser's call: a button, nothing to paste
            assert f'id="connect-{provider.name}"' not in page.html
            continue
        assert f'id="connect-{provider.name}">{provider.title}</h4>' in page.html
        assert f"wss://{host}/api/v1/agent-stream/{provider.name}/{uuid}" in page.html
    twiml = (f"&lt;Response&gt;&lt;Connect&gt;&lt;Stream url=&#34;wss://{host}/api/v1/agent-stream/"
             f"twilio/{uuid}&#34;&gt;&lt;/Stream&gt;&lt;/Connect&gt;&lt;Hangup/&gt;&lt;/Response&gt;")
    assert twiml in page.html and ">Copy TwiML</button>" in page.html
    ncco = f'&#34;uri&#34;: &#34;wss://{host}/api/v1/agent-stream/vonage/{uuid}&#34;'
    assert ncco in page.html and ">Copy NCCO</button>" in page.html
    # Twilio speaks wss:// only: even a plain-http server shows it the wss URL
    plain = await operator.get(f"/agents/{uuid}/settings")
    assert f"wss://{host}/api/v1/agent-stream/twilio/{uuid}" in plain.html


async def test_settings_without_telephony_say_how_to_fill_the_domain(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    for config in await store.list_telephony_configs(tenant.org_id):
        await store.delete_telephony_config(tenant.org_id, config.id)
    op = await make_operator(client, store, tenant)
    page = await op.get(f"/agents/{tenant.workflow.uuid}/settings")
    assert "Domain=YOUR_DOMAIN.cloudonix.net" in page.html
    assert "add a telephony configuration" in page.html


async def test_voice_and_model_settings_keep_the_llm_key_masked_and_kept(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    key = "sk-live-VERYSECRET-abcdefgh1234"
    page = await operator.post(
        f"/agents/{uuid}/settings", {"engine": "llm", "llm_base_url": "ftp://x"}
    )
    assert page.status == 400
    base_url_errors = page.html.split('id="llm_base_url-error"')[1].split("</ul>")[0]
    assert "settings.llm.base_url must be an http(s) URL" in base_url_errors
    model_errors = page.html.split('id="llm_model-error"')[1].split("</ul>")[0]
    assert "settings.llm.model is required when settings.engine is llm" in model_errors
    page = await operator.post(
        f"/agents/{uuid}/settings",
        {
            "engine": "llm",
            "stt_provider": "embedded",
            "tts_provider": "embedded",
            "language": "en",
            "voice": "en-us",
            "max_duration_seconds": "300",
            "silence_timeout_seconds": "8",
            "llm_base_url": "https://llm.example/v1",
            "llm_model": "tiny",
            "llm_api_key": key,
        },
    )
    assert page.status == 200 and "Settings saved." in page.html
    assert key not in page.html and "Saved: ••••1234. Leave empty to keep it." in page.html
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    settings = agent.definition["settings"]
    assert settings["engine"] == "llm" and "stt" not in settings and "tts" not in settings
    assert settings["llm"] == {
        "base_url": "https://llm.example/v1",
        "model": "tiny",
        "api_key": key,
    }
    assert settings["max_duration_seconds"] == 300

    # the editor's raw JSON shows only the hint; saving it back keeps the key, and so does
    # the settings form without a key
    editor = await operator.get(f"/agents/{uuid}")
    assert key not in editor.html and "&#34;api_key_hint&#34;: &#34;••••1234&#34;" in editor.html
    raw = editor.html.split('name="definition"')[1].split(">", 1)[1].split("</textarea>")[0]
    page = await operator.post(f"/agents/{uuid}/definition", {"definition": htmllib.unescape(raw)})
    assert page.status == 200
    await operator.post(
        f"/agents/{uuid}/settings",
        {"engine": "llm", "llm_base_url": "https://llm.example/v1", "llm_model": "small"},
    )
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert agent.definition["settings"]["llm"]["api_key"] == key
    assert agent.definition["settings"]["llm"]["model"] == "small"
    # another endpoint needs the key again: the saved one is not sent to a new server
    await operator.post(
        f"/agents/{uuid}/settings",
        {"engine": "llm", "llm_base_url": "https://elsewhere.example/v1", "llm_model": "small"},
    )
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert "api_key" not in agent.definition["settings"]["llm"]
    # replacing, then removing
    await operator.post(
        f"/agents/{uuid}/settings",
        {
            "engine": "llm",
            "llm_base_url": "https://elsewhere.example/v1",
            "llm_model": "small",
            "llm_api_key": "sk-other-key-5678",
        },
    )
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert agent.definition["settings"]["llm"]["api_key"] == "sk-other-key-5678"
    await operator.post(
        f"/agents/{uuid}/settings",
        {
            "engine": "scripted",
            "llm_base_url": "https://elsewhere.example/v1",
            "llm_api_key_clear": "on",
        },
    )
    agent = await store.get_workflow(operator.tenant.org_id, uuid)
    assert "api_key" not in agent.definition["settings"].get("llm", {})


async def test_speech_providers_are_set_with_their_keys_masked(
    operator: Operator, store: Store
) -> None:
    uuid = operator.tenant.workflow.uuid
    stt_key, tts_key = "sk-stt-SECRET-aaaa1111", "sk-tts-SECRET-bbbb2222"
    page = await operator.get(f"/agents/{uuid}/settings")
    assert '<select id="stt_provider" name="stt_provider"' in page.html
    assert '<option value="openai">openai</option>' in page.html
    form = {
        "engine": "scripted",
        "stt_provider": "openai",
        "stt_model": "whisper-1",
        "stt_api_key": stt_key,
        "tts_provider": "openai",
        "tts_base_url": "https://speech.example/v1",
        "tts_voice": "alloy",
        "tts_api_key": tts_key,
    }
    page = await operator.post(f"/agents/{uuid}/settings", form)
    assert page.status == 200 and "Settings saved." in page.html
    assert stt_key not in page.html and tts_key not in page.html
    assert "Saved: ••••1111." in page.html and "Saved: ••••2222." in page.html
    settings = (await store.get_workflow(operator.tenant.org_id, uuid)).definition["settings"]
    assert settings["stt"] == {"provider": "openai", "model": "whisper-1", "api_key": stt_key}
    assert settings["tts"] == {
        "provider": "openai",
        "base_url": "https://speech.example/v1",
        "voice": "alloy",
        "api_key": tts_key,
    }
    editor = await operator.get(f"/agents/{uuid}")
    assert stt_key not in editor.html and tts_key not in editor.html

    # saved again without keys: both kept; one removed; an unknown provider is refused
    unchanged = {k: v for k, v in form.items() if not k.endswith("_api_key")}
    await operator.post(f"/agents/{uuid}/settings", unchanged | {"tts_api_key_clear": "on"})
    settings = (await store.get_workflow(operator.tenant.org_id, uuid)).definition["settings"]
    assert settings["stt"]["api_key"] == stt_key and "api_key" not in settings["tts"]
    page = await operator.post(f"/agents/{uuid}/settings", unchanged | {"stt_provider": "acme"})
    assert page.status == 400
    provider_errors = page.html.split('id="stt_provider-error"')[1].split("</ul>")[0]
    assert "settings.stt.provider must be one of" in provider_errors
    assert '<option value="acme" selected>acme</option>' in page.html
    # back to the built-in engines: the sections go
    await operator.post(f"/agents/{uuid}/settings", {"engine": "scripted"})
    settings = (await store.get_workflow(operator.tenant.org_id, uuid)).definition["settings"]
    assert "stt" not in settings and "tts" not in settings


# -- runs ----------------------------------------------------------------------------------------


async def test_runs_tab_empty_state_points_at_the_stream_url(
    operator: Operator, client: TestClient
) -> None:
    uuid = operator.tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}/runs")
    assert page.status == 200
    assert (
        "No runs yet — point your provider's media stream at <code class=\"wrap\">"
        f"ws://127.0.0.1:{client.port}/api/v1/agent-stream/PROVIDER/{uuid}"
    ) in page.html
    assert "No rejected connections." in page.html


# -- telephony -----------------------------------------------------------------------------------


async def test_telephony_add_edit_delete_with_the_token_masked(
    operator: Operator, store: Store
) -> None:
    tenant = operator.tenant
    page = await operator.get("/telephony")
    assert page.status == 200
    assert "acme.cloudonix.net" in page.html and "••••cdef" in page.html
    assert tenant.token not in page.html

    token = "cx-beta-token-SECRET-5678"
    page = await operator.post("/telephony", {"name": "", "domain_id": "Beta ", "bearer_token": ""})
    assert page.status == 400 and "Paste the domain&#39;s bearer token" in page.html
    page = await operator.post(
        "/telephony",
        {
            "name": "Beta line",
            "domain_id": "Beta ",
            "bearer_token": token,
            "application_name": "beta-app",
            "from_numbers": "+15555550100, +15555550101",
        },
    )
    assert page.status == 200 and "Telephony configuration added." in page.html
    assert "beta.cloudonix.net" in page.html and "••••5678" in page.html and token not in page.html
    config = next(
        c for c in await store.list_telephony_configs(tenant.org_id) if c.name == "Beta line"
    )
    assert (
        config.account_id,
        config.value("bearer_token"),
        config.fields.get("application_name"),
        config.from_numbers,
    ) == ("beta.cloudonix.net", token, "beta-app", ["+15555550100", "+15555550101"])

    page = await operator.post(
        "/telephony", {"domain_id": "beta.cloudonix.net", "bearer_token": "t" * 12}
    )
    assert page.status == 400 and "already a configuration for beta.cloudonix.net" in page.html

    page = await operator.get(f"/telephony/{config.id}")
    assert page.status == 200 and "Leave empty to keep the saved token (••••5678)" in page.html
    assert token not in page.html
    page = await operator.post(
        f"/telephony/{config.id}",
        {
            "name": "Beta",
            "domain_id": "beta",
            "bearer_token": "",
            "application_name": "",
            "from_numbers": "+15555550100",
        },
    )
    assert "Telephony configuration saved." in page.html
    config = await store.get_telephony_config(tenant.org_id, config.id)
    assert (config.name, config.value("bearer_token"), config.from_numbers) == (
        "Beta",
        token,
        ["+15555550100"],
    )
    await operator.post(
        f"/telephony/{config.id}",
        {"name": "Beta", "domain_id": "beta", "bearer_token": "cx-new-token-0000"},
    )
    assert (
        await store.get_telephony_config(tenant.org_id, config.id)
    ).value("bearer_token") == "cx-new-token-0000"

    page = await operator.get(f"/telephony/{config.id}/delete")
    assert (
        page.status == 200 and "Delete Beta?" in page.html and "Delete configuration" in page.html
    )
    page = await operator.post(f"/telephony/{config.id}/delete")
    assert "Telephony configuration deleted." in page.html
    assert [c.name for c in await store.list_telephony_configs(tenant.org_id)] == ["main"]


# -- users & API keys ----------------------------------------------------------------------------


async def test_users_and_api_keys_for_admins(
    operator: Operator, store: Store, client: TestClient
) -> None:
    tenant = operator.tenant
    page = await operator.get("/users")
    assert page.status == 200 and "Users &amp; API keys" in page.html
    assert "Minutes used this month" in page.html and tenant_email(tenant) in page.html

    page = await operator.post("/users", {"email": "new@example.com", "password": "short"})
    assert page.status == 400 and "Use at least 8 characters." in page.html
    page = await operator.post(
        "/users",
        {
            "email": "new@example.com",
            "password": "long enough pw",
            "monthly_minutes_limit": "120",
            "max_concurrent_calls": "2",
        },
    )
    assert "User created." in page.html and "new@example.com" in page.html
    new = await store.get_user_by_email("new@example.com")
    assert (
        new.organization_id,
        new.monthly_minutes_limit,
        new.max_concurrent_calls,
        new.is_admin,
    ) == (tenant.org_id, 120, 2, False)
    page = await operator.post("/users", {"email": "new@example.com", "password": "long enough pw"})
    assert page.status == 400 and "already exists" in page.html

    page = await operator.post(f"/users/{new.id}/quotas", {"monthly_minutes_limit": "many"})
    assert page.status == 400 and "Enter a whole number" in page.html
    page = await operator.post(
        f"/users/{new.id}/quotas", {"monthly_minutes_limit": "", "max_concurrent_calls": "5"}
    )
    assert "Limits saved." in page.html
    new = await store.get_user(new.id)
    assert (new.monthly_minutes_limit, new.max_concurrent_calls) == (None, 5)

    # a key is shown once, then only its prefix; the API takes it until it is revoked
    page = await operator.post("/api-keys", {"name": "deploy", "user_id": str(new.id)})
    assert page.status == 200 and "shown only this once" in page.html
    assert page.headers["Cache-Control"] == "no-store"
    plaintext = page.html.split('id="new-key-value"')[1].split(">", 1)[1].split("<")[0]
    assert plaintext.startswith("ask_")
    again = await operator.get("/users")
    assert plaintext not in again.html and plaintext[:8] + "…" in again.html
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert (await client.get("/api/v1/workflows", headers=headers)).status == 200
    [key] = [k for k in await store.list_api_keys(tenant.org_id) if k.key.name == "deploy"]
    page = await operator.post(f"/api-keys/{key.key.id}/revoke")
    assert "API key revoked" in page.html and "Revoked" in page.html
    assert (await client.get("/api/v1/workflows", headers=headers)).status == 401


async def test_members_cannot_manage_users_or_keys(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    member = await make_operator(client, store, tenant, admin=False)
    page = await member.get("/agents")
    assert "Users &amp; API keys" not in page.html
    page = await member.get("/users")
    assert page.status == 403 and "Only organization admins" in page.html
    page = await member.post("/api-keys", {"name": "x", "user_id": str(member.user.id)})
    assert page.status == 403
    assert all(k.key.name != "x" for k in await store.list_api_keys(tenant.org_id))


# -- organizations never see each other ----------------------------------------------------------


async def test_another_organizations_things_are_not_found(
    operator: Operator, other_tenant: Tenant, store: Store
) -> None:
    theirs = other_tenant.workflow.uuid
    page = await operator.get("/agents")
    assert other_tenant.workflow.name not in page.html
    [their_config] = await store.list_telephony_configs(other_tenant.org_id)
    their_run = await store.start_run(
        other_tenant.workflow,
        await store.get_user(other_tenant.user_id),
        mode="cloudonix",
        initial_context={},
        gathered_context={},
        logs={},
    )
    mine = operator.tenant.workflow.uuid
    for path in [
        f"/agents/{theirs}",
        f"/agents/{theirs}/settings",
        f"/agents/{theirs}/runs",
        f"/agents/{theirs}/runs/{their_run.id}",
        f"/agents/{mine}/runs/{their_run.id}",
        f"/agents/{mine}/runs/{their_run.id}/recording",
        f"/agents/{mine}/runs/{their_run.id}/status",
        f"/telephony/{their_config.id}",
        f"/telephony/{their_config.id}/delete",
        "/agents/not-a-uuid",
        "/telephony/99999999999999999999999",
    ]:
        page = await operator.get(path)
        assert page.status == 404, path
        assert "Not found" in page.html and "another organization" in page.html
    for path, data in [
        (f"/agents/{theirs}/publish", {}),
        (f"/agents/{theirs}/archive", {}),
        (f"/agents/{theirs}/rename", {"name": "Mine now"}),
        (f"/telephony/{their_config.id}/delete", {}),
        (f"/telephony/{their_config.id}", {"domain_id": "x", "bearer_token": "y"}),
        (f"/users/{other_tenant.user_id}/quotas", {"max_concurrent_calls": "0"}),
        ("/api-keys", {"name": "x", "user_id": str(other_tenant.user_id)}),
    ]:
        page = await operator.post(path, data)
        assert page.status == 404, path
    their_keys = await store.list_api_keys(other_tenant.org_id)
    page = await operator.post(f"/api-keys/{their_keys[0].key.id}/revoke")
    assert page.status == 404
    assert (await store.list_api_keys(other_tenant.org_id))[0].key.revoked_at is None
    assert (await store.get_workflow(other_tenant.org_id, theirs)).status == "draft"
    assert (await store.get_user(other_tenant.user_id)).max_concurrent_calls is None


# -- errors, headers, secrets --------------------------------------------------------------------


async def test_html_error_pages_outside_the_api_and_json_inside(
    operator: Operator, client: TestClient
) -> None:
    page = await operator.get("/no/such/page")
    assert page.status == 404 and "text/html" in page.headers["Content-Type"]
    assert "Not found" in page.html
    response = await client.get("/api/v1/no-such-thing")
    assert response.status == 404 and (await response.json())["error"]
    page = await operator.get("/agents", headers={})
    for header in ("Content-Security-Policy", "X-Frame-Options", "Referrer-Policy"):
        assert header in page.headers
    assert page.headers["Cache-Control"] == "no-store"


async def test_cookies_are_secure_behind_tls(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    await store.create_user(
        organization_id=tenant.org_id, email="tls@example.com", password=PASSWORD
    )
    page = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in page.headers["Set-Cookie"]
    # a client on plain http never sends a Secure cookie back: send it like a TLS browser would
    csrf_cookie = page.cookies["agent_stream_csrf"].value
    response = await client.post(
        "/login",
        headers={"X-Forwarded-Proto": "https", "Cookie": f"agent_stream_csrf={csrf_cookie}"},
        data={
            "csrf_token": csrf_of(await page.text()),
            "email": "tls@example.com",
            "password": PASSWORD,
        },
        allow_redirects=False,
    )
    session_header = next(
        h for h in response.headers.getall("Set-Cookie") if h.startswith(SESSION_COOKIE)
    )
    assert "Secure" in session_header and "HttpOnly" in session_header


async def test_no_secret_in_any_page_and_no_full_uuid_in_logs(
    operator: Operator, caplog: pytest.LogCaptureFixture, store: Store
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = operator.tenant
    uuid = tenant.workflow.uuid
    llm_key = "sk-never-shown-QWERTY-9999"
    await operator.post(
        f"/agents/{uuid}/settings",
        {
            "engine": "llm",
            "llm_base_url": "https://llm.example/v1",
            "llm_model": "m",
            "llm_api_key": llm_key,
        },
    )
    session_value = cookie(operator.client, SESSION_COOKIE).value
    pages = [
        "/agents",
        f"/agents/{uuid}",
        f"/agents/{uuid}/settings",
        f"/agents/{uuid}/runs",
        "/telephony",
        "/users",
        f"/telephony/{(await store.list_telephony_configs(tenant.org_id))[0].id}",
    ]
    for path in pages:
        page = await operator.get(path)
        assert page.status == 200, path
        for secret in (tenant.token, tenant.api_key, llm_key, session_value, PASSWORD):
            assert secret not in page.html, (path, secret[:6])
    assert uuid not in caplog.text
    assert tenant.token not in caplog.text and llm_key not in caplog.text


async def test_a_database_at_version_1_gets_the_sign_in_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # as a version-1 server left it
        db.executescript((MIGRATIONS_DIR / "0001_schema.sqlite.sql").read_text())
        db.execute("DROP TABLE sessions")
        db.execute("DROP TABLE login_failures")
        db.execute("PRAGMA user_version = 1")
    store = await Store.open(path)
    await store.close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        applied = [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert applied == [m.number for m in MIGRATIONS]
    assert {"sessions", "login_failures", "instances"} <= tables


async def test_telephony_takes_an_exotel_configuration_with_its_token_masked(
    operator: Operator, store: Store
) -> None:
    token = "exotel-token-SECRET-9876"
    page = await operator.post("/telephony", {"provider": "exotel", "account_sid": "acme1",
                                              "api_key": "key:with-colon", "api_token": token})
    assert page.status == 400 and "An Exotel API key has no colon or space" in page.html
    assert token not in page.html
    page = await operator.post("/telephony", {"provider": "exotel", "name": "Mumbai",
                                              "account_sid": "acme1", "api_key": "exokey123",
                                              "api_token": token})
    assert page.status == 200 and "Telephony configuration added." in page.html
    assert "acme1" in page.html and "••••9876" in page.html and token not in page.html
    [config] = [c for c in await store.list_telephony_configs(operator.tenant.org_id)
                if c.provider == "exotel"]
    assert (config.account_id, config.fields, config.secrets) == (
        "acme1", {"account_sid": "acme1", "api_key": "exokey123"}, {"api_token": token})
    page = await operator.get(f"/telephony/{config.id}")  # the key is no secret: shown to edit
    assert 'value="exokey123"' in page.html and token not in page.html


# -- text no database holds ----------------------------------------------------------------------
# PostgreSQL text cannot hold a NUL (the statement fails: a 500 there, while SQLite kept it):
# a one-line value with a control character is refused with the form shown again and why.


async def test_the_first_run_refuses_a_control_character_in_the_organization_or_email(
    client: TestClient, store: Store
) -> None:
    token = csrf_of(await (await client.get("/setup")).text())
    good = {"csrf_token": token, "organization": "Acme", "email": "ops@acme.test",
            "password": "long enough", "password_again": "long enough"}
    for field, value, message in (
        ("organization", "Ac\x00me", "Name your organization on one line"),
        ("email", "ops\x00@acme.test", "Enter an email address"),
        ("email", "ops@acme.test\nBcc: x@y.test", "Enter an email address"),
    ):
        response = await client.post("/setup", data=good | {field: value}, allow_redirects=False)
        assert response.status == 400, (field, await response.text())
        assert message in await response.text()
    assert await store.count_users() == 0


async def test_a_sign_in_with_a_control_character_is_a_wrong_email_or_password(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    await store.create_user(organization_id=tenant.org_id, email="di@example.com", password=PASSWORD)
    token = csrf_of(await (await client.get("/login")).text())
    for email in ("di@example.com\x00", "di\x00@example.com"):
        response = await client.post("/login", data={"csrf_token": token, "email": email,
                                                     "password": PASSWORD})
        assert response.status == 401 and "Wrong email or password." in await response.text()
    # %FF is no UTF-8: the form reads it as U+FFFD, an email nobody has
    response = await client.post(
        "/login", data=f"csrf_token={token}&email=di%FF%00@example.com&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 401
    assert cookie(client, SESSION_COOKIE) is None


async def test_a_csrf_token_with_other_characters_is_refused_like_any_wrong_one(
    client: TestClient, operator: Operator
) -> None:
    """compare_digest refuses to compare text that is not ASCII (a TypeError: was a 500)."""
    page = await operator.post("/agents", {"name": "Spoofed", "csrf_token": "é" * 43})
    assert page.status == 403 and "Form expired" in page.html
    client.session.cookie_jar.clear()
    login = csrf_of(await (await client.get("/login")).text())
    response = await client.post("/login", data={"csrf_token": login[:-1] + "é",
                                                 "email": "x@example.com", "password": "x"})
    assert response.status == 403


async def test_agent_user_and_key_names_with_a_control_character_are_refused(
    operator: Operator, store: Store
) -> None:
    org, uuid = operator.tenant.org_id, operator.tenant.workflow.uuid
    before = [w.name for w in await store.list_workflows(org)]
    page = await operator.post("/agents", {"name": "Front\x00desk"})
    assert page.status == 400 and "one line" in page.html
    page = await operator.post(f"/agents/{uuid}/rename", {"name": "Night\x00shift"})
    assert page.status == 400 and "one line" in page.html
    assert [w.name for w in await store.list_workflows(org)] == before

    users, keys = await store.list_users(org), await store.list_api_keys(org)
    page = await operator.post("/users", {"email": "new\x00@example.com", "password": PASSWORD})
    assert page.status == 400 and "Enter an email address" in page.html
    page = await operator.post("/api-keys", {"name": "deploy\x00", "user_id": str(operator.user.id)})
    assert page.status == 400 and "one line" in page.html
    assert (await store.list_users(org), await store.list_api_keys(org)) == (users, keys)


async def test_raw_json_with_half_a_surrogate_pair_is_refused_and_the_editor_still_opens(
    operator: Operator, store: Store
) -> None:
    """"\\ud800" is valid JSON but no text: the API refuses it, and so does this view (once
    stored, the editor could no longer render the agent: every page of it was a 500)."""
    uuid = operator.tenant.workflow.uuid
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hello \ud800"
    page = await operator.post(f"/agents/{uuid}/definition", {"definition": json.dumps(definition)})
    assert page.status == 400 and "unpaired surrogate" in page.html
    stored = await store.get_workflow(operator.tenant.org_id, uuid)
    assert stored.definition == operator.tenant.workflow.definition
    assert (await operator.get(f"/agents/{uuid}")).status == 200


async def test_a_pre_sign_in_csrf_cookie_that_is_no_token_is_replaced(
    client: TestClient, tenant: Tenant, non_utf8_headers: str
) -> None:
    """The cookie's value goes into the page's form: bytes that are not UTF-8 (lone
    surrogates to aiohttp) could not (a 500), so such a cookie is no token, a new one is set."""
    forged = {"Cookie": f"agent_stream_csrf={'a' * 30}{non_utf8_headers}"}
    page = await client.get("/login", headers=forged)
    assert page.status == 200 and "Sign in" in await page.text()
    fresh = csrf_of(await page.text())
    assert fresh != "a" * 30 + non_utf8_headers and cookie(client, "agent_stream_csrf").value == fresh
    client.session.cookie_jar.clear()
    response = await client.post("/login", headers=forged, data={
        "csrf_token": "a" * 30, "email": "x@example.com", "password": "x"})
    assert response.status == 403


async def test_a_form_in_a_charset_nobody_knows_is_a_400(
    client: TestClient, operator: Operator, non_utf8_headers: str
) -> None:
    for charset in ("no-such-charset", non_utf8_headers):
        headers = {"Content-Type": f"application/x-www-form-urlencoded; charset={charset}"}
        body = f"csrf_token={operator.csrf}&name=Agent"
        response = await client.post("/agents", data=body, headers=headers)
        assert response.status == 400, ascii(charset)
        assert "The request could not be understood." in await response.text()
    client.session.cookie_jar.clear()
    response = await client.post("/login", data="email=a@b&password=x", headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=no-such-charset"})
    assert response.status == 400
