"""The JSON management API (contract section 3) through the real app and real HTTP."""
from __future__ import annotations

import copy
import json
import socket
import uuid
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from agent_stream.errors import Stale
from agent_stream.keys import CALLS, SETTINGS
from agent_stream.models import ConfigInput, Run
from agent_stream.simulator import tone_ulaw
from agent_stream.store import Store
from agent_stream.workflow import starter_definition
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import DOMAIN, Dial, MakeTenant, Tenant, latest_run_id, wait_for_state

NEW_TOKEN = "cx-bearer-ROTATED-token-9876543210zyxw"


# -- helpers ----------------------------------------------------------------------------------


async def body_of(response: ClientResponse, status: int) -> Any:
    """The JSON body of a response, after checking its status (with the body on failure)."""
    text = await response.text()
    assert response.status == status, f"{response.status}: {text}"
    assert response.content_type == "application/json", response.content_type
    return await response.json()


async def create_workflow(client: TestClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/workflows", json=body, headers=tenant.headers)
    return await body_of(response, 201)  # type: ignore[no-any-return]


async def telephony_id(client: TestClient, tenant: Tenant) -> int:
    """The id of the tenant's own Cloudonix configuration (created by the fixture)."""
    response = await client.get("/api/v1/telephony-configurations", headers=tenant.headers)
    configs = (await body_of(response, 200))["telephony_configurations"]
    return int(configs[0]["id"])


async def completed_call(dial: Dial, store: Store, tenant: Tenant, **url: Any) -> Run:
    """One real call: handshake, a little caller audio, hang up; returns the finished run."""
    before = await latest_run_id(store, tenant.org_id)
    call = await dial(tenant.workflow.uuid, **url)
    call.start_reading()
    await call.handshake()
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None and run_id != before
    run = await wait_for_state(store, run_id, "completed", "failed")
    assert run.state == "completed"
    return run


def mentions(problems: list[str], *words: str) -> bool:
    """Whether one problem names all of `words` (so tests do not pin exact wording)."""
    return any(all(w.lower() in p.lower() for w in words) for p in problems)


# -- health and authentication ----------------------------------------------------------------


async def test_health_needs_no_key(client: TestClient) -> None:
    response = await client.get("/api/v1/health")
    port = client.app[SETTINGS].port
    assert await body_of(response, 200) == {"status": "ok",
                                            "instance": f"{socket.gethostname()}:{port}:0"}


async def test_ready_needs_no_key_and_says_503_once_the_server_drains(client: TestClient) -> None:
    assert await body_of(await client.get("/api/v1/ready"), 200) == {"status": "ready"}
    await client.app[CALLS].shutdown(grace=0)  # what SIGTERM starts with
    response = await client.get("/api/v1/ready")
    assert await body_of(response, 503) == {"status": "draining",
                                             "error": "the server is shutting down"}
    assert response.headers["Retry-After"]
    assert (await body_of(await client.get("/api/v1/health"), 200))["status"] == "ok"


AUTHENTICATED_ENDPOINTS = [
    ("GET", "/api/v1/workflows"),
    ("POST", "/api/v1/workflows"),
    ("GET", "/api/v1/workflows/00000000-0000-4000-8000-000000000000"),
    ("PATCH", "/api/v1/workflows/00000000-0000-4000-8000-000000000000"),
    ("POST", "/api/v1/workflows/00000000-0000-4000-8000-000000000000/publish"),
    ("GET", "/api/v1/telephony-configurations"),
    ("POST", "/api/v1/telephony-configurations"),
    ("GET", "/api/v1/telephony-configurations/1"),
    ("PATCH", "/api/v1/telephony-configurations/1"),
    ("DELETE", "/api/v1/telephony-configurations/1"),
    ("GET", "/api/v1/workflow-runs"),
    ("GET", "/api/v1/workflow-runs/1"),
    ("GET", "/api/v1/workflow-runs/1/recording"),
    ("GET", "/api/v1/stream-rejections"),
]


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED_ENDPOINTS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer ask_not-a-real-key"],
    ids=["missing", "wrong-scheme", "empty-key", "unknown-key"],
)
async def test_every_endpoint_answers_401_json_without_a_valid_key(
    client: TestClient, tenant: Tenant, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = await client.request(method, path, headers=headers, json={"name": "x"})
    body = await body_of(response, 401)
    assert isinstance(body["error"], str) and body["error"]


async def test_a_key_that_is_not_utf8_is_401_not_a_500(
    client: TestClient, tenant: Tenant, non_utf8_headers: str
) -> None:
    """aiohttp reads a header's bytes that are not UTF-8 as lone surrogates: no key has one."""
    key = tenant.headers["Authorization"]
    for authorization in (f"Bearer ask_{non_utf8_headers}", key + non_utf8_headers):
        response = await client.get("/api/v1/workflows", headers={"Authorization": authorization})
        assert (await body_of(response, 401))["error"] == "invalid or revoked API key"


async def test_valid_key_of_a_tenant_is_accepted(client: TestClient, tenant: Tenant) -> None:
    response = await client.get("/api/v1/workflows", headers=tenant.headers)
    await body_of(response, 200)


# -- workflows ----------------------------------------------------------------------------------


async def test_create_workflow_without_definition_gets_the_starter(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    created = await create_workflow(client, tenant, name="  Front desk  ")
    assert uuid.UUID(created["uuid"]).version == 4
    assert created["name"] == "Front desk"
    assert (created["status"], created["version"], created["published_version"]) == (
        "draft", 1, None)
    assert created["definition"] == starter_definition()
    stored = await store.get_workflow(tenant.org_id, created["uuid"])
    assert (stored.name, stored.status, stored.version) == ("Front desk", "draft", 1)
    assert stored.definition == starter_definition()


async def test_create_workflow_with_a_custom_definition(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    definition = {
        "version": 1,
        "global_prompt": "Be short.",
        "nodes": [
            {"id": "hello", "kind": "start", "say": "Hi {{caller_number}}."},
            {"id": "bye", "kind": "end", "say": "Bye."},
        ],
        "edges": [{"from": "hello", "to": "bye", "phrases": ["bye"], "dtmf": "#", "fallback": True}],
    }
    created = await create_workflow(client, tenant, name="Tiny", definition=definition)
    assert created["definition"] == definition
    assert (await store.get_workflow(tenant.org_id, created["uuid"])).definition == definition


def broken_definition() -> dict[str, Any]:
    """A start node plus every other kind of problem: unknown ids, duplicates, an island,
    bad digits."""
    return {
        "nodes": [
            {"id": "start", "kind": "start", "say": "Hi"},
            {"id": "book", "kind": "agent", "say": "Day?"},
            {"id": "book", "kind": "end", "say": "Twice"},
            {"id": "island", "kind": "end", "say": "Nobody gets here"},
        ],
        "edges": [
            {"from": "start", "to": "book", "dtmf": "12"},
            {"from": "start", "to": "nowhere"},
            {"from": "ghost", "to": "book"},
            {"from": "book", "to": "start", "dtmf": "x"},
        ],
    }


async def test_invalid_definition_lists_every_problem(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    before = len(await store.list_workflows(tenant.org_id))
    response = await client.post(
        "/api/v1/workflows", json={"name": "Broken", "definition": broken_definition()},
        headers=tenant.headers,
    )
    body = await body_of(response, 400)
    problems = body["problems"]
    assert isinstance(body["error"], str)
    assert mentions(problems, "unknown", "'nowhere'")
    assert mentions(problems, "unknown", "'ghost'")
    assert mentions(problems, "duplicate", "'book'")
    assert mentions(problems, "'island'", "unreachable")
    assert mentions(problems, "dtmf", "'12'")
    assert mentions(problems, "dtmf", "'x'")
    assert not mentions(problems, "no start node")

    # the same definition without its start node: that is reported too, with the rest
    no_start = broken_definition()
    no_start["nodes"][0]["kind"] = "agent"
    response = await client.post(
        "/api/v1/workflows", json={"name": "Broken", "definition": no_start}, headers=tenant.headers
    )
    problems = (await body_of(response, 400))["problems"]
    assert mentions(problems, "no start node")
    assert mentions(problems, "unknown", "'nowhere'")
    assert mentions(problems, "unknown", "'ghost'")
    assert mentions(problems, "duplicate", "'book'")
    assert mentions(problems, "dtmf", "'12'")
    assert mentions(problems, "dtmf", "'x'")

    assert len(await store.list_workflows(tenant.org_id)) == before


async def test_one_line_fields_of_a_definition_refuse_control_characters(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    """An id, a transfer destination, a model, a key or an address ends up in a log line, a
    provider's XML or an HTTP header: a line break there is refused, spoken text keeps it."""
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hello.\nHow can I help?"  # spoken text: kept as given
    definition["nodes"][0]["id"] = "start\r\nX-Injected: 1"
    definition["nodes"][2]["destination"] = "+15555550123\x00"
    definition["settings"]["voice"] = "en-us\n"
    definition["settings"]["llm"] = {"base_url": "http://llm\n.example.com/v1",
                                     "model": "gpt\x07", "api_key": "sk-1234\r\n"}
    definition["settings"]["tts"] = {"provider": "openai", "voice": "alloy\t"}
    response = await client.post("/api/v1/workflows", headers=tenant.headers,
                                 json={"name": "Odd", "definition": definition})
    problems = (await body_of(response, 400))["problems"]
    one_line = "must be one line, without control characters"
    assert [p for p in problems if one_line in p] == [
        f"settings.voice {one_line}",
        f"settings.llm.base_url {one_line}",
        f"settings.llm.model {one_line}",
        f"settings.llm.api_key {one_line}",
        f"settings.tts.voice {one_line}",
        f"nodes[0].id {one_line}",
        f"node 'human'.destination {one_line}",
    ]
    assert "sk-1234" not in await response.text()  # a key is named, never echoed
    assert [w.name for w in await store.list_workflows(tenant.org_id)] == [tenant.workflow.name]


async def test_an_agent_saved_before_the_one_line_rule_still_takes_calls(
    client: TestClient, tenant: Tenant, store: Store, dial: Dial
) -> None:
    """A definition stored when a line break in a destination was accepted is run as it
    is (refusing its calls would break an agent that worked); saving or publishing it
    again asks for the field to be mended."""
    definition = starter_definition()
    definition["nodes"][2]["destination"] = "+15555550123\n"
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, definition=definition)
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    await call.hang_up()
    assert (await call.wait_closed())[0] == 1000
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    run = await wait_for_state(store, run_id, "completed", "failed")
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.post(f"{path}/publish", headers=tenant.headers)
    assert (await body_of(response, 400))["problems"] == [
        "node 'human'.destination must be one line, without control characters"]


async def test_invalid_definition_in_a_patch_keeps_the_saved_version(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.patch(path, json={"definition": broken_definition()}, headers=tenant.headers)
    assert len((await body_of(response, 400))["problems"]) >= 6
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.version, stored.definition) == (1, starter_definition())


@pytest.mark.parametrize(
    "body",
    [{}, {"name": None}, {"name": ""}, {"name": "   "}, {"definition": starter_definition()}],
    ids=["empty", "null", "empty-string", "blank", "definition-only"],
)
async def test_create_workflow_needs_a_name(
    client: TestClient, tenant: Tenant, store: Store, body: dict[str, Any]
) -> None:
    response = await client.post("/api/v1/workflows", json=body, headers=tenant.headers)
    assert "name" in (await body_of(response, 400))["error"]
    assert len(await store.list_workflows(tenant.org_id)) == 1


async def test_list_and_get_workflows(client: TestClient, tenant: Tenant) -> None:
    second = await create_workflow(client, tenant, name="Second")
    response = await client.get("/api/v1/workflows", headers=tenant.headers)
    listed = (await body_of(response, 200))["workflows"]
    assert [w["uuid"] for w in listed] == [second["uuid"], tenant.workflow.uuid]

    response = await client.get(f"/api/v1/workflows/{tenant.workflow.uuid}", headers=tenant.headers)
    one = await body_of(response, 200)
    assert (one["uuid"], one["name"], one["status"], one["version"]) == (
        tenant.workflow.uuid, tenant.workflow.name, "draft", 1)
    assert one["definition"] == tenant.workflow.definition


async def test_patch_name(client: TestClient, tenant: Tenant, store: Store) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.patch(path, json={"name": "Renamed"}, headers=tenant.headers)
    patched = await body_of(response, 200)
    assert (patched["uuid"], patched["name"], patched["version"]) == (
        tenant.workflow.uuid, "Renamed", 1)
    assert (await store.get_workflow(tenant.org_id, tenant.workflow.uuid)).name == "Renamed"


async def test_patch_definition_adds_a_version_and_keeps_the_uuid(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    definition = starter_definition()
    definition["global_prompt"] = "You are the night shift."
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.patch(path, json={"definition": definition}, headers=tenant.headers)
    patched = await body_of(response, 200)
    assert (patched["uuid"], patched["version"]) == (tenant.workflow.uuid, 2)
    assert patched["definition"] == definition
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.uuid, stored.version, stored.definition) == (tenant.workflow.uuid, 2, definition)

    # saving the same definition again is not a new version
    response = await client.patch(path, json={"definition": definition}, headers=tenant.headers)
    assert (await body_of(response, 200))["version"] == 2


async def test_publish_then_edit_keeps_the_published_version(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.post(f"{path}/publish", headers=tenant.headers)
    published = await body_of(response, 200)
    assert published["uuid"] == tenant.workflow.uuid
    assert published["status"] == "published"
    assert published["published_version"] == published["version"] == 1

    edited = starter_definition()
    edited["nodes"][0]["say"] = "Hello from version two."
    response = await client.patch(path, json={"definition": edited}, headers=tenant.headers)
    patched = await body_of(response, 200)
    assert (patched["uuid"], patched["version"], patched["published_version"]) == (
        tenant.workflow.uuid, 2, 1)
    assert patched["status"] == "published"
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert stored.published_definition == starter_definition()
    assert stored.definition == edited

    response = await client.post(f"{path}/publish", headers=tenant.headers)
    republished = await body_of(response, 200)
    assert (republished["version"], republished["published_version"]) == (2, 2)


async def test_archived_workflow_cannot_be_published(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.patch(path, json={"status": "archived"}, headers=tenant.headers)
    assert (await body_of(response, 200))["status"] == "archived"

    response = await client.post(f"{path}/publish", headers=tenant.headers)
    assert "archived" in (await body_of(response, 409))["error"]
    assert (await store.get_workflow(tenant.org_id, tenant.workflow.uuid)).status == "archived"

    # restored to draft, it can be published again
    response = await client.patch(path, json={"status": "draft"}, headers=tenant.headers)
    assert (await body_of(response, 200))["status"] == "draft"
    response = await client.post(f"{path}/publish", headers=tenant.headers)
    assert (await body_of(response, 200))["status"] == "published"


@pytest.mark.parametrize("status", ["published", "deleted", 1, ["archived"]])
async def test_patch_status_only_to_draft_or_archived(
    client: TestClient, tenant: Tenant, store: Store, status: Any
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.patch(path, json={"status": status}, headers=tenant.headers)
    await body_of(response, 400)
    assert (await store.get_workflow(tenant.org_id, tenant.workflow.uuid)).status == "draft"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("not json at all", "application/json"),
        ("", "application/json"),
        ("{\"name\": ", "application/json"),
        ("[{\"name\": \"list\"}]", "application/json"),
        ("\"just a string\"", "application/json"),
        ("42", "application/json"),
        ("null", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        ("name=form", "application/x-www-form-urlencoded"),
    ],
    ids=["text", "empty", "truncated", "array", "string", "number", "null", "binary", "form"],
)
async def test_workflow_writes_need_a_json_object(
    client: TestClient, tenant: Tenant, store: Store, data: str | bytes, content_type: str
) -> None:
    headers = tenant.headers | {"Content-Type": content_type}
    response = await client.post("/api/v1/workflows", data=data, headers=headers)
    assert "JSON" in (await body_of(response, 400))["error"]
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    response = await client.patch(path, data=data, headers=headers)
    await body_of(response, 400)
    assert len(await store.list_workflows(tenant.org_id)) == 1


async def test_text_with_an_unpaired_surrogate_is_refused(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hello \ud800"
    data = json.dumps({"name": "x", "definition": definition})  # escaped: valid JSON
    response = await client.post("/api/v1/workflows", data=data, headers=tenant.headers)
    assert "unpaired surrogate" in (await body_of(response, 400))["error"]
    assert len(await store.list_workflows(tenant.org_id)) == 1


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("PATCH", ""), ("POST", "/publish")]
)
@pytest.mark.parametrize("unknown", ["0b5c5e9e-3f1c-4c52-9a57-5f1f2bd5c0de", "not-a-uuid"])
async def test_unknown_workflow_is_404(
    client: TestClient, tenant: Tenant, method: str, suffix: str, unknown: str
) -> None:
    response = await client.request(
        method, f"/api/v1/workflows/{unknown}{suffix}", json={"name": "x"}, headers=tenant.headers
    )
    assert "not found" in (await body_of(response, 404))["error"]


# -- telephony configurations --------------------------------------------------------------------


@pytest.fixture
async def fresh(make_tenant: MakeTenant) -> Tenant:
    """A tenant whose fixture configuration is for another domain, so `acme` is free."""
    return await make_tenant(domain="seed.cloudonix.net")


async def create_config(client: TestClient, tenant: Tenant, **body: Any) -> ClientResponse:
    payload = {"provider": "cloudonix", "domain_id": "acme", "bearer_token": tenant.token} | body
    return await client.post("/api/v1/telephony-configurations", json=payload, headers=tenant.headers)


async def test_create_configuration_normalizes_domain_and_hides_token(
    client: TestClient, fresh: Tenant, store: Store
) -> None:
    response = await create_config(
        client, fresh, name="Main line", application_name="agent-app",
        from_numbers=["+15550001111", " +15550002222 "],
    )
    text = await response.text()
    assert fresh.token not in text
    created = await body_of(response, 201)
    assert created["domain_id"] == "acme.cloudonix.net"
    assert (created["provider"], created["name"], created["application_name"]) == (
        "cloudonix", "Main line", "agent-app")
    assert created["from_numbers"] == ["+15550001111", "+15550002222"]
    assert created["bearer_token_hint"] == "••••" + fresh.token[-4:]
    assert created["has_bearer_token"] is True
    assert "bearer_token" not in created

    stored = await store.get_telephony_config(fresh.org_id, created["id"])
    assert (stored.account_id, stored.value("bearer_token")) == ("acme.cloudonix.net", fresh.token)

    config_path = f"/api/v1/telephony-configurations/{created['id']}"
    for response in (
        await client.get("/api/v1/telephony-configurations", headers=fresh.headers),
        await client.get(config_path, headers=fresh.headers),
        await client.patch(config_path, json={"name": "Renamed"}, headers=fresh.headers),
        await client.patch(config_path, json={"bearer_token": NEW_TOKEN}, headers=fresh.headers),
    ):
        text = await response.text()
        assert response.status == 200, text
        assert fresh.token not in text and NEW_TOKEN not in text


async def test_full_domain_name_is_kept_and_name_defaults_to_it(
    client: TestClient, fresh: Tenant
) -> None:
    created = await body_of(await create_config(client, fresh, domain_id=" ACME.cloudonix.net. "), 201)
    assert created["domain_id"] == "acme.cloudonix.net"
    assert created["name"] == "acme.cloudonix.net"


async def test_duplicate_domain_in_one_organization_is_409(
    client: TestClient, fresh: Tenant, store: Store
) -> None:
    await body_of(await create_config(client, fresh, domain_id="acme"), 201)
    response = await create_config(client, fresh, domain_id="acme.cloudonix.net")
    assert "already exists" in (await body_of(response, 409))["error"]
    assert len(await store.list_telephony_configs(fresh.org_id)) == 2


async def test_same_domain_in_another_organization_is_fine(
    client: TestClient, make_tenant: MakeTenant
) -> None:
    first = await make_tenant(domain="one.cloudonix.net")
    second = await make_tenant(domain="two.cloudonix.net")
    await body_of(await create_config(client, first, domain_id="shared"), 201)
    await body_of(await create_config(client, second, domain_id="shared"), 201)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"provider": "skype"}, "provider"),
        ({"provider": None}, "provider"),
        ({"bearer_token": None}, "bearer_token"),
        ({"bearer_token": ""}, "bearer_token"),
        ({"domain_id": None}, "domain_id"),
        ({"domain_id": "  "}, "domain_id"),
        ({"from_numbers": "+15550001111"}, "from_numbers"),
        ({"from_numbers": [1]}, "from_numbers"),
        ({"from_numbers": [""]}, "from_numbers"),
        ({"from_numbers": {"a": "+1555"}}, "from_numbers"),
        ({"name": 5}, "name"),
        ({"application_name": ["x"]}, "application_name"),
    ],
)
async def test_create_configuration_rejects_bad_fields(
    client: TestClient, fresh: Tenant, store: Store, change: dict[str, Any], field: str
) -> None:
    response = await create_config(client, fresh, **change)
    assert field in (await body_of(response, 400))["error"]
    assert len(await store.list_telephony_configs(fresh.org_id)) == 1


async def test_create_with_a_domain_that_normalizes_to_nothing_is_400(
    client: TestClient, fresh: Tenant, store: Store
) -> None:
    response = await create_config(client, fresh, domain_id="...")
    await body_of(response, 400)
    assert len(await store.list_telephony_configs(fresh.org_id)) == 1


async def test_patch_to_a_domain_that_normalizes_to_nothing_is_400(
    client: TestClient, fresh: Tenant, store: Store
) -> None:
    config_id = await telephony_id(client, fresh)
    response = await client.patch(
        f"/api/v1/telephony-configurations/{config_id}", json={"domain_id": "..."},
        headers=fresh.headers,
    )
    await body_of(response, 400)
    assert (await store.get_telephony_config(fresh.org_id, config_id)).account_id == (
        "seed.cloudonix.net")


@pytest.mark.parametrize(
    "domain_id", ["a b/../c?", "acme/../other", "acme?x=1", "-acme", "ac_me", "a" * 64, "%2e%2e"]
)
async def test_a_domain_the_admin_form_refuses_is_refused_by_the_api_too(
    client: TestClient, fresh: Tenant, store: Store, domain_id: str
) -> None:
    message = "'domain_id': A domain has letters, digits, dots and dashes only."
    response = await create_config(client, fresh, domain_id=domain_id)
    assert (await body_of(response, 400))["error"] == message
    config_id = await telephony_id(client, fresh)
    response = await client.patch(
        f"/api/v1/telephony-configurations/{config_id}", json={"domain_id": domain_id},
        headers=fresh.headers,
    )
    assert (await body_of(response, 400))["error"] == message
    assert [c.account_id for c in await store.list_telephony_configs(fresh.org_id)] == [
        "seed.cloudonix.net"]


async def test_token_rotation_through_the_api_with_real_calls(
    client: TestClient, fresh: Tenant, store: Store, dial: Dial, emulator: CloudonixEmulator
) -> None:
    created = await body_of(await create_config(client, fresh, domain_id="acme"), 201)
    emulator.add_domain(DOMAIN, fresh.token)
    await completed_call(dial, store, fresh)
    path = f"/api/v1/telephony-configurations/{created['id']}"

    # renaming keeps the stored token: the emulator still accepts the call
    response = await client.patch(path, json={"name": "Renamed"}, headers=fresh.headers)
    renamed = await body_of(response, 200)
    assert renamed["name"] == "Renamed"
    assert renamed["bearer_token_hint"] == "••••" + fresh.token[-4:]
    await completed_call(dial, store, fresh)

    # a new token replaces it: the emulator, still expecting the old one, answers 401
    response = await client.patch(path, json={"bearer_token": NEW_TOKEN}, headers=fresh.headers)
    assert (await body_of(response, 200))["bearer_token_hint"] == "••••" + NEW_TOKEN[-4:]
    assert (await store.get_telephony_config(fresh.org_id, created["id"])).value("bearer_token") == NEW_TOKEN
    call = await dial(fresh.workflow.uuid)
    await call.handshake()
    assert await call.wait_closed() == (
        4400, "session validation failed: Cloudonix answered HTTP 401")
    run_id = await latest_run_id(store, fresh.org_id, wait=5)
    assert run_id is not None
    assert (await wait_for_state(store, run_id, "failed")).state == "failed"
    assert emulator.requests[-1].authorized is False


async def test_patch_configuration_fields(client: TestClient, fresh: Tenant, store: Store) -> None:
    created = await body_of(await create_config(client, fresh), 201)
    path = f"/api/v1/telephony-configurations/{created['id']}"
    response = await client.patch(
        path, json={"domain_id": "Other", "from_numbers": ["+15550003333"],
                    "application_name": "app-2"},
        headers=fresh.headers,
    )
    patched = await body_of(response, 200)
    assert (patched["domain_id"], patched["from_numbers"], patched["application_name"]) == (
        "other.cloudonix.net", ["+15550003333"], "app-2")
    stored = await store.get_telephony_config(fresh.org_id, created["id"])
    assert (stored.account_id, stored.value("bearer_token")) == ("other.cloudonix.net", fresh.token)

    for change in ({"from_numbers": "+1555"}, {"from_numbers": [1]}, {"provider": "cloudonix"},
                   {"bearer_token": ""}, {"name": 123}):
        response = await client.patch(path, json=change, headers=fresh.headers)
        await body_of(response, 400)

    # moving onto a domain the organization already configured is a conflict
    response = await client.patch(path, json={"domain_id": "seed"}, headers=fresh.headers)
    await body_of(response, 409)
    stored = await store.get_telephony_config(fresh.org_id, created["id"])
    assert stored.account_id == "other.cloudonix.net"


async def test_delete_configuration(client: TestClient, fresh: Tenant, store: Store) -> None:
    created = await body_of(await create_config(client, fresh), 201)
    path = f"/api/v1/telephony-configurations/{created['id']}"
    response = await client.delete(path, headers=fresh.headers)
    assert response.status == 204
    assert await response.read() == b""
    await body_of(await client.get(path, headers=fresh.headers), 404)
    await body_of(await client.delete(path, headers=fresh.headers), 404)
    await body_of(await client.patch(path, json={"name": "x"}, headers=fresh.headers), 404)
    assert [c.account_id for c in await store.list_telephony_configs(fresh.org_id)] == [
        "seed.cloudonix.net"]


@pytest.mark.parametrize("config_id", ["abc", "999999", "-1", "1.5"])
async def test_unknown_configuration_is_404(
    client: TestClient, tenant: Tenant, config_id: str
) -> None:
    await body_of(await client.get(
        f"/api/v1/telephony-configurations/{config_id}", headers=tenant.headers), 404)


# -- cross-organization isolation -----------------------------------------------------------------


async def test_another_organization_sees_nothing_of_ours(
    client: TestClient, make_tenant: MakeTenant, store: Store, dial: Dial
) -> None:
    a = await make_tenant(name="Org A")
    b = await make_tenant(name="Org B")
    run = await completed_call(dial, store, a)
    config_id = await telephony_id(client, a)
    workflow = f"/api/v1/workflows/{a.workflow.uuid}"
    config = f"/api/v1/telephony-configurations/{config_id}"

    attempts = [
        ("GET", workflow, None),
        ("PATCH", workflow, {"name": "stolen"}),
        ("PATCH", workflow, {"status": "archived"}),
        ("POST", f"{workflow}/publish", None),
        ("GET", config, None),
        ("PATCH", config, {"name": "stolen", "bearer_token": "stolen-token-1234"}),
        ("DELETE", config, None),
        ("GET", f"/api/v1/workflow-runs/{run.id}", None),
        ("GET", f"/api/v1/workflow-runs/{run.id}/recording", None),
        ("GET", f"/api/v1/workflow-runs?workflow_uuid={a.workflow.uuid}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=b.headers)
        text = await response.text()
        assert response.status == 404, f"{method} {path}: {response.status} {text}"
        assert a.token not in text

    # A's things are untouched
    stored = await store.get_workflow(a.org_id, a.workflow.uuid)
    assert (stored.name, stored.status) == (a.workflow.name, "draft")
    kept = await store.get_telephony_config(a.org_id, config_id)
    assert (kept.name, kept.value("bearer_token")) == ("main", a.token)

    # B's lists hold only B's things
    listed = (await body_of(await client.get("/api/v1/workflows", headers=b.headers), 200))
    assert [w["uuid"] for w in listed["workflows"]] == [b.workflow.uuid]
    configs = await body_of(await client.get("/api/v1/telephony-configurations", headers=b.headers), 200)
    assert config_id not in [c["id"] for c in configs["telephony_configurations"]]
    assert len(configs["telephony_configurations"]) == 1
    runs = await body_of(await client.get("/api/v1/workflow-runs", headers=b.headers), 200)
    assert (runs["runs"], runs["total"]) == ([], 0)

    # and A still sees its own
    runs = await body_of(await client.get("/api/v1/workflow-runs", headers=a.headers), 200)
    assert [r["id"] for r in runs["runs"]] == [run.id]


# -- runs -------------------------------------------------------------------------------------------


RUN_FIELDS = {
    "id", "name", "workflow_uuid", "call_type", "mode", "state", "initial_context",
    "gathered_context", "logs", "created_at", "started_at", "ended_at", "duration_seconds",
    "end_reason", "transcript",
}


async def test_runs_listing_detail_and_recording(
    client: TestClient, tenant: Tenant, store: Store, dial: Dial
) -> None:
    made = [await completed_call(dial, store, tenant, call_id=f"C-{n}") for n in (1, 2, 3)]
    newest_first = [r.id for r in reversed(made)]
    base = f"/api/v1/workflow-runs?workflow_uuid={tenant.workflow.uuid}"

    async def page(query: str = "") -> dict[str, Any]:
        return await body_of(await client.get(base + query, headers=tenant.headers), 200)  # type: ignore[no-any-return]

    listed = await page()
    assert listed["total"] == 3
    assert [r["id"] for r in listed["runs"]] == newest_first
    assert [r["gathered_context"]["call_id"] for r in listed["runs"]] == ["C-3", "C-2", "C-1"]
    assert all(r["workflow_uuid"] == tenant.workflow.uuid for r in listed["runs"])

    assert [r["id"] for r in (await page("&limit=2"))["runs"]] == newest_first[:2]
    second = await page("&limit=2&offset=2")
    assert ([r["id"] for r in second["runs"]], second["total"]) == (newest_first[2:], 3)
    assert [r["id"] for r in (await page("&limit=1&offset=1"))["runs"]] == newest_first[1:2]
    assert (await page("&offset=3"))["runs"] == []

    completed = await page("&state=completed")
    assert (completed["total"], len(completed["runs"])) == (3, 3)
    failed = await page("&state=failed")
    assert (failed["total"], failed["runs"]) == (0, [])

    for query in ("&state=done", "&limit=0", "&limit=1000", "&limit=abc", "&offset=-1",
                  "&offset=x"):
        response = await client.get(base + query, headers=tenant.headers)
        assert isinstance((await body_of(response, 400))["error"], str), query

    # one run, with every field of the contract
    newest = made[-1]
    response = await client.get(f"/api/v1/workflow-runs/{newest.id}", headers=tenant.headers)
    detail = await body_of(response, 200)
    assert RUN_FIELDS <= set(detail)
    assert (detail["id"], detail["name"], detail["workflow_uuid"]) == (
        newest.id, newest.name, tenant.workflow.uuid)
    assert (detail["call_type"], detail["mode"], detail["state"]) == (
        "inbound", "cloudonix", "completed")
    assert detail["initial_context"] == {
        "caller_number": "+15555550100", "called_number": "+15555550199",
        "provider": "cloudonix", "direction": "inbound",
    }
    assert detail["gathered_context"]["call_id"] == "C-3"
    assert detail["logs"]["inbound_webhook"]["domain"] == "acme"
    assert detail["created_at"] and detail["started_at"] and detail["ended_at"]
    assert isinstance(detail["duration_seconds"], (int, float)) and detail["duration_seconds"] >= 0
    assert detail["end_reason"] == "caller_hangup"
    assert isinstance(detail["transcript"], list)
    for line in detail["transcript"]:
        assert {"role", "text", "start_ms", "end_ms", "interrupted"} <= set(line)

    for bad_id in ("abc", "1.5", "999999"):
        response = await client.get(f"/api/v1/workflow-runs/{bad_id}", headers=tenant.headers)
        await body_of(response, 404)

    # the recording, whole and by range
    recording = f"/api/v1/workflow-runs/{newest.id}/recording"
    response = await client.get(recording, headers=tenant.headers)
    assert response.status == 200
    assert response.content_type == "audio/wav"
    wav = await response.read()
    assert wav.startswith(b"RIFF") and wav[8:12] == b"WAVE"
    response = await client.get(recording, headers=tenant.headers | {"Range": "bytes=0-3"})
    assert response.status == 206
    assert await response.read() == b"RIFF"
    response = await client.get(recording, headers=tenant.headers | {"Range": "bytes=-4"})
    assert response.status == 206
    assert await response.read() == wav[-4:]
    for unsatisfiable in ("bytes=-0", "bytes=-00", f"bytes={len(wav)}-"):
        response = await client.get(recording, headers=tenant.headers | {"Range": unsatisfiable})
        assert response.status == 416, unsatisfiable
        assert response.headers["Content-Range"] == f"bytes */{len(wav)}"


async def test_runs_of_the_whole_organization_and_unknown_workflow(
    client: TestClient, tenant: Tenant, store: Store, dial: Dial
) -> None:
    run = await completed_call(dial, store, tenant)
    listed = await body_of(await client.get("/api/v1/workflow-runs", headers=tenant.headers), 200)
    assert ([r["id"] for r in listed["runs"]], listed["total"]) == ([run.id], 1)
    assert "transcript" not in listed["runs"][0]  # the list is light; the detail has it
    response = await client.get(
        f"/api/v1/workflow-runs?workflow_uuid={uuid.uuid4()}", headers=tenant.headers)
    await body_of(response, 404)


async def test_run_without_recording_is_404(
    client: TestClient, tenant: Tenant, store: Store, dial: Dial
) -> None:
    call = await dial(tenant.workflow.uuid)
    await call.send(b"\x00")  # no handshake: a failed run, with nothing recorded
    assert (await call.wait_closed())[0] == 4400
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    await wait_for_state(store, run_id, "failed")
    response = await client.get(f"/api/v1/workflow-runs/{run_id}", headers=tenant.headers)
    detail = await body_of(response, 200)
    assert (detail["state"], detail["mode"], detail["has_recording"]) == ("failed", "cloudonix", False)
    response = await client.get(f"/api/v1/workflow-runs/{run_id}/recording", headers=tenant.headers)
    assert "recording" in (await body_of(response, 404))["error"]


# -- stream rejections ---------------------------------------------------------------------------


async def test_quota_rejection_is_listed_for_the_organization_shortened(
    client: TestClient, make_tenant: MakeTenant, store: Store, dial: Dial
) -> None:
    tenant = await make_tenant(max_concurrent_calls=0)
    call = await dial(tenant.workflow.uuid)
    reason = "quota exceeded: 0 concurrent calls already running"
    assert await call.wait_closed() == (1008, reason)
    assert (await store.list_runs(tenant.org_id))[1] == 0

    response = await client.get("/api/v1/stream-rejections", headers=tenant.headers)
    text = await response.text()
    rejections = (await body_of(response, 200))["rejections"]
    assert len(rejections) == 1
    rejection = rejections[0]
    assert (rejection["code"], rejection["reason"], rejection["provider"]) == (
        1008, reason, "cloudonix")
    assert rejection["agent"] == tenant.workflow.uuid[:8] + "…"
    assert rejection["created_at"]
    assert tenant.workflow.uuid not in text
    assert tenant.workflow.uuid[9:] not in text


async def test_unknown_provider_rejection_is_not_shown_to_the_organization(
    client: TestClient, tenant: Tenant, make_tenant: MakeTenant, store: Store, dial: Dial
) -> None:
    call = await dial(tenant.workflow.uuid, provider="skype")
    assert await call.wait_closed() == (1008, "unknown provider 'skype'")
    assert await latest_run_id(store, tenant.org_id) is None
    # rejected before the workflow lookup: recorded, but belonging to no organization
    everywhere = await store.list_rejections()
    assert [(r.code, r.workflow_id) for r in everywhere] == [(1008, None)]
    response = await client.get("/api/v1/stream-rejections", headers=tenant.headers)
    assert (await body_of(response, 200))["rejections"] == []

    other = await make_tenant(max_concurrent_calls=0)
    call = await dial(other.workflow.uuid)
    assert (await call.wait_closed())[0] == 1008
    # the quota rejection of another organization is not ours either
    response = await client.get("/api/v1/stream-rejections", headers=tenant.headers)
    assert (await body_of(response, 200))["rejections"] == []
    response = await client.get("/api/v1/stream-rejections", headers=other.headers)
    assert len((await body_of(response, 200))["rejections"]) == 1


# -- edits are compare-and-set: If-Match (412) or "revision" (409) ----------------------------------


async def read(client: TestClient, tenant: Tenant, path: str) -> tuple[str, dict[str, Any]]:
    """One client's read: the ETag and the body, which agree on the revision."""
    response = await client.get(path, headers=tenant.headers)
    body = await body_of(response, 200)
    assert response.headers["ETag"] == f'"{body["revision"]}"'
    return response.headers["ETag"], body


async def test_two_clients_edit_a_workflow_with_if_match_and_the_second_gets_412(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    etag_a, _ = await read(client, tenant, path)
    etag_b, _ = await read(client, tenant, path)
    assert etag_a == etag_b

    first = starter_definition() | {"global_prompt": "First."}
    response = await client.patch(path, json={"name": "First", "definition": first},
                                  headers=tenant.headers | {"If-Match": etag_a})
    patched = await body_of(response, 200)
    assert response.headers["ETag"] == f'"{patched["revision"]}"' != etag_a

    second = starter_definition() | {"global_prompt": "Second."}
    response = await client.patch(path, json={"name": "Second", "definition": second},
                                  headers=tenant.headers | {"If-Match": etag_b})
    assert "changed" in (await body_of(response, 412))["error"]
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.name, stored.definition, stored.version) == ("First", first, 2)

    # read again, the same edit goes through
    etag_b, _ = await read(client, tenant, path)
    response = await client.patch(path, json={"name": "Second"},
                                  headers=tenant.headers | {"If-Match": etag_b})
    assert (await body_of(response, 200))["name"] == "Second"


async def test_two_clients_edit_a_workflow_with_revision_and_the_second_gets_409(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    _, a = await read(client, tenant, path)
    _, b = await read(client, tenant, path)
    response = await client.patch(path, json={"status": "archived", "revision": a["revision"]},
                                  headers=tenant.headers)
    assert (await body_of(response, 200))["revision"] == a["revision"] + 1
    response = await client.patch(path, json={"name": "Stale", "revision": b["revision"]},
                                  headers=tenant.headers)
    assert "reload it" in (await body_of(response, 409))["error"]
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.name, stored.status) == (tenant.workflow.name, "archived")


async def test_publish_honours_if_match_and_revision(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    etag, body = await read(client, tenant, path)
    edited = starter_definition() | {"global_prompt": "Unreviewed."}
    await body_of(await client.patch(path, json={"definition": edited}, headers=tenant.headers), 200)

    # publishing what was reviewed at `etag` must not publish the newer draft
    response = await client.post(f"{path}/publish", headers=tenant.headers | {"If-Match": etag})
    await body_of(response, 412)
    response = await client.post(f"{path}/publish", json={"revision": body["revision"]},
                                 headers=tenant.headers)
    await body_of(response, 409)
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.status, stored.published_version) == ("draft", None)

    etag, _ = await read(client, tenant, path)
    response = await client.post(f"{path}/publish", headers=tenant.headers | {"If-Match": etag})
    published = await body_of(response, 200)
    assert published["published_version"] == 2 and response.headers["ETag"] != etag


async def test_two_clients_edit_a_telephony_configuration_and_the_second_is_refused(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    config_id = await telephony_id(client, tenant)
    path = f"/api/v1/telephony-configurations/{config_id}"
    etag, read_at = await read(client, tenant, path)
    response = await client.patch(path, json={"name": "First", "from_numbers": ["+15550001111"]},
                                  headers=tenant.headers | {"If-Match": etag})
    assert (await body_of(response, 200))["name"] == "First"
    assert response.headers["ETag"] != etag

    response = await client.patch(path, json={"name": "Second"},
                                  headers=tenant.headers | {"If-Match": etag})
    await body_of(response, 412)
    response = await client.patch(path, json={"name": "Second", "revision": read_at["revision"]},
                                  headers=tenant.headers)
    await body_of(response, 409)
    response = await client.delete(path, headers=tenant.headers | {"If-Match": etag})
    await body_of(response, 412)
    stored = await store.get_telephony_config(tenant.org_id, config_id)
    assert (stored.name, stored.from_numbers) == ("First", ["+15550001111"])

    etag, _ = await read(client, tenant, path)
    response = await client.delete(path, headers=tenant.headers | {"If-Match": etag})
    assert response.status == 204


async def test_the_etag_changes_with_every_edit_and_creation_has_one(
    client: TestClient, tenant: Tenant
) -> None:
    response = await client.post("/api/v1/workflows", json={"name": "Tagged"}, headers=tenant.headers)
    created = await body_of(response, 201)
    assert response.headers["ETag"] == '"1"' and created["revision"] == 1
    path = f"/api/v1/workflows/{created['uuid']}"
    seen = {(await read(client, tenant, path))[0]}
    for change in ({"name": "Renamed"}, {"status": "archived"}, {"status": "draft"}):
        await body_of(await client.patch(path, json=change, headers=tenant.headers), 200)
        etag, _ = await read(client, tenant, path)
        assert etag not in seen
        seen.add(etag)

    config_path = f"/api/v1/telephony-configurations/{await telephony_id(client, tenant)}"
    before, _ = await read(client, tenant, config_path)
    await body_of(await client.patch(config_path, json={"name": "x"}, headers=tenant.headers), 200)
    assert (await read(client, tenant, config_path))[0] != before


async def test_if_match_star_lists_and_weak_tags(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    assert (await read(client, tenant, path))[0] == '"1"'
    for if_match, status in (
        ("*", 200),  # any current revision
        ('"999", "2"', 200),  # one of a list
        ('W/"3"', 412),  # a weak tag never matches (strong comparison)
        ('"3", W/"3"', 200),
        ('"1"', 412),
    ):
        response = await client.patch(path, json={"name": f"n{if_match[:3]}"},
                                      headers=tenant.headers | {"If-Match": if_match})
        await body_of(response, status)
    assert (await store.get_workflow(tenant.org_id, tenant.workflow.uuid)).revision == 4


@pytest.mark.parametrize("if_match", ["3", '"3', 'W/', '"3" junk', '"3";', "**", 'W/"3" "4"'])
async def test_a_malformed_if_match_is_a_400(
    client: TestClient, tenant: Tenant, store: Store, if_match: str
) -> None:
    config = f"/api/v1/telephony-configurations/{await telephony_id(client, tenant)}"
    workflow = f"/api/v1/workflows/{tenant.workflow.uuid}"
    for method, path in (("PATCH", workflow), ("POST", f"{workflow}/publish"),
                         ("PATCH", config), ("DELETE", config)):
        response = await client.request(method, path, json={"name": "x"} if method == "PATCH" else None,
                                        headers=tenant.headers | {"If-Match": if_match})
        assert "If-Match" in (await body_of(response, 400))["error"], (method, path)
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.revision, stored.status) == (1, "draft")
    assert len(await store.list_telephony_configs(tenant.org_id)) == 1


@pytest.mark.parametrize("revision", ["1", 0, -1, True, 1.5, [1], 2**63])
async def test_a_revision_that_is_not_a_positive_integer_is_a_400(
    client: TestClient, tenant: Tenant, store: Store, revision: Any
) -> None:
    workflow = f"/api/v1/workflows/{tenant.workflow.uuid}"
    config = f"/api/v1/telephony-configurations/{await telephony_id(client, tenant)}"
    for method, path in (("PATCH", workflow), ("POST", f"{workflow}/publish"), ("PATCH", config)):
        response = await client.request(method, path, json={"name": "x", "revision": revision},
                                        headers=tenant.headers)
        assert "revision" in (await body_of(response, 400))["error"]
    assert (await store.get_workflow(tenant.org_id, tenant.workflow.uuid)).revision == 1


async def test_the_store_itself_refuses_a_stale_revision(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    """What closes the gap between a handler's read and its write: the compare-and-set is in
    the write's transaction, so a request that read revision 1 cannot overwrite revision 2."""
    org, uuid = tenant.org_id, tenant.workflow.uuid
    await store.update_workflow(org, uuid, name="Second", revision=1)
    with pytest.raises(Stale):
        await store.update_workflow(org, uuid, name="Lost", revision=1)
    with pytest.raises(Stale):
        await store.publish_workflow(org, uuid, revision=1)
    assert (await store.get_workflow(org, uuid)).name == "Second"

    config_id = await telephony_id(client, tenant)
    await store.update_telephony_config(org, config_id, ConfigInput(name="Second"), revision=1)
    with pytest.raises(Stale):
        await store.update_telephony_config(org, config_id, ConfigInput(name="Lost"), revision=1)
    with pytest.raises(Stale):
        await store.delete_telephony_config(org, config_id, revision=1)
    assert (await store.get_telephony_config(org, config_id)).name == "Second"

    await store.set_user_quotas(org, tenant.user_id, monthly_minutes_limit=5,
                                max_concurrent_calls=None, revision=1)
    with pytest.raises(Stale):
        await store.set_user_quotas(org, tenant.user_id, monthly_minutes_limit=6,
                                    max_concurrent_calls=None, revision=1)
    assert (await store.get_user(tenant.user_id)).monthly_minutes_limit == 5


# -- nothing answers 500 to bad input ------------------------------------------------------------


async def test_garbage_requests_get_4xx_never_500(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    config_id = await telephony_id(client, tenant)
    workflow = f"/api/v1/workflows/{tenant.workflow.uuid}"
    config = f"/api/v1/telephony-configurations/{config_id}"
    as_json = {"Content-Type": "application/json"}
    garbage: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/api/v1/workflows", {"data": "{bad json", "headers": as_json}),
        ("POST", "/api/v1/workflows", {"data": "[1, 2]", "headers": as_json}),
        ("POST", "/api/v1/workflows", {"json": {"name": 123}}),
        ("POST", "/api/v1/workflows", {"json": {"name": ["a"]}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "x" * 1000}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": "x"}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": []}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": {"nodes": "x"}}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": {"nodes": [1, None]}}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": {
            "nodes": [{"id": "s", "kind": "start"}], "edges": "x", "settings": []}}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": {
            "nodes": [{"id": "s", "kind": "start", "say": 5}], "edges": [7],
            "settings": {"max_duration_seconds": "long"}}}}),
        ("POST", "/api/v1/workflows", {"json": {"name": "ok", "definition": {
            "nodes": [{"id": "s", "kind": "start"}],
            "edges": [{"from": "s", "to": "s", "dtmf": 1, "phrases": "yes"}]}}}),
        ("PATCH", workflow, {"json": {"name": 123}}),
        ("PATCH", workflow, {"json": {"name": ""}}),
        ("PATCH", workflow, {"json": {"definition": "x"}}),
        ("PATCH", workflow, {"json": {"status": {"a": 1}}}),
        ("PATCH", workflow, {"data": "{", "headers": as_json}),
        ("POST", "/api/v1/telephony-configurations", {"json": {"provider": 1}}),
        ("POST", "/api/v1/telephony-configurations", {"json": {
            "provider": "cloudonix", "domain_id": 5, "bearer_token": "t" * 20}}),
        ("POST", "/api/v1/telephony-configurations", {"json": {
            "provider": "cloudonix", "domain_id": "x", "bearer_token": ["t"]}}),
        ("POST", "/api/v1/telephony-configurations", {"json": {
            "provider": "cloudonix", "domain_id": "x", "bearer_token": "t" * 20,
            "from_numbers": [1]}}),
        ("POST", "/api/v1/telephony-configurations", {"data": "nope", "headers": as_json}),
        ("PATCH", config, {"json": {"from_numbers": [1]}}),
        ("PATCH", config, {"json": {"from_numbers": "+1555"}}),
        ("PATCH", config, {"json": {"domain_id": []}}),
        ("PATCH", config, {"data": "[]", "headers": as_json}),
        ("GET", "/api/v1/workflow-runs?limit=-5", {}),
        ("GET", "/api/v1/workflow-runs?limit=1e3", {}),
        ("GET", "/api/v1/workflow-runs?offset=abc", {}),
        ("GET", "/api/v1/workflow-runs?state=", {}),
        ("GET", "/api/v1/workflow-runs/abc", {}),
        ("GET", "/api/v1/workflow-runs/abc/recording", {}),
        ("GET", "/api/v1/telephony-configurations/abc", {}),
        ("DELETE", "/api/v1/telephony-configurations/abc", {}),
        ("PUT", "/api/v1/workflows", {"json": {"name": "x"}}),
        ("DELETE", workflow, {}),
        ("GET", "/api/v1/no-such-thing", {}),
    ]
    for method, path, kwargs in garbage:
        kwargs = copy.deepcopy(kwargs)
        kwargs["headers"] = tenant.headers | kwargs.get("headers", {})
        response = await client.request(method, path, **kwargs)
        text = await response.text()
        assert 400 <= response.status < 500, f"{method} {path} {kwargs}: {response.status} {text}"
        assert response.content_type == "application/json", f"{method} {path}: {text}"
        assert "error" in await response.json()

    # nothing was written by any of it
    assert len(await store.list_workflows(tenant.org_id)) == 1
    stored = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert (stored.name, stored.version, stored.status) == (tenant.workflow.name, 1, "draft")
    assert len(await store.list_telephony_configs(tenant.org_id)) == 1


async def test_edge_naming_a_node_by_a_list_is_a_400(client: TestClient, tenant: Tenant) -> None:
    definition = {
        "nodes": [{"id": "s", "kind": "start"}, {"id": "e", "kind": "end"}],
        "edges": [{"from": ["s"], "to": {"id": "e"}}],
    }
    response = await client.post(
        "/api/v1/workflows", json={"name": "x", "definition": definition}, headers=tenant.headers)
    problems = (await body_of(response, 400))["problems"]
    assert mentions(problems, "edges[0].from") and mentions(problems, "edges[0].to")


@pytest.mark.parametrize(
    "path",
    ["/api/v1/workflow-runs/99999999999999999999",
     "/api/v1/workflow-runs/99999999999999999999/recording",
     "/api/v1/telephony-configurations/99999999999999999999"],
)
async def test_huge_ids_are_404(client: TestClient, tenant: Tenant, path: str) -> None:
    await body_of(await client.get(path, headers=tenant.headers), 404)


async def test_deeply_nested_json_is_a_400(client: TestClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/workflows", data="[" * 100_000 + "]" * 100_000,
        headers=tenant.headers | {"Content-Type": "application/json"},
    )
    await body_of(response, 400)


async def test_unknown_charset_is_a_400(client: TestClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/workflows", data=b'{"name": "x"}',
        headers=tenant.headers | {"Content-Type": "application/json; charset=no-such-charset"},
    )
    await body_of(response, 400)
