"""The OpenAPI document (/api/v1/openapi.json): valid OpenAPI 3.1, every API route in it, and
the real answers of the real app matching what it declares."""
from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from agent_stream.api_schemas import MAX_PAGE, MAX_ROW_ID
from agent_stream.openapi import API_PREFIX, operation_of, undescribed_routes, undocumented_reason
from agent_stream.simulator import tone_ulaw
from agent_stream.store import Store
from agent_stream.workflow import starter_definition, validate_definition
from tests.conftest import Dial, Tenant, latest_run_id, wait_for_state

DOCUMENT = "/api/v1/openapi.json"


async def document(client: TestClient) -> dict[str, Any]:
    response = await client.get(DOCUMENT)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()  # type: ignore[no-any-return]


def schema_of(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema`, whose $refs point into the document's components."""
    return Draft202012Validator(schema | {"components": doc["components"]})


class Conformance:
    """Checks real answers against the operation and status the document declares for them."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    async def check(self, response: ClientResponse, route: str) -> Any:
        """The answer's JSON body (None for none), after checking it against the document."""
        method = response.method.lower()
        operation = self.doc["paths"][route][method]
        declared = operation["responses"].get(str(response.status))
        data = await response.read()
        assert declared is not None, f"{method} {route}: {response.status} is undeclared: {data!r}"
        self.seen.add((method, route, response.status))
        for name in declared.get("headers", {}):
            assert name in response.headers, f"{method} {route} {response.status}: no {name}"
        content = declared.get("content")
        if content is None:
            assert not data, f"{method} {route}: a body where none is declared"
            return None
        assert response.content_type in content, (method, route, response.content_type)
        if response.content_type != "application/json":
            return None
        body = await response.json()
        errors = sorted(schema_of(self.doc, content["application/json"]["schema"]).iter_errors(body),
                        key=str)
        assert not errors, f"{method} {route} {response.status}: {errors[0]}"
        return body


async def test_the_document_is_valid_openapi_3_1_and_needs_no_key(client: TestClient) -> None:
    doc = await document(client)
    assert doc["openapi"].startswith("3.1")
    validate_spec(doc)
    assert doc["components"]["securitySchemes"]["apiKey"] == doc["components"][
        "securitySchemes"]["apiKey"] | {"type": "http", "scheme": "bearer"}
    # a second read answers the same document (it is built once)
    assert await document(client) == doc


async def test_every_api_route_is_described(client: TestClient) -> None:
    doc = await document(client)
    assert undescribed_routes(client.app) == []
    described = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if not isinstance(path, str) or not path.startswith(API_PREFIX) or route.method == "HEAD":
            continue
        if undocumented_reason(route.handler) is not None:
            assert path not in doc["paths"]
            continue
        assert operation_of(route.handler) is not None
        assert route.method.lower() in doc["paths"].get(path, {}), f"{route.method} {path}"
        described.add((route.method.lower(), path))
    in_document = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert described == in_document
    # what contract section 3 names is there (webhooks join when they are registered)
    for method, path in [
        ("get", "/api/v1/health"), ("get", "/api/v1/ready"), ("get", DOCUMENT),
        ("post", "/api/v1/workflows"), ("get", "/api/v1/workflows"),
        ("get", "/api/v1/workflows/{uuid}"), ("patch", "/api/v1/workflows/{uuid}"),
        ("post", "/api/v1/workflows/{uuid}/publish"),
        ("post", "/api/v1/telephony-configurations"), ("get", "/api/v1/telephony-configurations"),
        ("patch", "/api/v1/telephony-configurations/{id}"),
        ("delete", "/api/v1/telephony-configurations/{id}"),
        ("get", "/api/v1/workflow-runs"), ("get", "/api/v1/workflow-runs/{id}"),
        ("get", "/api/v1/workflow-runs/{id}/recording"), ("get", "/api/v1/stream-rejections"),
    ]:
        assert method in doc["paths"][path], (method, path)


async def test_the_document_says_what_the_code_enforces(client: TestClient) -> None:
    doc = await document(client)
    paths = doc["paths"]
    runs = {p["name"]: p for p in paths["/api/v1/workflow-runs"]["get"]["parameters"]}
    assert (runs["limit"]["schema"]["minimum"], runs["limit"]["schema"]["maximum"]) == (1, MAX_PAGE)
    assert runs["offset"]["schema"]["minimum"] == 0
    assert set(runs["state"]["schema"]["enum"]) == {"pending", "running", "completed", "failed"}
    config_id = paths["/api/v1/telephony-configurations/{id}"]["patch"]["parameters"][0]
    assert config_id["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_ROW_ID}
    for method, path in [("patch", "/api/v1/workflows/{uuid}"),
                         ("post", "/api/v1/workflows/{uuid}/publish"),
                         ("patch", "/api/v1/telephony-configurations/{id}"),
                         ("delete", "/api/v1/telephony-configurations/{id}")]:
        operation = paths[path][method]
        assert "If-Match" in [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert "412" in operation["responses"]
    get_workflow = paths["/api/v1/workflows/{uuid}"]["get"]["responses"]["200"]
    assert "ETag" in get_workflow["headers"]
    recording = paths["/api/v1/workflow-runs/{id}/recording"]["get"]["responses"]
    assert "audio/wav" in recording["200"]["content"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            public = path in ("/api/v1/health", "/api/v1/ready", DOCUMENT)
            assert (operation["security"] == []) is public, (method, path)
            assert ("401" in operation["responses"]) is not public, (method, path)
    # the telephony body is chosen by provider, from each provider's own fields
    create = doc["components"]["schemas"]["TelephonyConfigurationCreate"]
    mapping = create["discriminator"]["mapping"]
    assert set(mapping) == {"cloudonix", "twilio", "telnyx", "plivo", "vonage", "asterisk",
                            "ari", "exotel"}
    twilio = doc["components"]["schemas"]["TwilioConfigurationCreate"]
    assert set(twilio["required"]) == {"provider", "account_sid", "auth_token"}
    assert twilio["properties"]["auth_token"]["writeOnly"] is True
    assert "AC[0-9a-fA-F]{32}" in twilio["properties"]["account_sid"]["pattern"]
    answer = doc["components"]["schemas"]["TwilioConfiguration"]["properties"]
    assert "auth_token" not in answer and {"has_auth_token", "auth_token_hint"} <= set(answer)


def test_the_definition_schema_takes_every_definition_the_check_takes() -> None:
    """The definition's shape is in the schema, its graph in validate_definition: a valid
    definition must be valid to the schema, and a shape the schema refuses is refused."""
    from agent_stream.api_schemas import Definition

    schema = Definition.model_json_schema()
    validator = Draft202012Validator(schema)
    valid = [
        starter_definition(),
        {"nodes": [{"id": "s", "kind": "start", "say": "Hi", "interruptible": False},
                   {"id": "t", "kind": "transfer", "destination": "+15555550123"}],
         "edges": [{"from": "s", "to": "t", "dtmf": "#", "condition": "asks", "fallback": True}],
         "settings": {"engine": "llm", "llm": {"base_url": "http://x:1/v1", "model": "m"},
                      "stt": "pocketsphinx", "tts": {"provider": "openai", "api_key": "k"},
                      "max_duration_seconds": 1.5}},
    ]
    for definition in valid:
        assert validate_definition(definition) == []
        assert not list(validator.iter_errors(definition)), definition
    bad_shapes: list[tuple[str, Any]] = [
        ("nodes", []), ("nodes", [{"id": "", "kind": "start"}]), ("nodes", [{"id": "s"}]),
        ("nodes", [{"id": "s", "kind": "start", "say": 5}]),
        ("nodes", [{"id": "s", "kind": "start", "interruptible": "yes"}]),
        ("nodes", [{"id": "s", "kind": "transfer", "destination": 5}]),
        ("edges", [{"from": "start", "to": "bye", "dtmf": "12"}]),
        ("edges", [{"from": ["start"], "to": "bye"}]),
        ("edges", [{"from": "start", "to": "bye", "phrases": "yes"}]),
        ("edges", [{"from": "start", "to": "bye", "fallback": "yes"}]),
        ("settings", {"max_duration_seconds": True}), ("settings", {"max_duration_seconds": 0}),
        ("settings", {"engine": "gpt"}), ("settings", []), ("global_prompt", 7),
        ("version", "1"),
    ]
    for key, value in bad_shapes:
        definition = starter_definition() | {key: value}
        assert validate_definition(definition), (key, value)
        assert list(validator.iter_errors(definition)), (key, value)


async def completed_run(dial: Dial, store: Store, tenant: Tenant) -> int:
    call = await dial(tenant.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    assert (await call.wait_closed())[0] == 1000
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    await wait_for_state(store, run_id, "completed", "failed")
    return run_id


async def test_real_answers_match_their_declared_schemas(
    client: TestClient, tenant: Tenant, store: Store, dial: Dial
) -> None:
    doc = await document(client)
    check = Conformance(doc).check
    auth = tenant.headers
    wf = "/api/v1/workflows/{uuid}"
    cfg = "/api/v1/telephony-configurations/{id}"

    await check(await client.get("/api/v1/health"), "/api/v1/health")
    await check(await client.get("/api/v1/ready"), "/api/v1/ready")
    await check(await client.get("/api/v1/workflows"), "/api/v1/workflows")  # 401

    # workflows: create (with secrets in the settings), read, list, edit, publish, errors
    definition = starter_definition()
    definition["settings"] |= {"engine": "llm", "llm": {"base_url": "http://llm.example/v1",
                                                        "model": "m", "api_key": "sk-secret-1234"}}
    created = await check(await client.post("/api/v1/workflows", headers=auth,
                                             json={"name": "Doc", "definition": definition}),
                          "/api/v1/workflows")
    assert created["definition"]["settings"]["llm"]["api_key_hint"] == "••••1234"
    path = f"/api/v1/workflows/{created['uuid']}"
    await check(await client.get(path, headers=auth), wf)
    await check(await client.get("/api/v1/workflows", headers=auth), "/api/v1/workflows")
    await check(await client.patch(path, headers=auth, json={"name": "Doc 2"}), wf)
    await check(await client.patch(path, headers=auth | {"If-Match": '"1"'}, json={"name": "x"}), wf)
    await check(await client.patch(path, headers=auth, json={"name": "x", "revision": 1}), wf)
    await check(await client.patch(path, headers=auth, json={"status": "published"}), wf)
    broken = copy.deepcopy(definition)
    broken["edges"][0]["to"] = "nowhere"
    invalid = await check(await client.patch(path, headers=auth, json={"definition": broken}), wf)
    assert invalid["problems"]
    await check(await client.post(f"{path}/publish", headers=auth), wf + "/publish")
    await check(await client.post(f"{path}/publish", headers=auth, json={"revision": 99}),
                wf + "/publish")
    await check(await client.get("/api/v1/workflows/nope", headers=auth), wf)
    await check(await client.post("/api/v1/workflows", headers=auth, json={"name": ""}),
                "/api/v1/workflows")

    # telephony configurations of several providers
    for body in (
        {"provider": "twilio", "account_sid": "AC" + "ab" * 16, "auth_token": "tw-token-5678",
         "from_numbers": ["+15550001111"]},
        {"provider": "telnyx", "api_key": "KEY-telnyx-0000"},
        {"provider": "ari", "ari_url": "http://pbx.example:8088/ari", "ari_username": "u",
         "ari_password": "p" * 12},
        {"provider": "exotel", "account_sid": "acme1", "api_key": "k1", "api_token": "t" * 12},
    ):
        made = await check(await client.post("/api/v1/telephony-configurations", headers=auth,
                                             json=body), "/api/v1/telephony-configurations")
        assert made["provider"] == ("asterisk" if body["provider"] == "ari" else body["provider"])
        one = f"/api/v1/telephony-configurations/{made['id']}"
        await check(await client.get(one, headers=auth), cfg)
        await check(await client.patch(one, headers=auth, json={"name": "renamed"}), cfg)
    await check(await client.get("/api/v1/telephony-configurations", headers=auth),
                "/api/v1/telephony-configurations")
    refused = await check(await client.post(
        "/api/v1/telephony-configurations", headers=auth,
        json={"provider": "twilio", "account_sid": "AC12", "auth_token": 5}),
        "/api/v1/telephony-configurations")
    assert [p["field"] for p in refused["problems"]] == ["account_sid", "auth_token"]
    assert refused["error"] == ("'account_sid': An account SID is AC followed by 32 hexadecimal "
                                "characters.")
    configs = await store.list_telephony_configs(tenant.org_id)
    last = f"/api/v1/telephony-configurations/{configs[-1].id}"
    await check(await client.delete(last, headers=auth | {"If-Match": '"7"'}), cfg)
    await check(await client.delete(last, headers=auth), cfg)
    await check(await client.delete(last, headers=auth), cfg)  # 404 now
    await check(await client.patch(f"/api/v1/telephony-configurations/{configs[0].id}",
                                   headers=auth, json={"revision": 0}), cfg)

    # runs: a real call's run, its listing, its recording, and refusals
    run_id = await completed_run(dial, store, tenant)
    listed = await check(await client.get("/api/v1/workflow-runs", headers=auth),
                         "/api/v1/workflow-runs")
    assert [r["id"] for r in listed["runs"]] == [run_id]
    await check(await client.get("/api/v1/workflow-runs?limit=0", headers=auth),
                "/api/v1/workflow-runs")
    detail = await check(await client.get(f"/api/v1/workflow-runs/{run_id}", headers=auth),
                         "/api/v1/workflow-runs/{id}")
    assert detail["state"] == "completed" and detail["has_recording"] is True
    await check(await client.get(f"/api/v1/workflow-runs/{run_id}/recording", headers=auth),
                "/api/v1/workflow-runs/{id}/recording")
    await check(await client.get(f"/api/v1/workflow-runs/{run_id}/recording",
                                 headers=auth | {"Range": "bytes=0-9"}),
                "/api/v1/workflow-runs/{id}/recording")
    await check(await client.get("/api/v1/workflow-runs/0", headers=auth),
                "/api/v1/workflow-runs/{id}")
    await dial("00000000-0000-4000-8000-000000000000")  # refused: 1008, listed
    rejections = await check(await client.get("/api/v1/stream-rejections", headers=auth),
                             "/api/v1/stream-rejections")
    assert isinstance(rejections["rejections"], list)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/workflows/%00", "/api/v1/workflows/%FF%FE", "/api/v1/workflows/" + "a" * 5000,
     "/api/v1/workflow-runs?workflow_uuid=%00", "/api/v1/workflow-runs/-1",
     "/api/v1/workflow-runs/0", f"/api/v1/workflow-runs/{2**64}",
     "/api/v1/telephony-configurations/1e3", "/api/v1/workflow-runs/%00/recording"],
)
async def test_odd_identifiers_are_404(client: TestClient, tenant: Tenant, path: str) -> None:
    response = await client.get(path, headers=tenant.headers)
    assert response.status == 404, await response.text()
    assert "error" in await response.json()


async def test_text_a_database_may_not_hold_is_refused_or_kept_never_a_500(
    client: TestClient, tenant: Tenant
) -> None:
    """A NUL is no text PostgreSQL stores: a name refuses it, a definition's text keeps it."""
    auth = tenant.headers
    response = await client.post("/api/v1/workflows", headers=auth, json={"name": "a\x00"})
    assert response.status == 400
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hello\x00 \u2028 \U0001f600"
    response = await client.post("/api/v1/workflows", headers=auth,
                                 json={"name": "Odd", "definition": definition})
    assert response.status == 201, await response.text()
    created = await response.json()
    response = await client.get(f"/api/v1/workflows/{created['uuid']}", headers=auth)
    assert (await response.json())["definition"] == definition
    response = await client.post("/api/v1/telephony-configurations", headers=auth, json={
        "provider": "telnyx", "api_key": "KEY-1234", "name": "bad\x00name"})
    assert response.status == 400
    assert (await response.json())["problems"][0]["field"] == "name"


async def test_the_if_match_pattern_is_what_the_server_parses(
    client: TestClient, tenant: Tenant
) -> None:
    doc = await document(client)
    operation = doc["paths"]["/api/v1/workflows/{uuid}"]["patch"]
    pattern = next(p for p in operation["parameters"] if p["name"] == "If-Match")["schema"]["pattern"]
    path = f"/api/v1/workflows/{tenant.workflow.uuid}"
    for value in ["*", " * ", "", '"1"', '"9", W/"1"', '"9",,"1"', ", ", "3", '"3', "W/",
                  '"3" junk', '"3";', "**", 'W/"3" "4"', '"3""4"']:
        response = await client.patch(path, headers=tenant.headers | {"If-Match": value},
                                      json={"name": "Tagged"})
        assert (response.status != 400) == bool(re.search(pattern, value)), (value, response.status)


async def test_an_unsupported_method_is_405_with_allow(client: TestClient, tenant: Tenant) -> None:
    response = await client.put("/api/v1/workflows", headers=tenant.headers, json={"name": "x"})
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}
    assert "error" in await response.json()


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "   "}, "name", "blank"),
        ({"name": "a\x00b"}, "name", "one line"),
        ({"name": "x" * 201}, "name", "longer than 200"),
        ({"name": 5}, "name", "text"),
        ({"name": "ok", "definition": "x"}, "definition", "object"),
    ],
)
async def test_a_refused_body_says_which_field_and_what_is_wrong(
    client: TestClient, tenant: Tenant, body: dict[str, Any], field: str, says: str
) -> None:
    response = await client.post("/api/v1/workflows", headers=tenant.headers, json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert field in error and says in error, error
