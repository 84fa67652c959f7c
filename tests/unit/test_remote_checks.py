"""The validation's look-ups from the controller (sgl_deploy.remote_checks): the SGLang and gateway pins
in the configured package index (PEP 691 JSON, PEP 503 HTML, a find-links page, a wheelhouse directory)
and the model id and revision on the hub, against local fakes on 127.0.0.1 (no real network)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sgl_deploy import remote_checks as rc

SGLANG_VERSIONS = ["0.5.16", "0.5.22", "0.5.23", "0.5.4.post1"]
SMG_FILES = ["smg-1.12.0-cp38-abi3-manylinux_2_28_x86_64.whl", "smg-1.13.0-cp38-abi3-manylinux_2_28_x86_64.whl",
             "smg-1.13.0.tar.gz"]
HUB = {"Org/Model": {"master", "v1.0"}}


class Fake(BaseHTTPRequestHandler):
    requests: list[str] = []
    delay = 0.0

    def log_message(self, *a):
        pass

    def _send(self, status, body, ctype="application/json"):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        Fake.requests.append(self.path)
        time.sleep(Fake.delay)
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/simple/sglang/":
            files = [{"filename": f"sglang-{v}-py3-none-any.whl"} for v in SGLANG_VERSIONS]
            return self._send(200, {"meta": {"api-version": "1.1"}, "name": "sglang", "files": files, "versions": SGLANG_VERSIONS},
                              "application/vnd.pypi.simple.v1+json")
        if url.path == "/simple/smg/":  # an HTML-only mirror (PEP 503)
            links = "".join(f'<a href="../../files/{f}#sha256=00">{f}</a>' for f in SMG_FILES)
            return self._send(200, f"<html><body>{links}</body></html>".encode(), "text/html")
        if url.path == "/wheels/":  # a find-links page
            return self._send(200, '<a href="smg-1.14.0-cp38-abi3-linux_x86_64.whl">x</a>'.encode(), "text/html")
        if url.path.startswith("/simple/"):
            return self._send(404, b"not found", "text/html")
        if url.path.startswith("/api/v1/models/") and url.path.endswith("/repo/files"):
            model = "/".join(url.path.split("/")[4:6])
            rev = q.get("Revision", "master")
            if model not in HUB or rev not in HUB[model]:
                return self._send(404, {"Code": 10010205001, "Message": f"model {model} revision {rev} not exist", "Success": False})
            return self._send(200, {"Code": 200, "Success": True, "Data": {"Files": [
                {"Name": "config.json", "Path": "config.json", "Type": "blob", "Size": 10, "Sha256": "0" * 64}]}})
        if url.path.startswith("/api/models/"):  # Hugging Face: /api/models/<id>/revision/<rev>
            parts = url.path.split("/")
            model, rev = "/".join(parts[3:5]), urllib.parse.unquote(parts[6])
            if model in HUB and rev in HUB[model] | {"main"}:
                return self._send(200, {"id": model})
            return self._send(404, {"error": "Repository not found"})
        return self._send(500, {"error": "boom"})


@pytest.fixture()
def fake():
    Fake.requests = []
    Fake.delay = 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


GROUPS = {"all": ["g1", "g2", "r1"], "sglang_servers": ["g1", "g2"], "sglang_routers": ["r1"]}


def server_vars(base, **kw):
    return {"sglang_plan_sglang_version": "0.5.23", "sglang_install_index_url": f"{base}/simple",
            "sglang_plan_model_id": "Org/Model", "sglang_plan_model_revision": "master",
            "model_weights_endpoint": base, "model_weights_source": "hub", **kw}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test starts with no remembered answers (the controller's cache is per user)."""
    monkeypatch.setenv("SGL_DEPLOY_CACHE_DIR", str(tmp_path / "cache"))


def router_vars(base, **kw):
    return {"sglang_router_version": "1.13.0", "sglang_router_index_url": f"{base}/simple", **kw}


def run(hostvars, hosts=None, **kw):
    return rc.fleet_remote_problems(hostvars, GROUPS, hosts or list(hostvars), timeout=2, **kw)


# ---------------------------------------------------------------- package index

def test_versions_from_json_html_and_a_wheelhouse(fake, tmp_path):
    assert rc.index_versions(f"{fake}/simple", "sglang") == set(SGLANG_VERSIONS)
    assert rc.index_versions(f"{fake}/simple/", "smg") == {"1.12.0", "1.13.0"}
    assert rc.index_versions(f"{fake}/simple", "nothing") == set()
    assert rc.index_versions(f"{fake}/wheels/", "smg") == {"1.14.0"}
    (tmp_path / "smg-1.13.0-cp38-abi3-linux_x86_64.whl").write_text("")
    (tmp_path / "sglang-0.5.23.tar.gz").write_text("")
    assert rc.index_versions(str(tmp_path), "smg") == {"1.13.0"}
    assert rc.has_version({"0.5.23"}, "0.5.23.0") and not rc.has_version({"0.5.23"}, "0.5.2")


def test_good_pins_pass_and_each_question_is_asked_once(fake):
    hostvars = {"g1": server_vars(fake), "g2": server_vars(fake), "r1": router_vars(fake)}
    assert run(hostvars) == []
    # two servers, one question each about sglang and the model: asked once
    assert sum(p.startswith("/simple/sglang") for p in Fake.requests) == 1
    assert sum("/repo/files" in p for p in Fake.requests) == 1
    assert sum(p.startswith("/simple/smg") for p in Fake.requests) == 1


def test_a_positive_answer_is_remembered_and_a_negative_one_is_not(fake, monkeypatch):
    hostvars = {"g1": server_vars(fake), "r1": router_vars(fake)}
    assert run(hostvars) == []
    asked = len(Fake.requests)
    assert asked == 3, Fake.requests  # sglang, smg, the model
    assert run(hostvars) == [] and len(Fake.requests) == asked  # the re-run asks nothing
    # a new pin is a new question; a pin the index lacks is asked every time (never remembered)
    bad = {"g1": server_vars(fake, sglang_plan_sglang_version="0.5.99")}
    assert run(bad) and run(bad)
    assert sum(p.startswith("/simple/sglang") for p in Fake.requests[asked:]) == 2
    # remembered answers expire
    later = rc.time.time() + rc.CACHE_TTL_S + 1
    monkeypatch.setattr(rc.time, "time", lambda: later)
    before = len(Fake.requests)
    assert run(hostvars) == [] and len(Fake.requests) == before + 3


def test_questions_are_asked_in_parallel(fake):
    Fake.delay = 0.6
    hostvars = {"g1": server_vars(fake), "g2": server_vars(fake, sglang_plan_model_revision="v1.0"), "r1": router_vars(fake)}
    start = time.monotonic()
    assert run(hostvars) == []
    assert len(Fake.requests) == 4 and time.monotonic() - start < 1.5, Fake.requests


def test_a_pin_the_index_lacks_is_refused(fake):
    p = run({"g1": server_vars(fake, sglang_plan_sglang_version="0.5.99"), "r1": router_vars(fake, sglang_router_version="1.99.0")})
    assert [(x["host"], x["variable"]) for x in p] == [("g1", "sglang_plan_sglang_version"), ("r1", "sglang_router_version")], p
    assert "is not on the package index" in p[0]["problem"] and "0.5.23" in p[0]["problem"] and "newest: 0.5.23" in p[0]["fix"]
    assert "smg==1.99.0 would fail" in p[1]["problem"] and "1.13.0" in p[1]["fix"]
    assert all(x.get("level") != "warning" for x in p)


def test_an_explicit_install_pin_is_the_one_checked(fake):
    p = run({"g1": server_vars(fake, sglang_install_version="0.5.98")})
    assert len(p) == 1 and p[0]["variable"] == "sglang_install_version"


def test_an_old_gateway_pin_names_the_migration(fake):
    p = run({"r1": router_vars(fake, sglang_router_version="0.3.2")})
    assert len(p) == 1 and "playbooks/migrate-gateway.yml" in p[0]["fix"], p


def test_extra_index_and_find_links_count(fake):
    vars_ = server_vars(fake, sglang_plan_sglang_version="0.5.99", sglang_install_index_url=f"{fake}/empty/simple",
                        sglang_install_extra_index_urls=[f"{fake}/simple"])
    assert [x["variable"] for x in run({"g1": vars_})] == ["sglang_plan_sglang_version"]
    assert run({"r1": router_vars(fake, sglang_router_version="1.14.0", sglang_router_find_links=f"{fake}/wheels/")}) == []


def test_offline_reads_only_the_wheelhouse(fake, tmp_path):
    (tmp_path / "sglang-0.5.23-py3-none-any.whl").write_text("")
    vars_ = server_vars(fake, sglang_install_offline=True, sglang_install_find_links=str(tmp_path))
    assert run({"g1": vars_}) == [] and not any(p.startswith("/simple") for p in Fake.requests)
    p = run({"g1": {**vars_, "sglang_plan_sglang_version": "0.5.22"}})
    assert len(p) == 1 and str(tmp_path) in p[0]["problem"]


def test_an_unreachable_index_is_a_warning_unless_asked(fake):
    down = closed_port()
    vars_ = server_vars(fake, sglang_install_index_url=f"{down}/simple")
    p = run({"g1": vars_})
    assert len(p) == 1 and p[0]["level"] == "warning" and "does not answer the controller" in p[0]["problem"], p
    assert "sgl_validate_remote_checks: false" in p[0]["fix"]
    p = run({"g1": {**vars_, "sgl_validate_unreachable": "fail"}})
    assert len(p) == 1 and "level" not in p[0]
    assert run({"g1": {**vars_, "sgl_validate_remote_checks": False}}) == []


def test_a_host_wheelhouse_the_controller_lacks_is_a_warning(fake):
    vars_ = server_vars(fake, sglang_install_offline=True, sglang_install_find_links="/nonexistent/wheels")
    p = run({"g1": vars_})
    assert len(p) == 1 and p[0]["level"] == "warning" and "not a directory on the controller" in p[0]["problem"]


# ---------------------------------------------------------------- hub

def test_unknown_model_and_revision_are_refused(fake):
    p = run({"g1": server_vars(fake, sglang_plan_model_id="Org/Nope")})
    assert len(p) == 1 and p[0]["variable"] == "sglang_plan_model_id" and "does not know" in p[0]["problem"], p
    p = run({"g1": server_vars(fake, sglang_plan_model_revision="v9")})
    assert len(p) == 1 and p[0]["variable"] == "sglang_plan_model_revision", p
    assert "is not a revision of Org/Model" in p[0]["problem"] and "not exist" in p[0]["problem"]
    p = run({"g1": server_vars(fake, model_weights_revision="v9")})
    assert len(p) == 1 and p[0]["variable"] == "model_weights_revision"


def test_hugging_face_hub(fake):
    vars_ = server_vars(fake, model_weights_hub="huggingface", model_weights_hf_endpoint=fake, sglang_plan_model_revision="main")
    assert run({"g1": vars_}) == []
    p = run({"g1": {**vars_, "sglang_plan_model_revision": "v9"}})
    assert len(p) == 1 and p[0]["variable"] == "sglang_plan_model_revision"


def test_hub_unreachable_and_shared_weights(fake):
    down = closed_port()
    p = run({"g1": server_vars(fake, model_weights_endpoint=down)})
    assert len(p) == 1 and p[0]["level"] == "warning" and p[0]["variable"] == "sglang_plan_model_id"
    assert run({"g1": server_vars(fake, model_weights_endpoint=down, model_weights_source="shared")}) == []


def test_the_lab_hub_answers_the_same_request(tmp_path):
    """The lab's ModelScope-protocol hub (lab/hub/server.py): a known repo passes, an unknown one is refused."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "lab" / "hub" / "server.py"
    spec = importlib.util.spec_from_file_location("lab_hub_server_rc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "SglLab" / "M").mkdir(parents=True)
    (tmp_path / "SglLab" / "M" / "config.json").write_text("{}")
    server = module.LabHubServer(("127.0.0.1", 0), tmp_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert rc.hub_answer("modelscope", base, "SglLab/M", "master")[0] == "ok"
        assert rc.hub_answer("modelscope", base, "SglLab/Nope", "master")[0] == "missing"
    finally:
        server.shutdown()
