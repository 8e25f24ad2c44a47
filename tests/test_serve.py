"""The online stage: HTTP API, limits, the live cold-start path, FAISS option, metrics, CLI publish, the page.

Runs are tiny (toy ring catalog, 1-3 epochs, hidden 32): every test exercises the real service code.
"""

from __future__ import annotations

import json
import os
import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("httpx", reason="the serve extra is not installed (pip install -e '.[serve]')")

from fastapi.testclient import TestClient  # noqa: E402

from clip4rec.serve.app import create_app  # noqa: E402
from clip4rec.config import EncodeConfig, EngineConfig, ServeLimits  # noqa: E402
from clip4rec.serve.index import ExactIndex, FaissIndex, faiss_available  # noqa: E402
from clip4rec.serve.state import Rows, ServeError, ServiceState  # noqa: E402
from tests.support.recall import recall_vs_exact  # noqa: E402
from tests.support.server import BackgroundServer  # noqa: E402
from tests.support.toy import RingEncoder, build_toy, ring_vectors, train_toy_run  # noqa: E402

N = 48


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = build_toy(tmp_path_factory.mktemp("serve"), n_items=N, n_users=120)
    train_toy_run(root, "fused", root / "fused", epochs=3)
    train_toy_run(root, "fused-id", root / "fused-id", epochs=1)
    train_toy_run(root, "id", root / "id", epochs=1)
    return root


@pytest.fixture()
def fused(toy):
    state = ServiceState.from_run(toy / "fused")
    return state, TestClient(create_app(state))


def ring_history(k: int, length: int = 6) -> list[str]:
    """The items just before position k on the ring: what a user who walks towards k has seen."""
    return [f"i{(k - length + j) % N}" for j in range(length)]


# ---- the must-have: a brand-new item, published live, recommended by its content --------------------
def test_published_item_is_recommended_to_a_user_full_of_its_content_neighbours(fused):
    state, client = fused
    k = 20
    history = ring_history(k)
    before = client.post("/recommend", json={"history": history, "k": 10}).json()
    assert "brand-new" not in [i["item_id"] for i in before["items"]]

    raw = ring_vectors(k, N)   # what `clip4rec encode` stores for a poster/text at ring position k
    far = ring_vectors((k + N // 3) % N, N)  # the same kind of item, a third of the ring away
    r = client.post("/items", json={"item_id": "brand-new", "title": "Brand new", "vectors": raw})
    assert r.status_code == 201, r.text
    assert r.json()["created"] and r.json()["modalities_used"] == ["ring:image", "ring:llm_text"]
    assert client.post("/items", json={"item_id": "far-away", "vectors": far}).status_code == 201

    after = client.post("/recommend", json={"history": history, "k": 10}).json()
    ranked = [i["item_id"] for i in after["items"]]
    assert "brand-new" in ranked[:3], ranked
    assert "far-away" not in ranked, ranked  # content decides, not "new items float to the top"
    new = after["items"][ranked.index("brand-new")]
    assert new["published"] and new["cold_start"] and new["title"] == "Brand new"

    # Its row is exactly what the trained item side gives for that content (the offline/online contract).
    row = state.snapshot.table[state.lookup("brand-new")]
    expected = state.model.item_side.vector_for({key: np.array(v) for key, v in raw.items()})
    torch.testing.assert_close(row, expected)
    # ...and it has neighbours by image and by text at once.
    sims = client.get("/items/brand-new/similar", params={"by": "image", "k": 3}).json()["items"]
    assert sims[0]["item_id"] == f"i{k}"
    assert client.get("/items/brand-new").json()["published"] is True


def test_a_history_that_holds_a_published_item_is_answered(toy):
    """The content profile of a history is read from the served table, which holds published items too (it
    read the trained items' content alone, and a history with a published item failed with an IndexError)."""
    state = ServiceState.from_run(toy / "fused-id")
    state.publish("fresh", ring_vectors(20.5, N))
    history = ring_history(20, 4)
    out = state.recommend(history + ["fresh"], k=5)
    assert out["history_used"] == 5 and out["unknown_ids"] == []
    window = [state.lookup(i) for i in history + ["fresh"]]
    table = state.snapshot.table
    with torch.no_grad():
        user = state.model.user_vectors([np.asarray(window)], table)[0]
        content = table[:, table.shape[1] - state.model.item_side.channel_dims:]
        trained_only = state.model.user_vectors([np.asarray(window[:-1])], table)[0]
    assert out["items"][0]["score"] == pytest.approx(float(torch.mv(table, user).masked_fill(
        torch.isin(torch.arange(len(table)), torch.tensor(window)), float("-inf")).max()), rel=1e-5)
    assert (user - trained_only).abs().max() > 1e-4 and content.shape[0] == N + 1  # the new item was read


def test_publish_update_of_a_trained_fused_id_item_keeps_its_id_part(toy):
    state = ServiceState.from_run(toy / "fused-id")
    client = TestClient(create_app(state))
    i = state.lookup("i5")
    before = state.snapshot.table[i].clone()
    # Re-publishing an item with the very vectors it was trained with leaves its row where it was.
    r = client.post("/items", json={"item_id": "i5", "vectors": ring_vectors(5, N)})
    assert r.status_code == 200 and r.json()["created"] is False
    torch.testing.assert_close(state.snapshot.table[i], before, atol=5e-3, rtol=5e-3)
    # A brand-new item is scored through its content (the content->ID map); a trained one keeps its ID row.
    client.post("/items", json={"item_id": "n1", "vectors": ring_vectors(5, N)})
    side = state.model.item_side
    new_row = side.vector_for({k: np.array(v) for k, v in ring_vectors(5, N).items()})
    torch.testing.assert_close(state.snapshot.table[state.lookup("n1")], new_row)
    assert not torch.allclose(new_row, before)


def test_id_run_refuses_publish_with_409_but_serves(toy):
    client = TestClient(create_app(ServiceState.from_run(toy / "id")))
    r = client.post("/items", json={"item_id": "x", "vectors": ring_vectors(3, N)})
    assert r.status_code == 409 and "content" in r.json()["detail"]
    assert client.post("/recommend", json={"history": ring_history(10)}).status_code == 200
    assert client.get("/items/i3/similar", params={"by": "image"}).status_code == 404  # no store for an id Run


# ---- /recommend ----------------------------------------------------------------------------------------------
def test_recommend_matches_the_model_and_reports_unknown_and_seen(fused):
    state, client = fused
    history = ring_history(30) + ["nope", "i0"]
    r = client.post("/recommend", json={"history": history, "k": 10, "exclude_seen": True})
    assert r.status_code == 200
    body = r.json()
    assert body["unknown_ids"] == ["nope"] and body["fallback"] is None and body["history_used"] == 7
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 10 and not set(ids) & set(history)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and [i["rank"] for i in body["items"]] == list(range(1, 11))
    # Same as scoring with the model directly (full table, seen items masked).
    known = np.array([state.lookup(h) for h in history if h != "nope"])
    direct = state.model.score([known], state.snapshot.table)[0].clone()
    direct[known] = -math.inf
    assert ids == [state.item_ids[j] for j in torch.topk(direct, 10).indices.tolist()]
    both = client.post("/recommend", json={"history": history, "k": 48, "exclude_seen": False}).json()
    assert {i["item_id"] for i in both["items"]} & set(history)


def test_the_repeat_bias_reaches_served_lists_exactly_and_through_faiss(toy):
    states = [ServiceState.from_run(toy / "id")]
    if faiss_available():
        states.append(ServiceState.from_run(toy / "id", index="faiss", index_options={"kind": "flat"}))
    history = ring_history(20)
    known = np.array([states[0].lookup(h) for h in history])
    for state in states:
        with torch.no_grad():
            state.model.repeat_bias.fill_(100.0)  # users who always come back: the window goes first
        ids = [i["item_id"] for i in state.recommend(history, 10, exclude_seen=False)["items"]]
        assert set(ids[:len(history)]) == set(history)
        direct = state.model.score([known], state.snapshot.table)[0]
        assert ids == [state.item_ids[j] for j in torch.topk(direct, 10).indices.tolist()]
        excluded = [i["item_id"] for i in state.recommend(history, 10, exclude_seen=True)["items"]]
        assert not set(excluded) & set(history)


def test_empty_or_all_unknown_history_falls_back_to_popularity(fused):
    state, client = fused
    for history in ([], ["unknown-1", "unknown-2"]):
        body = client.post("/recommend", json={"history": history, "k": 5}).json()
        assert body["fallback"] == "popularity" and body["history_used"] == 0
        counts = [i["train_count"] for i in body["items"]]
        assert counts == sorted(counts, reverse=True) and counts[0] == state.train_counts.max()
        # A count is not a model score: the fallback says so and leaves score empty.
        assert body["score_kind"] == "popularity" and [i["score"] for i in body["items"]] == [None] * 5
    scored = client.post("/recommend", json={"history": ring_history(5), "k": 5}).json()
    assert scored["score_kind"] == "model" and all(isinstance(i["score"], float) for i in scored["items"])


@pytest.fixture()
def numeric(toy):
    """The fused Run's model behind a MovieLens-like catalog: ids "100".."147", users "7" and "8"."""
    base = ServiceState.from_run(toy / "fused")
    ids = [str(100 + j) for j in range(N)]
    users = {"7": ids[10:16], "8": ids[30:33]}
    state = ServiceState(base.model, ids, base.snapshot.table, users=users, train_counts=base.train_counts)
    return state, TestClient(create_app(state))


def test_ids_may_be_json_numbers(numeric):
    state, client = numeric
    as_text = client.post("/recommend", json={"history": ["110", "111", "112"], "k": 5}).json()
    as_numbers = client.post("/recommend", json={"history": [110, 111, 112], "k": 5}).json()
    assert as_numbers["history_used"] == 3 and as_numbers["unknown_ids"] == []
    assert as_numbers["items"] == as_text["items"]
    assert client.post("/recommend", json={"history": [999], "k": 5}).json()["unknown_ids"] == ["999"]
    for bad in ([True], [110.0], [[110]]):  # a boolean or a fraction is not an id
        assert client.post("/recommend", json={"history": bad}).status_code == 422, bad


def test_openapi_documents_number_ids_with_examples_from_the_served_catalog(numeric):
    state, client = numeric
    spec = client.get("/openapi.json").json()
    fields = spec["components"]["schemas"]["RecommendRequest"]["properties"]
    assert {"type": "integer"} in fields["history"]["items"]["anyOf"]
    assert "integer is read as its decimal string" in fields["history"]["items"]["description"]
    examples = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert examples["history"]["value"]["history"] == ["113", "114", "115"]   # user 7's last three items
    assert examples["numbers"]["value"]["history"] == [113, 114, 115]
    assert examples["user"]["value"] == {"user_id": "7", "k": 10}
    for example in examples.values():  # every documented example is answered
        assert client.post("/recommend", json=example["value"]).status_code == 200
    response = spec["components"]["schemas"]["RecommendResponse"]["properties"]
    assert response["score_kind"]["enum"] == ["model", "popularity"]


def test_recommend_for_a_known_user_uses_their_dataset_history(fused, numeric):
    state, client = fused
    user = state.user_ids[3]
    by_user = client.post("/recommend", json={"user_id": user, "k": 5}).json()
    by_history = client.post("/recommend", json={"history": state.users[user], "k": 5}).json()
    assert by_user["items"] == by_history["items"]
    assert (by_user["user_id"], by_user["history_from_user"]) == (user, len(state.users[user]))
    # More history after the stored one: it comes last, as the newest.
    more = client.post("/recommend", json={"user_id": user, "history": ["i0"], "k": 5}).json()
    again = client.post("/recommend", json={"history": state.users[user] + ["i0"], "k": 5}).json()
    assert more["items"] == again["items"] and more["history_from_user"] == len(state.users[user])
    missing = client.post("/recommend", json={"user_id": "nobody"})
    assert missing.status_code == 404 and "unknown user id 'nobody'" in missing.text
    assert numeric[1].post("/recommend", json={"user_id": 8, "k": 3}).json()["history_from_user"] == 3
    # The history limit keeps the newest ids: the request's, then the user's latest.
    small = ServiceState(state.model, state.item_ids, state.snapshot.table, users={"u": ["i1", "i2", "i3", "i4"]},
                         limits=ServeLimits(max_history=3))
    assert small.history_for("u", ["i9"]) == (["i3", "i4", "i9"], 2)
    assert small.history_for("u", ["i7", "i8", "i9"]) == (["i7", "i8", "i9"], 0)
    assert small.recommend(user_id="u", k=2)["history_from_user"] == 3


def test_long_history_is_truncated_to_the_model_window(fused):
    state, client = fused
    history = [f"i{j % N}" for j in range(20)]
    long = client.post("/recommend", json={"history": history, "k": 5, "exclude_seen": False}).json()
    short = client.post("/recommend", json={"history": history[-state.max_len:], "k": 5, "exclude_seen": False}).json()
    assert long["truncated"] == 20 - state.max_len and long["history_used"] == state.max_len
    assert [i["item_id"] for i in long["items"]] == [i["item_id"] for i in short["items"]]


@pytest.mark.parametrize("body, status, needle", [
    ({"history": ["i1"], "k": 0}, 422, "k"),
    ({"history": ["i1"], "k": 1001}, 422, "k"),
    ({"history": ["i1"] * 1001}, 422, "history"),
    ({"history": ["x" * 300]}, 422, "history"),
    ({"history": "i1"}, 422, "history"),
    ({"history": ["i1"], "bogus": 1}, 422, "bogus"),
])
def test_recommend_input_limits_answer_422_with_a_message(fused, body, status, needle):
    r = fused[1].post("/recommend", json=body)
    assert r.status_code == status and needle in r.text


def test_body_size_limit_413_by_length_and_by_stream(toy):
    state = ServiceState.from_run(toy / "fused", limits=ServeLimits(max_body_bytes=2000))
    client = TestClient(create_app(state))
    big = {"history": ["i1"] * 500}
    r = client.post("/recommend", json=big)
    assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        yield b'{"history": ['
        for _ in range(400):
            yield b'"i1",'
        yield b'"i1"]}'
    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/recommend", json={"history": ["i1"]}).status_code == 200
    assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


@pytest.mark.parametrize("body, needle", [
    ({"item_id": "z", "vectors": {"ring:image": [0.1] * 3}}, "has 3 values"),
    ({"item_id": "z", "vectors": {"other:thing": [0.1] * 8}}, "none of the vectors"),
    ({"item_id": "z", "vectors": {}}, "vectors"),
    ({"item_id": "", "vectors": {"ring:image": [0.1] * 8}}, "item_id"),
    ({"item_id": "z", "vectors": {"ring:image": "/etc/passwd"}}, "vectors"),
])
def test_publish_rejects_bad_vectors(fused, body, needle):
    r = fused[1].post("/items", json=body)
    assert r.status_code == 422 and needle in r.text, r.text


def test_publish_rejects_nan_and_infinite_values(fused):
    raw = b'{"item_id": "z", "vectors": {"ring:image": [NaN, 1, 1, 1, 1, 1, 1, 1]}}'
    r = fused[1].post("/items", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert fused[0].lookup("z") is None


# ---- similar, items, images, users, page ------------------------------------------------------------------
def test_similar_by_image_text_and_fused(fused):
    _, client = fused
    for by in ("image", "text", "fused"):
        body = client.get("/items/i10/similar", params={"by": by, "k": 4}).json()
        ids = [i["item_id"] for i in body["items"]]
        assert len(ids) == 4 and "i10" not in ids
        if by != "fused":
            assert set(ids[:2]) == {"i9", "i11"}, (by, ids)
    assert client.get("/items/nope/similar").status_code == 404
    assert client.get("/items/i1/similar", params={"by": "colour"}).status_code == 422
    assert client.get("/items/i1/similar", params={"k": 5000}).status_code == 422


def test_images_are_served_by_id_only(fused):
    _, client = fused
    r = client.get("/items/i3/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    for bad in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "nope"):
        assert client.get(f"/items/{bad}/image").status_code == 404


def test_catalog_users_health_and_page(fused):
    state, client = fused
    page = client.get("/items", params={"offset": 40, "limit": 100}).json()
    assert page["total"] == N and page["ids"] == [f"i{k}" for k in range(40, N)]
    users = client.get("/users", params={"limit": 3}).json()
    assert users["total"] == 120 and len(users["users"]) == 3
    u = users["users"][0]["user_id"]
    assert client.get(f"/users/{u}").json()["history"] == state.users[u]
    assert client.get("/users/nobody").status_code == 404
    health = client.get("/health").json()
    assert health["variant"] == "fused" and health["items"] == N and set(health["similar_by"]) == {"fused", "image", "text"}
    html = client.get("/")
    assert html.status_code == 200 and "<script src=\"/static/app.js\">" in html.text
    assert client.get("/static/app.js").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


def test_metrics_are_prometheus_text(fused):
    _, client = fused
    for _ in range(3):
        client.post("/recommend", json={"history": ["i1"]})
    client.post("/recommend", json={"k": 0})
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.split()[1] in ("HELP", "TYPE")
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['clip4rec_http_requests_total{method="POST",path="/recommend",status="200"}'] == 3
    assert samples['clip4rec_http_requests_total{method="POST",path="/recommend",status="422"}'] == 1
    assert samples['clip4rec_http_requests_total{method="GET",path="<unmatched>",status="404"}'] == 1
    buckets = [v for k, v in samples.items() if k.startswith("clip4rec_http_request_duration_seconds_bucket")
               and 'path="/recommend"' in k]
    assert buckets == sorted(buckets) and buckets[-1] == 4  # cumulative, +Inf holds every request
    assert samples["clip4rec_items"] == N


# ---- concurrency, index ------------------------------------------------------------------------------------
def test_publishing_while_serving_is_consistent(toy):
    state = ServiceState.from_run(toy / "fused")
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                out = state.recommend(ring_history(12), 20)
                assert len(out["items"]) == 20 and all(np.isfinite(i["score"]) for i in out["items"])
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for j in range(60):
        state.publish(f"new{j}", ring_vectors(j % N + 0.5, N))
        if j % 10 == 0:
            state.publish("i7", ring_vectors(7, N))  # updates copy the table
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert state.snapshot.n == N + 60 and state.snapshot.table.shape[0] == N + 60
    assert state.lookup("new59") == N + 59


def test_rows_grow_and_replace_without_changing_views_handed_out():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(20, 6, generator=g)
    rows = Rows(data)
    first = rows.view()
    assert torch.equal(first, data) and first.stride() == (1, 20)  # column-major: scoring reads columns
    extra = torch.randn(30, 6, generator=g)
    for row in extra:  # past the first capacity (20), the buffer is reallocated
        grown = rows.append(row)
    assert torch.equal(grown, torch.cat([data, extra])) and torch.equal(first, data)
    replaced = rows.replace(3, torch.zeros(6))
    assert torch.equal(replaced[3], torch.zeros(6)) and torch.equal(grown[3], data[3])
    assert torch.allclose(torch.mv(replaced, extra[0]), replaced.contiguous() @ extra[0], atol=1e-5)


def test_exact_index_excludes_and_matches_full_sort():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(500, 16, generator=g)
    q = torch.randn(16, generator=g)
    idx, scores = ExactIndex(table).search(q, 10, exclude=[int(torch.argmax(table @ q))])
    full = torch.argsort(table @ q, descending=True)[1:11].numpy()
    assert idx.tolist() == full.tolist() and np.all(np.diff(scores) <= 0)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_faiss_index_recall_and_service_with_published_items(toy):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(50, 16, generator=g)
    table = centers.repeat(100, 1) + 0.3 * torch.randn(5000, 16, generator=g)
    queries = torch.randn(50, 16, generator=g)
    ivf = FaissIndex(table, kind="ivf", nprobe=8)
    assert ivf.kind == "ivf" and 0.5 < recall_vs_exact(ivf, table, queries, k=10) <= 1.0
    assert recall_vs_exact(FaissIndex(table, kind="ivf", nprobe=10_000), table, queries, k=10) == 1.0
    # In the service: FAISS over the trained rows, published rows scanned exactly and merged.
    exact = ServiceState.from_run(toy / "fused")
    approx = ServiceState.from_run(toy / "fused", index="faiss")
    for s in (exact, approx):
        s.publish("brand-new", ring_vectors(20, N))
        s.publish("i21", ring_vectors(21.4, N))
    a, b = (s.recommend(ring_history(20), 10) for s in (exact, approx))
    assert [i["item_id"] for i in a["items"]] == [i["item_id"] for i in b["items"]]
    np.testing.assert_allclose([i["score"] for i in a["items"]], [i["score"] for i in b["items"]], rtol=1e-4)


# ---- over a real socket: CLI publish, and the page in a browser --------------------------------------------
def test_cli_publish_pushes_newly_encoded_items_to_a_running_service(toy, tmp_path):
    from typer.testing import CliRunner

    from clip4rec.cli import app as cli
    from clip4rec.data.dataset import Dataset
    from clip4rec.encode.pipeline import encode_dataset
    # The catalog grows by two items; `clip4rec encode` runs on the new dataset; `clip4rec publish` pushes them.
    ds = Dataset.load(toy / "ds")
    extra = pd.DataFrame({"item_id": ["p1", "p2"], "title": ["Poster one", "Poster two"],
                          "text": ["item 12", "item 36"], "image": ["posters/i12.png", "posters/i36.png"]})
    grown = Dataset(pd.concat([ds.items, extra], ignore_index=True), ds.interactions, {"source": "grown"})
    grown.save(tmp_path / "ds")
    for name in ("i12.png", "i36.png"):
        (tmp_path / "ds" / "posters").mkdir(exist_ok=True)
        (tmp_path / "ds" / "posters" / name).write_bytes((toy / "ds" / "posters" / name).read_bytes())
    encode_dataset(tmp_path / "ds", RingEncoder(N), tmp_path / "store", EncodeConfig(engine=EngineConfig(workers=1)),
                   progress=False, log=lambda m: None)
    state = ServiceState.from_run(toy / "fused")
    with BackgroundServer(create_app(state)) as server:
        result = CliRunner().invoke(cli, ["publish", str(tmp_path / "store"), "--url", server.url,
                                          "--dataset", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "published 2 new" in result.output
    assert state.titles[state.lookup("p2")] == "Poster two"
    top = [i["item_id"] for i in state.recommend(ring_history(12), 3)["items"]]
    assert "p1" in top, top


def test_serve_command_binds_loopback_by_default():
    from typer.testing import CliRunner

    from clip4rec.cli import app as cli
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output


BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars"]
# The docs screenshot is refreshed only on request, so a test run leaves the working tree clean.
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve_screenshot.png"
WRITE_DOCS = os.environ.get("CLIP4REC_WRITE_DOCS") == "1"


class WebDriver:
    """The few W3C WebDriver calls the page test needs, spoken to chromedriver directly (no selenium)."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, chromedriver: str, chromium: str, profile: Path, size=(1280, 1750)):
        import socket
        import subprocess
        import time

        import httpx
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([chromedriver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        args = BROWSER_ARGS + [f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        answer = self.http.post("/session", json=caps).json()["value"]
        if "sessionId" not in answer:
            self.close()
            raise RuntimeError(f"chromedriver could not start chromium: {answer}")
        self.session = f"/session/{answer['sessionId']}"

    def call(self, method: str, path: str, body=None):
        r = self.http.request(method, self.session + path, json=body)
        value = r.json()["value"]
        if r.status_code >= 400:
            raise RuntimeError(f"webdriver {path}: {value}")
        return value

    def js(self, script: str):
        return self.call("POST", "/execute/sync", {"script": script, "args": []})

    def wait_for(self, script: str, timeout: float = 20.0):
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(script)
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for: {script}")

    def click(self, css: str) -> None:
        element = self.call("POST", "/element", {"using": "css selector", "value": css})
        self.call("POST", f"/element/{element[self.ELEMENT]}/click", {})

    def screenshot(self) -> bytes:
        import base64
        return base64.b64decode(self.call("GET", "/screenshot"))

    def close(self) -> None:
        try:
            if hasattr(self, "session"):
                self.http.delete(self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.mark.slow  # starts a server and headless Chromium
def test_page_renders_tiles_in_headless_chromium(toy, tmp_path):
    """GET / in Debian's chromium: history and recommendation tiles render with posters, the live-published
    item is marked, and a click on it shows its image/text/fused neighbours. Saves docs/serve_screenshot.png."""
    import shutil
    import subprocess
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium chromium-driver; `make install` does it)")
    state = ServiceState.from_run(toy / "fused")
    state.publish("brand-new", ring_vectors(20, N), title="Brand new 20")
    hash_ = "#history=" + ",".join(ring_history(20))
    with BackgroundServer(create_app(state)) as server:
        driver_bin = shutil.which("chromedriver")
        if driver_bin is None:  # still a real check, without clicks: let the page run, then read its DOM
            out = subprocess.run([chromium, *BROWSER_ARGS, f"--user-data-dir={tmp_path / 'profile'}",
                                  "--window-size=1280,1200", "--virtual-time-budget=15000",
                                  f"--screenshot={tmp_path / 'shot.png'}", "--dump-dom", server.url + "/" + hash_],
                                 capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert out.stdout.count('class="tile"') >= 6 + 10, out.stdout[-2000:]
            assert 'data-item="brand-new"' in out.stdout
            shot = (tmp_path / "shot.png").read_bytes()
        else:
            driver = WebDriver(driver_bin, chromium, tmp_path / "profile")
            try:
                driver.call("POST", "/url", {"url": server.url + "/" + hash_})
                driver.wait_for("return document.body.dataset.ready === '1'")
                history = driver.js("return [...document.querySelectorAll('#history-tiles .tile')].map(t => t.dataset.item)")
                recs = driver.js("return [...document.querySelectorAll('#recs .tile')].map(t => t.dataset.item)")
                assert history == ring_history(20) and len(recs) == 12 and "brand-new" in recs[:3], (history, recs)
                # posters really loaded (not the placeholder), and the new item is badged
                loaded = driver.wait_for("const imgs = [...document.querySelectorAll('#history-tiles img')];"
                                         "return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0) && imgs.length")
                assert loaded == 6
                badges = driver.js("return document.querySelector('#recs .tile[data-item=\"brand-new\"]').innerText")
                assert "cold start" in badges and "new" in badges
                assert driver.js("return document.querySelectorAll('#user option').length") > 100
                driver.click('#recs .tile[data-item="brand-new"]')
                driver.wait_for("return document.getElementById('similar').dataset.ready === '1'")
                rows = driver.js("return Object.fromEntries([...document.querySelectorAll('#similar .tiles')]"
                                 ".map(r => [r.dataset.by, [...r.querySelectorAll('.tile')].map(t => t.dataset.item)]))")
                assert set(rows) == {"fused", "image", "text"} and rows["image"][0] == "i20", rows
                shot = driver.screenshot()
            finally:
                driver.close()
    assert shot[:4] == b"\x89PNG" and len(shot) > 10_000
    try:
        target = SCREENSHOT if WRITE_DOCS else tmp_path / SCREENSHOT.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(shot)
    except OSError:  # a read-only checkout still passes; the screenshot is documentation
        pass


def test_strings_that_cannot_be_written_back_are_refused_not_500(fused):
    _, client = fused
    for path, raw in (("/recommend", b'{"history": ["\\ud800"]}'),
                      ("/items", b'{"item_id": "\\udfff", "vectors": {"ring:image": [1,1,1,1,1,1,1,1]}}')):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422 and ("surrogate" in r.text or "unicode" in r.text), r.text


def test_batched_answers_equal_single_ones(toy):
    state = ServiceState.from_run(toy / "fused")
    requests = [(ring_history(k, 3 + k % 9), 1 + k % 15, k % 2 == 0) for k in range(24)]
    requests += [([], 5, True), (["nope"], 3, False), (ring_history(7), 0, True)]
    batched = state.recommend_many(requests)
    for (history, k, exclude), answer in zip(requests, batched):
        if k == 0:
            assert isinstance(answer, Exception)
            continue
        single = state.recommend(history, k, exclude)
        assert [i["item_id"] for i in answer["items"]] == [i["item_id"] for i in single["items"]]
        scores = [[np.nan if i["score"] is None else i["score"] for i in a["items"]] for a in (answer, single)]
        np.testing.assert_allclose(*scores, rtol=1e-4, atol=1e-4)  # the popularity fallback has no score (nan)


def test_concurrent_http_requests_are_coalesced_into_batches(toy):
    """While one batch computes, the requests that arrive queue and go together into the next pass (cut at
    max_batch). The first batch is held on a gate until the other clients' requests are all queued, so the
    batch sizes are known exactly; every answer is still the one a lone request gets."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    state = ServiceState.from_run(toy / "fused")
    app = create_app(state, max_batch=4)
    batcher = app.state.batcher
    gate, sizes = threading.Event(), []
    compute = state.recommend_many

    def held(batch):
        sizes.append(len(batch))
        assert gate.wait(60), "the gate was never opened"
        return compute(batch)

    state.recommend_many = held  # the batcher's compute step, on its one compute thread
    clients = 8
    requests = [(ring_history(k, 3 + k % 9), 1 + k % 15, k % 2 == 0) for k in range(20)]
    requests.insert(12, (ring_history(7), 0, True))  # a 422: refused at validation, never reaches the batcher
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client, \
            ThreadPoolExecutor(clients) as pool:
        def call(req):
            history, k, exclude = req
            return client.post("/recommend", json={"history": history, "k": k, "exclude_seen": exclude})
        answers = [pool.submit(call, req) for req in requests]
        deadline = time.monotonic() + 60
        while len(batcher.pending) < clients - 1:  # one request computing, the other clients' queued behind it
            assert time.monotonic() < deadline, f"only {len(batcher.pending)} requests queued"
            time.sleep(0.01)
        gate.set()
        answers = [a.result() for a in answers]
    # The lone first request ran at once; of the 7 queued behind it, the next pass took max_batch (the rest went
    # on with whatever arrived meanwhile, never more than max_batch at once).
    assert sizes[:2] == [1, 4] and max(sizes) == 4
    assert batcher.requests == sum(sizes) == len(requests) - 1
    assert batcher.batches == len(sizes) < batcher.requests
    for (history, k, exclude), r in zip(requests, answers):
        if k == 0:
            assert r.status_code == 422
            continue
        assert r.status_code == 200
        alone = state.recommend(history, k, exclude)["items"]
        assert [i["item_id"] for i in r.json()["items"]] == [i["item_id"] for i in alone]
        np.testing.assert_allclose([i["score"] for i in r.json()["items"]], [i["score"] for i in alone],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_faiss_options_reach_the_index(toy):
    flat = ServiceState.from_run(toy / "fused", index="faiss", index_options={"kind": "flat"})
    assert isinstance(flat.snapshot.index, FaissIndex) and flat.snapshot.index.kind == "flat"
    assert flat.health()["index"] == "faiss"


def test_publish_accepts_vectors_as_wide_as_the_encoder_wrote_them():
    # The content block keeps 128 principal directions, but a new item arrives as the encoder's raw vector.
    from clip4rec.model.item_side import ContentIdItems
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(300, 200)).astype(np.float32)
    side = ContentIdItems({"enc:text": (raw, np.ones(300, bool))}, np.ones(300, int), hidden=8, use_ids=True).eval()
    content, ignored = ServiceState._resolve(None, side, {"text": raw[3].tolist(), "other": [1.0]})
    assert ignored == ["other"] and content["enc:text"].shape == (200,)
    with pytest.raises(ServeError, match="have 200"):
        ServiceState._resolve(None, side, {"text": raw[3, :128].tolist()})
