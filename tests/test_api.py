"""`pixseek serve`: the HTTP API, run as a real server process on a loopback port.

Two servers start once for the module, in parallel, one per configuration: an open one on
127.0.0.1 (1 MiB upload limit), and one on 0.0.0.0 that made its own token (with one CORS
origin), over a copy of the library that an index run grows. Every other test talks to these
two; what `serve` refuses before it listens runs in this process (`cli`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from indexer.library import LibraryPaths
from indexer.runner import run_index
from pixseek_data.shapes import generate_gallery
from search import Filters, Library, SearchRequest
from tests.conftest import CALTECH, REPO, TEST_WORKERS, need_shared
from tests.harness import Forker, assert_one_line_error, cli

START_TIMEOUT_S = 120
CORS_ORIGIN = "http://photos.example"
ID_ROUTES = ("/api/images/{}", "/api/images/{}/thumbnail", "/api/images/{}/file")
TRAVERSALS = (
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "1%2F..%2F..%2Fetc%2Fpasswd",
    "..",
    "%2E%2E",
    "~root",
    "0",
    "-1",
    "1.5",
    "99999999999999999999999",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """`pixseek serve` as a process of its own, forked from the harness's start-up server (which
    imported torch while this process indexed the test library), running this worktree's code."""

    def __init__(self, forker: Forker, library: Path, *args: str, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.library = library
        self.token = token  # else the one the server prints
        given = ["--token", token] if token else []
        self.run = forker.start(
            ["serve", "--library", str(library), "--port", str(self.port), *args, *given], server_env()
        )

    @property
    def output(self) -> str:
        return self.run.stdout + self.run.stderr

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.run.poll() is None, "server exited:\n" + self.output
            found = re.search(r"^API token .*: (\S+)$", self.run.stdout, re.M)
            self.token = found.group(1) if found else self.token
            try:
                if self.client().get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)  # polling a starting server: there is nothing to wait on instead
        raise AssertionError("server not ready:\n" + self.output)

    def client(self, **kwargs) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, timeout=60, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    def stop(self) -> None:
        if self.run.poll() is None:
            os.kill(self.run.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while self.run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.run.poll() is None:
            os.kill(self.run.pid, signal.SIGKILL)
            self.run.wait()


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIXSEEK_TOKEN", "PIXSEEK_DEBUG", "PIXSEEK_LIBRARY")}
    return env


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """48 shapes (2 per colour x shape) and their labels by file name."""
    folder = tmp_path_factory.mktemp("api-gallery")
    return folder, {s.path.name: (s.colour, s.shape) for s in generate_gallery(folder, per_class=2, seed=77)}


@pytest.fixture(scope="module")
def library(tmp_path_factory, gallery, demo_spec) -> LibraryPaths:
    lib = LibraryPaths.at(tmp_path_factory.mktemp("api-lib"))
    run_index(lib, [gallery[0]], model=demo_spec, workers=TEST_WORKERS)
    return lib


@pytest.fixture(scope="module")
def start_up_server(tmp_path_factory):
    forker = Forker(tmp_path_factory.mktemp("api-runs"))
    yield forker
    forker.close()


@pytest.fixture(scope="module")
def servers(start_up_server, library, tmp_path_factory):
    growing = tmp_path_factory.mktemp("api-growing") / "library"
    shutil.copytree(library.root, growing)
    started = {
        "open": ApiServer(start_up_server, library.root, "--max-upload-mb", "1"),
        "token": ApiServer(start_up_server, growing, "--host", "0.0.0.0", "--cors-origin", CORS_ORIGIN),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def api(servers) -> httpx.Client:
    with servers["open"].client() as client:
        yield client


def search(client: httpx.Client, **body) -> list[dict]:
    response = client.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "hint"} and body["error"], body
    assert "Traceback" not in response.text
    for word in words:
        assert word in body["error"], body


# service ------------------------------------------------------------------------------------
def test_healthz_answers_and_readyz_says_the_model_is_loaded(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"ready": True}


def test_openapi_docs_describe_every_route(api):
    paths = api.get("/openapi.json").json()["paths"]
    assert {
        "/api/search",
        "/api/search/upload",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
        "/api/images/{image_id}/file",
        "/api/embed",
        "/api/embed/upload",
        "/api/info",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths.keys()
    assert "swagger-ui" in api.get("/docs").text


def test_info_counts_the_indexed_photos_and_names_the_model(api, gallery, library):
    info = api.get("/api/info").json()
    assert info["images"] == len(gallery[1])
    assert info["model"].startswith("local-dir:") and info["embedding_dim"] > 0
    assert info["library"] == str(library.root)


def test_metrics_count_requests_by_route_and_time_searches(api, gallery):
    search(api, text="a red circle")
    api.get("/api/images/999999")
    text = api.get("/metrics").text
    assert re.search(
        r'^pixseek_http_requests_total\{route="/api/search",method="POST",status="200"\} [1-9]', text, re.M
    )
    assert re.search(
        r'^pixseek_http_requests_total\{route="/api/images/\{image_id\}",method="GET",status="404"\} '
        r"[1-9]",
        text,
        re.M,
    )
    assert re.search(r'^pixseek_search_duration_seconds_count\{kind="text"\} [1-9]', text, re.M)
    assert re.search(
        r'^pixseek_http_request_duration_seconds_bucket\{route="/api/search",method="POST",le="\+Inf"\}', text, re.M
    )
    assert f"pixseek_library_images {len(gallery[1])}\n" in text
    assert "pixseek_model_ready 1\n" in text


# searching ----------------------------------------------------------------------------------
def test_text_search_ranks_the_colour_and_shape_asked_for_first(api, gallery):
    results = search(api, text="a red circle", k=4)
    assert [gallery[1][r["name"]] for r in results[:2]] == [("red", "circle")] * 2
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert results == sorted(results, key=lambda r: -r["score"])


def test_query_syntax_subtracts_terms(api, gallery):
    plain = [gallery[1][r["name"]] for r in search(api, text="a circle", k=12)]
    minus_red = [gallery[1][r["name"]] for r in search(api, text='"a circle" - "red"', k=12)]
    assert ("red", "circle") in plain[:6]
    assert ("red", "circle") not in minus_red[:6]


def test_paging_with_offset_continues_where_the_last_page_ended(api):
    whole = search(api, text="a blue star", k=10)
    first = api.post("/api/search", json={"text": "a blue star", "k": 5}).json()
    second = api.post("/api/search", json={"text": "a blue star", "k": 5, "offset": first["next_offset"]}).json()
    assert first["next_offset"] == 5
    assert [r["id"] for r in first["results"] + second["results"]] == [r["id"] for r in whole]
    assert [r["rank"] for r in second["results"]] == [6, 7, 8, 9, 10]
    last = api.post("/api/search", json={"text": "a blue star", "k": 200}).json()
    assert len(last["results"]) == 48 and last["next_offset"] is None


def test_more_like_this_leaves_the_photo_out_and_finds_its_class(api, gallery):
    anchor = search(api, text="a green triangle", k=1)[0]
    results = search(api, like=anchor["id"], k=3)
    assert anchor["id"] not in [r["id"] for r in results]
    assert gallery[1][results[0]["name"]] == ("green", "triangle")


def test_an_uploaded_image_finds_itself_first_as_base64_and_as_multipart(api, gallery):
    path = gallery[0] / "yellow-square-001.jpg"
    data = path.read_bytes()
    as_json = search(api, image=base64.b64encode(data).decode(), k=3)
    upload = api.post(
        "/api/search/upload", files={"image": ("q.jpg", data, "image/jpeg")}, data={"params": json.dumps({"k": 3})}
    )
    assert upload.status_code == 200, upload.text
    assert as_json[0]["name"] == path.name and as_json[0]["score"] > 0.99
    assert [r["id"] for r in upload.json()["results"]] == [r["id"] for r in as_json]


def test_image_and_text_mix_in_one_query(api, gallery):
    data = base64.b64encode((gallery[0] / "purple-star-000.jpg").read_bytes()).decode()
    results = search(api, image=data, text='2:"a purple circle"', k=2)
    assert [gallery[1][r["name"]][0] for r in results] == ["purple", "purple"]


def test_filters_narrow_results_by_folder_and_gps(api, gallery):
    assert len(search(api, text="a star", k=100, filters={"folder": str(gallery[0])})) == 48
    elsewhere = api.post("/api/search", json={"text": "a star", "filters": {"folder": str(gallery[0] / "elsewhere")}})
    assert_error(elsewhere, 400, "no indexed photos")
    assert search(api, text="a star", filters={"gps": True}) == []  # generated images carry no position
    assert len(search(api, text="a star", k=100, filters={"gps": False})) == 48
    assert search(api, text="a star", filters={"date_from": "2001-01-01"}) == []  # nor a date taken


def test_cutoffs_sort_and_dedupe_are_applied(api):
    scores = [r["score"] for r in search(api, text="an orange square", k=48)]
    floor = scores[5] - 1e-4  # scores come rounded to 4 decimals: the floor must not cut the 6th
    assert [r["score"] for r in search(api, text="an orange square", k=48, min_score=floor)] == scores[:6]
    assert len(search(api, text="an orange square", k=48, min_z=50)) < 48
    assert len(search(api, text="an orange square", sort="date", dedupe=True, ensemble=False)) > 0


def test_results_link_to_their_metadata_thumbnail_and_original(api, gallery):
    hit = search(api, text="an orange star", k=1)[0]
    meta = api.get(hit["links"]["self"]).json()
    assert meta == {k: v for k, v in hit.items() if k not in ("rank", "score", "matched_words", "explanation")}
    assert hit["matched_words"] is None and hit["explanation"] is None  # only with words / explain
    for size, expected in (("grid", (360, 360)), ("large", (128, 128))):
        thumb = api.get(hit["links"]["thumbnail"], params={"size": size})
        assert thumb.headers["content-type"] == "image/jpeg"
        with Image.open(BytesIO(thumb.content)) as img:
            # The large view never enlarges: a 128 px photo stays 128 px.
            assert img.size == expected if size == "grid" else img.size == (128, 128)
    original = api.get(hit["links"]["file"])
    assert original.headers["content-type"] == "image/jpeg"
    assert original.content == (gallery[0] / hit["name"]).read_bytes()


def test_embed_returns_the_models_normalised_vectors(api, gallery, page_library):
    lib = page_library
    text = api.post("/api/embed", json={"text": "a red circle"}).json()
    assert text["kind"] == "text" and text["dim"] == len(text["vector"]) == lib.info().embedding_dim
    assert np.allclose(text["vector"], lib.embed_text("a red circle"), atol=1e-5)
    assert abs(np.linalg.norm(text["vector"]) - 1) < 1e-5
    bare = api.post("/api/embed", json={"text": "a red circle", "ensemble": False}).json()
    assert np.allclose(bare["vector"], lib.embed_text("a red circle", ensemble=False), atol=1e-5)
    path = gallery[0] / "blue-circle-000.jpg"
    image = api.post("/api/embed/upload", files={"image": ("x.jpg", path.read_bytes())}).json()
    stored = lib.stored_vector(lib.find_id(path))
    assert image["kind"] == "image" and float(np.dot(image["vector"], stored)) > 0.99
    as_json = api.post("/api/embed", json={"image": base64.b64encode(path.read_bytes()).decode()}).json()
    assert np.allclose(as_json["vector"], image["vector"], atol=1e-6)


@pytest.fixture(scope="module")
def page_library(library):
    """The library as the page holds it: one Library open for the session."""
    with Library.open(library.root) as lib:
        yield lib


def test_the_page_the_cli_and_http_give_the_same_results(api, library, page_library):
    # The page searches through the facade with allow_paths=False, as the API does (ui/app.py).
    like = page_library.search(SearchRequest("a yellow star", k=1, allow_paths=False))[0].id
    cases = [
        ({"text": "a yellow star", "k": 8}, SearchRequest("a yellow star", k=8), ["a yellow star", "-k", "8"]),
        (
            {"like": like, "k": 5, "dedupe": True},
            SearchRequest(like=like, k=5, dedupe=True),
            ["--like", str(like), "-k", "5", "--dedupe"],
        ),
        (
            {"text": '"a square" - "green"', "k": 6, "filters": {"gps": False}, "min_score": 0.1},
            SearchRequest('"a square" - "green"', k=6, filters=Filters(has_gps=False), min_score=0.1),
            ['"a square" - "green"', "-k", "6", "--no-gps", "--min-score", "0.1"],
        ),
    ]
    for body, request, argv in cases:
        page = [(r.id, round(r.score, 4)) for r in page_library.search(request, allow_paths=False)]
        found = json.loads(cli("search", *argv, "--library", str(library.root), "--json").stdout)
        from_cli = [(r["id"], r["score"]) for r in found]
        http = [(r["id"], r["score"]) for r in search(api, **body)]
        assert len(page) == body["k"] and page == from_cli == http, body


def test_workers_answer_from_processes_of_their_own_with_the_same_results_and_token(start_up_server, library, api):
    server = ApiServer(start_up_server, library.root, "--workers", "2", token="s3cret")
    try:
        server.wait_ready()
        workers = [p for p in psutil.Process(server.run.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        with httpx.Client(base_url=server.url, timeout=60) as anonymous:
            assert_error(anonymous.post("/api/search", json={"text": "a red circle"}), 401, "token")
        with server.client() as client:
            for body in ({"text": "a yellow star", "k": 8}, {"like": search(api, text="a red circle", k=1)[0]["id"]}):
                answers = [[(r["id"], r["score"]) for r in search(client, **body)] for _ in range(6)]
                assert answers == [[(r["id"], r["score"]) for r in search(api, **body)]] * 6, body
    finally:
        server.stop()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


# words, concepts and explanations, in this process -------------------------------------------
@pytest.fixture(scope="module")
def local_api(library, tmp_path_factory):
    """The app in this process (FastAPI's TestClient) over a copy of the library, to teach concepts in."""
    from fastapi.testclient import TestClient

    from ui.api.app import ApiConfig, create_app
    from ui.api.backend import Backend
    from ui.api.guard import GuardConfig

    copy = tmp_path_factory.mktemp("api-concepts") / "library"
    shutil.copytree(library.root, copy)
    config = ApiConfig(GuardConfig(token=None, allowed_hosts=None, max_body=2**20), max_upload=2**20)
    backend = Backend(LibraryPaths.at(copy))
    with TestClient(create_app(backend, config)) as client:
        backend.load_model()
        yield client


@pytest.fixture(scope="module")
def ids_by_label(local_api, gallery) -> dict[tuple[str, str], list[int]]:
    """(colour, shape) -> the ids of its photos."""
    out: dict[tuple[str, str], list[int]] = {}
    for hit in search(local_api, text="a shape", k=len(gallery[1])):
        out.setdefault(gallery[1][hit["name"]], []).append(hit["id"])
    return out


def test_words_keep_the_photos_whose_text_holds_them_and_say_what_matched(local_api, gallery):
    stars = {name for name, (_, shape) in gallery[1].items() if shape == "star"}
    alone = search(local_api, words="star", k=100)
    assert {r["name"] for r in alone} == stars  # the file names are the only text these photos have
    assert all(r["matched_words"] == ["star"] for r in alone)
    fused = search(local_api, text="a red shape", words="star", k=100)
    assert {r["name"] for r in fused} == stars and gallery[1][fused[0]["name"]] == ("red", "star")
    in_query = search(local_api, text='"a red shape" + text:star', k=100)
    assert [(r["id"], r["score"]) for r in in_query] == [(r["id"], r["score"]) for r in fused]


def test_explanations_split_the_score_into_the_terms_and_the_fused_rankings(local_api):
    for hit in search(local_api, text='"a red circle" - 0.5:"blue"', k=5, explain=True):
        why = hit["explanation"]
        assert [(t["term"], t["weight"]) for t in why["terms"]] == [("a red circle", 1.0), ("blue", -0.5)]
        assert sum(t["contribution"] for t in why["terms"]) == pytest.approx(why["semantic_score"], abs=1e-5)
        assert why["semantic_score"] == pytest.approx(hit["score"], abs=1e-4) and why["fusion"] == {}
    for hit in search(local_api, text="a red shape", words="circle", k=5, explain=True):
        why = hit["explanation"]
        assert set(why["fusion"]) == {"semantic", "text"}
        assert sum(why["fusion"].values()) == pytest.approx(hit["score"], abs=1e-4)
        assert why["matched_words"] == hit["matched_words"] == ["circle"]


def test_a_concept_is_taught_from_ids_and_paths_listed_shown_searched_and_forgotten(local_api, ids_by_label, gallery):
    warm = [i for (colour, _), ids in ids_by_label.items() if colour in ("red", "orange", "yellow") for i in ids]
    cool = [i for (colour, _), ids in ids_by_label.items() if colour not in ("red", "orange", "yellow") for i in ids]
    paths = {i: local_api.get(f"/api/images/{i}").json()["path"] for i in cool[:5]}
    taught = local_api.post("/api/concepts", json={"name": "warm", "yes": warm[:5], "no": list(paths.values())})
    assert taught.status_code == 201, taught.text
    body = taught.json()
    assert (body["name"], body["yes"], body["no"], body["warnings"]) == ("warm", warm[:5], cool[:5], [])
    assert 0 <= body["held_out_accuracy"] <= 1
    assert local_api.get("/api/concepts").json() == [body]
    shown = local_api.get("/api/concepts/warm").json()
    assert shown["no_paths"] == list(paths.values()) and len(shown["yes_paths"]) == 5

    ranked = search(local_api, concept="warm", k=len(gallery[1]), explain=True)
    probability = {r["id"]: r["explanation"]["concepts"]["warm"] for r in ranked}
    assert [r["score"] for r in ranked] == sorted((round(p, 4) for p in probability.values()), reverse=True)
    assert {r["id"] for r in ranked[:10]} <= set(warm)
    kept = search(local_api, text="a circle", concept="warm", k=len(gallery[1]))
    assert {r["id"] for r in kept} == {i for i, p in probability.items() if p >= 0.5}
    stricter = search(local_api, text="a circle", concept="warm", min_prob=0.9, k=len(gallery[1]))
    assert {r["id"] for r in stricter} == {i for i, p in probability.items() if p >= 0.9}

    again = local_api.post("/api/concepts", json={"name": "warm", "yes": warm[5:6], "no": []}).json()
    assert again["yes"] == warm[:6] and again["no"] == cool[:5]  # teaching again adds examples
    assert local_api.delete("/api/concepts/warm").status_code == 204
    assert local_api.get("/api/concepts").json() == []
    assert_error(local_api.get("/api/concepts/warm"), 404, "no concept named 'warm'")
    assert_error(local_api.delete("/api/concepts/warm"), 404, "no concept named 'warm'")


def test_too_few_examples_teach_with_a_warning_and_none_on_a_side_is_refused(local_api, ids_by_label):
    red, blue = ids_by_label[("red", "circle")], ids_by_label[("blue", "square")]
    few = local_api.post("/api/concepts", json={"name": "few", "yes": red[:2], "no": blue[:1]})
    assert few.status_code == 201
    assert few.json()["held_out_accuracy"] is None  # leaving out the only "no" leaves nothing to learn it from
    assert [w.split(":")[0] for w in few.json()["warnings"]] == ["only 2 yes examples", "only 1 no example"]
    assert all("give at least 5" in w for w in few.json()["warnings"])
    assert_error(local_api.post("/api/concepts", json={"name": "x", "yes": red, "no": []}), 400, "both kinds")
    local_api.delete("/api/concepts/few")


@pytest.mark.parametrize(
    ("method", "route", "body", "status", "words"),
    [
        ("post", "/api/search", {"concept": "nope"}, 404, ["no concept named 'nope'"]),
        ("post", "/api/search", {"text": "a cat", "concept": "  "}, 400, ["empty concept name"]),
        ("post", "/api/search", {"words": " "}, 400, ["no words"]),
        ("post", "/api/search", {"words": "star", "min_score": 0.2}, 400, ["--min-score"]),
        ("post", "/api/search", {"text": "a cat", "min_prob": 2}, 422, ["min_prob"]),
        ("get", "/api/concepts/nope", None, 404, ["no concept named 'nope'"]),
        ("delete", "/api/concepts/nope", None, 404, ["no concept named 'nope'"]),
        ("post", "/api/concepts", {"name": "c", "yes": [], "no": [1]}, 400, ["both kinds"]),
        ("post", "/api/concepts", {"name": "c", "yes": [1, 2], "no": [2]}, 400, ["both yes and no: 2"]),
        ("post", "/api/concepts", {"name": "c", "yes": [999999], "no": [1]}, 404, ["999999"]),
        ("post", "/api/concepts", {"name": "c", "yes": ["/etc/passwd"], "no": [1]}, 404, ["/etc/passwd"]),
        ("post", "/api/concepts", {"name": "c", "yes": ["../x.jpg"], "no": [1]}, 404, ["../x.jpg"]),
        ("post", "/api/concepts", {"name": "", "yes": [1], "no": [2]}, 422, ["name"]),
        ("post", "/api/concepts", {"name": "c" * 201, "yes": [1], "no": [2]}, 422, ["name"]),
        ("post", "/api/concepts", {"name": "c", "yes": [0], "no": [2]}, 422, ["yes"]),
        ("post", "/api/concepts", {"name": "c", "yes": [1]}, 422, ["no"]),
    ],
)
def test_bad_word_and_concept_requests_get_a_json_error_with_the_right_status(
    local_api, method, route, body, status, words
):
    response = getattr(local_api, method)(route, **({} if body is None else {"json": body}))
    assert_error(response, status, *words)
    assert local_api.get("/api/concepts").json() == []  # nothing was taught


# bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text": "a cat", "k": 10**9}, 422, ["k"]),
        ({"text": "a cat", "k": 0}, 422, ["k"]),
        ({"text": "a cat", "offset": -1}, 422, ["offset"]),
        ({"text": "a cat", "offset": 10**6}, 422, ["offset"]),
        ({"text": "a cat", "filters": {"date_from": "2024-13-45"}}, 422, ["date_from"]),
        ({"text": "a cat", "filters": {"date_to": "yesterday"}}, 422, ["date_to"]),
        ({"text": "a cat", "filters": {"date_from": "2024-02-01", "date_to": "2024-01-01"}}, 422, ["after"]),
        ({"text": "a cat", "filters": {"tag": "beach"}}, 400, ["tagged"]),
        ({"text": "a cat", "sort": "random"}, 422, ["sort"]),
        ({"text": "a cat", "min_score": 7}, 422, ["min_score"]),
        ({"text": "a cat", "limit": 5}, 422, ["limit"]),  # unknown fields are refused, not ignored
        ({"text": "x" * 1001}, 422, ["text"]),
        ({"text": " + ".join(f'"t{i}"' for i in range(17))}, 400, ["terms"]),
        ({"text": '"unbalanced'}, 400, ["quotes"]),
        ({"text": "   "}, 400, ["empty"]),
        ({"k": 5}, 422, ["nothing to search for"]),
        ({"like": 999999}, 404, ["999999"]),
        ({"like": "/etc/passwd"}, 422, ["like"]),
        ({"image": "not base64!"}, 422, ["base64"]),
        ({"image": base64.b64encode(b"just some text, not a picture").decode()}, 415, ["image"]),
        ({"image": base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 200).decode()}, 415, ["image"]),
    ],
)
def test_bad_search_requests_get_a_json_error_with_the_right_status(api, body, status, words):
    assert_error(api.post("/api/search", json=body), status, *words)


def test_malformed_json_wrong_content_type_and_bad_params_are_refused(api):
    assert_error(
        api.post("/api/search", content=b'{"text": "a', headers={"content-type": "application/json"}), 400, "JSON"
    )
    assert_error(api.post("/api/search", content=b'{"text": "a cat"}', headers={"content-type": "text/plain"}), 415)
    assert_error(api.post("/api/search/upload", json={"text": "a cat"}), 415, "multipart")
    tiny = {"image": ("a.jpg", b"x")}
    assert_error(api.post("/api/search/upload", files=tiny, data={"params": "{"}), 400, "JSON")
    assert_error(api.post("/api/search/upload", files=tiny, data={"params": '{"k": 0}'}), 422, "k")
    assert_error(api.post("/api/embed", json={}), 422, "exactly one")
    assert_error(api.post("/api/embed", json={"text": "a", "image": "eA=="}), 422, "exactly one")
    assert_error(api.get("/api/search"), 405)
    assert_error(api.get("/api/nothing-here"), 404)
    assert_error(api.get("/api/images/1/thumbnail", params={"size": "huge"}), 422, "size")


def test_uploads_over_the_limit_are_refused_with_or_without_content_length(api):
    big = os.urandom(1_100_000)  # the open server allows 1 MiB
    assert_error(api.post("/api/search/upload", files={"image": ("big.jpg", big)}), 413)
    assert_error(api.post("/api/embed/upload", files={"image": ("big.jpg", big)}), 413)
    assert_error(api.post("/api/search", json={"image": base64.b64encode(big).decode()}), 413)
    assert_error(api.post("/api/search", json={"image": base64.b64encode(big * 2).decode()}), 413)

    def chunks():
        yield b'{"image": "'
        for _ in range(40):
            yield b"A" * 65_536
        yield b'"}'

    response = api.post("/api/search", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers  # sent chunked
    assert_error(response, 413)
    assert api.get("/healthz").status_code == 200  # and the server is fine


def test_a_non_image_upload_is_unsupported_media(api):
    assert_error(api.post("/api/search/upload", files={"image": ("a.jpg", b"#!/bin/sh\nrm -rf /\n")}), 415, "image")
    assert_error(api.post("/api/embed/upload", files={"image": ("a.png", b"")}), 415, "image")


@pytest.mark.parametrize("route", ID_ROUTES)
def test_unknown_ids_are_not_found_on_every_id_route(api, route):
    assert_error(api.get(route.format(999999)), 404, "999999")


@pytest.mark.parametrize("route", ID_ROUTES)
def test_path_traversal_attempts_never_reach_a_file(api, route):
    for evil in TRAVERSALS:
        response = api.get(route.format(evil))
        assert response.status_code in (404, 422), (evil, response.status_code)
        assert_error(response, response.status_code)
        assert "root:" not in response.text


def test_a_query_naming_a_photo_by_path_is_read_as_text_not_opened(api, gallery):
    path = gallery[0] / "red-star-000.jpg"
    as_image = search(api, image=base64.b64encode(path.read_bytes()).decode(), k=1)[0]
    as_text = search(api, text=str(path), k=1)[0]  # the CLI would embed the file; the API never opens it
    assert as_image["name"] == path.name and as_image["score"] > 0.99
    assert as_text["score"] < 0.9


def test_raw_dot_dot_paths_are_not_normalised_into_files(servers):
    # httpx would normalise "../" away; a raw request reaches the server as written.
    for path in (
        "/api/images/../../../../etc/passwd",
        "/api/images/1/../../../../etc/passwd/file",
        "/api/images/%2e%2e/%2e%2e/etc/passwd/file",
    ):
        with socket.create_connection(("127.0.0.1", servers["open"].port), timeout=30) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        status = int(reply.split(b" ", 2)[1])
        assert status in (400, 404), (path, reply[:200])
        assert b"root:" not in reply


# who may call ------------------------------------------------------------------------------
def test_a_host_header_the_server_was_not_started_for_is_refused(servers):
    with servers["open"].client(headers={"host": "attacker.example"}) as client:
        assert_error(client.get("/api/info"), 400, "Host")
    with servers["open"].client(headers={"host": f"localhost:{servers['open'].port}"}) as client:
        assert client.get("/api/info").status_code == 200


def test_on_another_address_the_server_makes_a_token_prints_it_once_and_requires_it(servers):
    server = servers["token"]
    assert server.token and server.output.count(server.token) == 1
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for path in ("/api/info", "/readyz", "/metrics", "/openapi.json", "/api/images/1", "/api/images/1/file"):
            response = anonymous.get(path)
            assert_error(response, 401, "token")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(anonymous.post("/api/search", json={"text": "a cat"}), 401)
        wrong = anonymous.get("/api/info", headers={"authorization": f"Bearer {server.token}x"})
        assert_error(wrong, 401)
        assert_error(anonymous.get("/api/info", headers={"authorization": server.token}), 401)
    with server.client() as client:
        assert client.get("/api/info").status_code == 200
        assert len(search(client, text="a red star", k=3)) == 3


def test_cors_is_off_unless_an_origin_is_configured(servers):
    with servers["open"].client(headers={"origin": CORS_ORIGIN}) as client:
        assert "access-control-allow-origin" not in client.get("/api/info").headers
    with servers["token"].client(headers={"origin": CORS_ORIGIN}) as client:
        assert client.get("/api/info").headers["access-control-allow-origin"] == CORS_ORIGIN
        preflight = client.options(
            "/api/search",
            headers={"access-control-request-method": "POST", "access-control-request-headers": "authorization"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    with servers["token"].client(headers={"origin": "http://elsewhere.example"}) as client:
        assert "access-control-allow-origin" not in client.get("/api/info").headers


def test_serve_refuses_bad_options_in_one_line_before_it_listens(tmp_path, servers, library):
    port = str(free_port())
    cases = [
        (["--library", str(tmp_path / "none"), "--port", port], "no library"),
        (["--library", str(tmp_path / "none"), "--port", port, "--host", "0.0.0.0"], "no library"),
        (["--library", str(library.root), "--port", str(servers["open"].port)], "cannot serve"),
        (["--library", str(library.root), "--port", "70000"], "--port"),
        (["--library", str(library.root), "--port", port, "--max-upload-mb", "0"], "--max-upload-mb"),
        (["--library", str(library.root), "--port", port, "--runtime", "tpu"], "unknown runtime 'tpu'"),
        (["--library", str(library.root), "--port", port, "--workers", "0"], "--workers"),
    ]
    for args, words in cases:
        done = cli("serve", *args, code=1, env={"PIXSEEK_TOKEN": None})
        assert_one_line_error(done, words)
        assert done.stdout == ""  # no token printed for a server that never ran


# concurrency -------------------------------------------------------------------------------
def test_searches_keep_working_while_an_index_run_adds_photos(servers, tmp_path):
    server = servers["token"]
    new = generate_gallery(tmp_path / "new-shapes", per_class=1, seed=99)
    with server.client() as client:
        before = client.get("/api/info").json()["images"]
        statuses, counts, stop = [], {}, threading.Event()

        def keep_searching(body: dict) -> None:
            # Each thread its own list: two threads' answers may be appended out of order.
            seen = counts.setdefault(threading.get_ident(), [])
            while not stop.is_set():
                response = client.post("/api/search", json=body)
                statuses.append(response.status_code)
                for hit in response.json().get("results", [])[:2]:
                    statuses.append(client.get(hit["links"]["self"]).status_code)  # every id returned resolves
                seen.append(client.get("/api/info").json()["images"])

        threads = [
            threading.Thread(target=keep_searching, args=(body,))
            for body in ({"text": "a green square", "k": 10}, {"like": 3, "k": 10})
        ]
        for thread in threads:
            thread.start()
        try:
            report = run_index(server.library, [tmp_path / "new-shapes"], workers=TEST_WORKERS)
            time.sleep(0.5)  # a few searches after the run too
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert report.added == len(new)
        assert statuses and set(statuses) == {200}
        assert all(seen == sorted(seen) for seen in counts.values())  # photos only ever appear
        assert client.get("/api/info").json()["images"] == before + len(new)
        query = base64.b64encode(new[5].path.read_bytes()).decode()
        assert search(client, image=query, k=1)[0]["path"] == str(new[5].path.resolve())


# the load benchmark ------------------------------------------------------------------------
@pytest.mark.slow
def test_api_load_smoke_prints_every_figure_with_no_errors(tmp_path):
    need_shared(CALTECH)
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "api_load.py"), "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**server_env(), "PIXSEEK_BENCH_CACHE": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = re.findall(r"^== (\d+) clients?, (no index run|index run adding photos), [\d.]+ s ==$", done.stdout, re.M)
    assert [(int(n), kind) for n, kind in runs] == [
        (1, "no index run"),
        (4, "no index run"),
        (1, "index run adding photos"),
        (4, "index run adding photos"),
    ]
    rows = re.findall(
        r"^(text|image|like|all)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", done.stdout, re.M
    )
    assert len(rows) == 4 * 4
    for kind, n, rps, p50, p95, p99, errors in rows:
        assert int(n) > 0 and float(rps) > 0 and 0 < float(p50) <= float(p95) <= float(p99), (kind, n, p50, p99)
        assert int(errors) == 0
    libraries = [
        int(n) for n in re.findall(r"^photos added during the load\s+\d+ \(library now (\d+)\)$", done.stdout, re.M)
    ]
    assert len(libraries) == 2
    # The index runs started before the timed runs, and what they added was searchable.
    assert re.search(r"^index runs while serving\s+[1-9]", done.stdout, re.M)
    first = int(re.search(r"^library: (\d+) photos", done.stdout, re.M).group(1))
    assert libraries[-1] > first


# the shared model ----------------------------------------------------------------------------
def test_a_library_given_a_loaded_encoder_uses_it_only_while_it_is_the_librarys_model(library, page_library):
    loaded = page_library.encoder
    with Library.open(library.root, encoder=loaded) as lib:
        assert lib.encoder is loaded
    another = SimpleNamespace(fingerprint=lambda: "another model")  # what a rebuild with another model leaves
    with Library.open(library.root, encoder=another) as lib:
        assert lib.encoder is not another and lib.encoder.fingerprint() == loaded.fingerprint()


def test_a_library_without_images_is_not_ready_until_an_index_run_adds_some(tmp_path, gallery, demo_spec):
    from fastapi.testclient import TestClient

    from indexer.library.catalog import Catalog
    from ui.api.app import ApiConfig, create_app
    from ui.api.backend import Backend
    from ui.api.guard import GuardConfig

    paths = LibraryPaths.at(tmp_path)
    Catalog(paths.catalog, create=True).close()
    config = ApiConfig(GuardConfig(token=None, allowed_hosts=None, max_body=2**20), max_upload=2**20)
    backend = Backend(paths)
    with TestClient(create_app(backend, config)) as client:
        # The app's own load runs beside it: until that attempt ends the answer is "still loading".
        backend.load_model()
        assert_error(client.get("/readyz"), 503, "no images")
        assert_error(client.post("/api/search", json={"text": "a red circle"}), 503, "no images")
        assert client.get("/api/info").json()["images"] == 0
        run_index(paths, [gallery[0]], model=demo_spec, workers=TEST_WORKERS)
        assert client.get("/readyz").json() == {"ready": True}
        assert gallery[1][search(client, text="a red circle", k=1)[0]["name"]] == ("red", "circle")


def test_calls_waiting_for_the_model_are_merged_into_one_pass_and_each_gets_its_own_rows():
    from ui.api.backend import _Merged

    passes: list[list[int]] = []

    def square(items: list[int]) -> np.ndarray:
        passes.append(list(items))
        if -1 in items:
            raise ValueError("bad item")
        return np.array([[i * i] for i in items])

    model_lock = threading.Lock()
    merged = _Merged(square, model_lock)
    results: dict[int, object] = {}

    def call(items: list[int]) -> None:
        try:
            results[items[0]] = merged(items).tolist()
        except ValueError as exc:
            results[items[0]] = str(exc)

    for batch in (([1, 2], [3], [4, 5, 6]), ([7], [-1])):
        with model_lock:  # the model is busy: every call queues
            threads = [threading.Thread(target=call, args=(items,)) for items in batch]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(merged._waiting) < len(batch) and time.monotonic() < deadline:
                time.sleep(0.01)
        for thread in threads:
            thread.join()
    assert sorted(map(sorted, passes)) == [[-1, 7], [1, 2, 3, 4, 5, 6]]  # two passes for five calls
    assert results == {1: [[1], [4]], 3: [[9]], 4: [[16], [25], [36]], 7: "bad item", -1: "bad item"}
