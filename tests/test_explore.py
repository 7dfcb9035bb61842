"""The explorer (`tf-biggan-explore`): its endpoints give the Python API's images, refuse bad
input with a JSON message and keep serving, answer concurrent requests; the page, driven by
Chromium, shows what the endpoints give and asks nothing of any other host."""

import concurrent.futures
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from test_sample import (
    CLASS_NAMES,
    DIM_Z,
    NUM_CLASSES,
    R,
    model_dir_and_export,
    standing_stats_model_dir,
)

import tf_biggan
from tf_biggan import explore, explore_server, imaging, loader, sheets

PAD = 2
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """`(model_dir, export_dir)` of test_sample's tiny generator (3 classes, 32 px)."""
    _, model_dir, export_dir = model_dir_and_export(tmp_path_factory.mktemp("explore"))
    return model_dir, export_dir


@pytest.fixture(scope="module")
def gen(model):
    return tf_biggan.load(model[0])


@pytest.fixture(scope="module")
def api_gen(model):
    """Another `tf_biggan.load` of the model_dir: what a script would sample."""
    return tf_biggan.load(model[0])


@pytest.fixture(scope="module")
def server(gen):
    running = explore.serve(gen, max_samples=16)
    yield running
    running.close()


def _get(server, path, params=None):
    """`(status, headers, body)` of GET `path` with query `params` (a dict or pairs)."""
    url = server.url + path.lstrip("/")
    if params is not None:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def _decode(png):
    return tf.io.decode_png(png).numpy()


def _saved_grid_bytes(images, tmp_path, rows=1):
    """The bytes `tf_biggan.save_grid` writes for `images`."""
    path = str(tmp_path / "grid.png")
    tf_biggan.save_grid(images, path, rows=rows)
    with open(path, "rb") as f:
        return f.read()


# The endpoints, in process.


@pytest.mark.slow
@pytest.mark.parametrize(
    "params, classes",
    [
        ({"class": "square", "n": 4, "truncation": 0.5, "seed": 3}, ["square"]),
        ({"class": "2", "n": 3, "seed": 11}, [2]),  # by index, no truncation
        ({"class": "circle"}, ["circle"]),  # n = 8, seed 0, no truncation
    ],
)
def test_sample_endpoint_is_the_python_apis_png(server, api_gen, params, classes, tmp_path):
    status, headers, body = _get(server, "/api/sample.png", params)
    assert status == 200 and headers["Content-Type"] == "image/png"
    api = api_gen.sample(
        classes=classes,
        n=params.get("n", explore.DEFAULT_N),
        truncation=params.get("truncation"),
        seed=params.get("seed", 0),
    )
    # Byte for byte the file save_grid writes, so its pixels too.
    assert body == _saved_grid_bytes(api, tmp_path)
    n = len(api)
    assert _decode(body).shape == (R + 2 * PAD, n * (R + PAD) + PAD, 3)
    np.testing.assert_array_equal(_decode(body), imaging.image_grid(api, 1, n).numpy())


def test_repeated_class_gives_one_row_per_class(server, gen):
    status, _, body = _get(server, "/api/sample.png", [("class", "ring"), ("class", "0"), ("n", 3)])
    assert status == 200
    rows = [gen.sample(classes=[c], n=3, seed=0) for c in ("ring", "circle")]
    expected = imaging.image_grid(np.concatenate(rows), 2, 3).numpy()
    np.testing.assert_array_equal(_decode(body), expected)
    assert not np.array_equal(rows[0], rows[1])


def test_info_describes_the_model(server, model):
    status, headers, body = _get(server, "/api/info")
    assert status == 200 and headers["Content-Type"] == "application/json"
    info = json.loads(body)
    assert info["resolution"] == R and info["num_classes"] == NUM_CLASSES
    assert info["class_names"] == CLASS_NAMES and info["class_names_recorded"]
    assert (info["step"], info["source"], info["precision"]) == (5, model[0], "float32")
    assert not info["has_standing_stats"] and info["max_truncation"] is None
    assert (info["max_samples"], info["default_n"], info["default_frames"]) == (16, 8, 8)


# Each bad request, with a piece of its message.
BAD_REQUESTS = [
    ({"class": "circel"}, "unknown class 'circel': nearest names: circle"),
    ({"class": "Squar"}, "nearest names: square"),
    ({"class": "3"}, "class index 3 is outside [0, 3)"),
    ({"class": "-1"}, "class index -1 is outside [0, 3)"),
    ({"n": 4}, "give at least one class"),
    ({"class": "ring", "n": 0}, "n must be >= 1, got 0"),
    ({"class": "ring", "n": -2}, "n must be >= 1, got -2"),
    ({"class": "ring", "n": 17}, "n=17 is 17 images, above this server's --max_samples=16"),
    ([("class", "ring"), ("class", "square"), ("n", 9)], "2 classes x n=9 is 18 images"),
    ({"class": "ring", "n": "many"}, "n must be an integer, got 'many'"),
    ({"class": "ring", "n": "2.5"}, "n must be an integer, got '2.5'"),
    ({"class": "ring", "seed": "abc"}, "seed must be an integer, got 'abc'"),
    ({"class": "ring", "seed": 2**63}, "seed must fit in 64 bits"),
    ({"class": "ring", "truncation": "half"}, "truncation must be a number, got 'half'"),
    ({"class": "ring", "truncation": ""}, "truncation must be a number, got ''"),
    ({"class": "ring", "truncation": 0}, "truncation must be a number > 0"),
    ({"class": "ring", "truncation": -0.5}, "truncation must be a number > 0"),
    ({"class": "ring", "truncation": "nan"}, "truncation must be a number > 0"),
    ({"class": "ring", "truncation": "inf"}, "truncation must be a number > 0"),
    ({"class": "ring", "truncaton": 0.5}, "unknown parameter 'truncaton': did you mean"),
    ([("class", "ring"), ("n", 2), ("n", 3)], "n is given 2 times"),
]


@pytest.mark.parametrize("params, message", BAD_REQUESTS)
def test_bad_sample_request_answers_400_and_the_server_goes_on(server, gen, params, message):
    status, headers, body = _get(server, "/api/sample.png", params)
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert message in json.loads(body)["error"]
    status, _, body = _get(server, "/api/sample.png", {"class": "ring", "n": 1, "seed": 2})
    assert status == 200
    expected = imaging.image_grid(gen.sample(classes=["ring"], n=1, seed=2), 1, 1).numpy()
    np.testing.assert_array_equal(_decode(body), expected)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"class_b": "ring"}, "give the first endpoint's class"),
        ({"class_a": "ring", "class_b": "rnig"}, "unknown class 'rnig': nearest names: ring"),
        ({"class_a": "ring", "frames": 1}, "frames must be >= 2, got 1"),
        ({"class_a": "ring", "frames": 17}, "frames=17 is 17 images, above"),
        ({"class_a": "ring", "mode": "y"}, "mode must be one of both, z, class, got 'y'"),
        ({"class_a": "ring", "seed_b": "x"}, "seed_b must be an integer, got 'x'"),
        ({"class_a": "ring", "truncation": -1}, "truncation must be a number > 0"),
    ],
)
def test_bad_interpolation_request_answers_400(server, params, message):
    status, _, body = _get(server, "/api/interpolate.png", params)
    assert status == 400 and message in json.loads(body)["error"]
    assert _get(server, "/api/interpolate.png", {"class_a": "ring", "frames": 2})[0] == 200


def test_unknown_paths_answer_404_in_json(server):
    status, headers, body = _get(server, "/api/samples.png", {"class": "ring"})
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "no such page: /api/samples.png"}
    status, _, body = _get(server, "/api/info", {"verbose": 1})
    assert status == 400 and "unknown parameter 'verbose'" in json.loads(body)["error"]


def test_the_page_is_served_by_the_program_and_names_no_other_host(server):
    for path, content_type in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ]:
        status, headers, body = _get(server, path)
        assert status == 200 and headers["Content-Type"].startswith(content_type)
        # The browser may load and fetch from this server only.
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy
        assert "connect-src 'self';" in policy
        text = body.decode()
        assert "http://" not in text and "https://" not in text and "//" + "cdn" not in text


def test_interpolation_frames(server, gen):
    t = 0.7
    query = {"class_a": "circle", "seed_a": 4, "class_b": "ring", "seed_b": 9, "frames": 5}
    pictures = {}
    for mode in explore.MODES:
        status, _, body = _get(server, "/api/interpolate.png", dict(query, mode=mode, truncation=t))
        assert status == 200
        pictures[mode] = _decode(body)
        assert pictures[mode].shape == (R + 2 * PAD, 5 * (R + PAD) + PAD, 3)
    # "class" is the sample program's class interpolation sheet with one row.
    sheet = sheets.class_interpolation_sheet(gen, "circle", "ring", 5, 1, t, seed=4)
    np.testing.assert_array_equal(pictures["class"], sheet)
    # "both": z and y move together between the endpoints' z and one-hots.
    z_a, z_b = (imaging.truncated_z(1, DIM_Z, t, seed=s)[0] for s in (4, 9))
    y = imaging.interpolate(*loader.onehot(gen, [0, 2]), 5)
    both = gen.generate(imaging.interpolate(z_a, z_b, 5), y, t)
    np.testing.assert_array_equal(pictures["both"], imaging.image_grid(both, 1, 5).numpy())
    # Endpoints are the one-image samples of (class, seed); "z" keeps class_a.
    tiles = [pictures["z"][PAD : PAD + R, PAD + k * (R + PAD) :][:, :R] for k in (0, 4)]
    for tile, seed in zip(tiles, (4, 9), strict=True):
        expected = gen.sample(classes=["circle"], n=1, truncation=t, seed=seed)[0]
        assert np.abs(tile.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(pictures["z"], pictures["both"])


def test_eight_concurrent_requests_are_all_answered(server, gen):
    def request(seed):
        return _get(server, "/api/sample.png", {"class": "square", "n": 2, "seed": seed})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(request, range(8)))
    for seed, (status, _, body) in enumerate(answers):
        assert status == 200
        expected = gen.sample(classes=["square"], n=2, seed=seed)
        np.testing.assert_array_equal(_decode(body), imaging.image_grid(expected, 1, 2).numpy())
    # One thread owns the generator, whatever the number of requests.
    workers = [t for t in threading.enumerate() if t.name.startswith("tf-biggan-explore-generator")]
    assert len(workers) == 1


def test_an_export_is_served_too(model, tmp_path):
    gen = loader.load_generator(saved_model=model[1])
    running = explore.serve(gen)
    try:
        params = {"class": "ring", "n": 3, "truncation": 0.4, "seed": 1}
        status, _, body = _get(running, "/api/sample.png", params)
        info = json.loads(_get(running, "/api/info")[2])
    finally:
        running.close()
    assert status == 200
    api = tf_biggan.load(model[1]).sample(classes=["ring"], n=3, truncation=0.4, seed=1)
    assert body == _saved_grid_bytes(api, tmp_path)
    assert info["source"] == os.path.join(model[1], "2") and not info["has_standing_stats"]


@pytest.mark.slow
def test_truncation_above_one_is_refused_only_with_standing_statistics(tmp_path, server, gen):
    # Without statistics t = 1.5 is a threshold of z like any other.
    status, _, body = _get(server, "/api/sample.png", {"class": "ring", "n": 2, "truncation": 1.5})
    assert status == 200
    expected = gen.sample(classes=["ring"], n=2, truncation=1.5)
    np.testing.assert_array_equal(_decode(body), imaging.image_grid(expected, 1, 2).numpy())
    model_dir = str(tmp_path / "standing")
    standing_stats_model_dir(model_dir)
    standing = tf_biggan.load(model_dir)
    running = explore.serve(standing)
    try:
        info = json.loads(_get(running, "/api/info")[2])
        refused = _get(running, "/api/sample.png", {"class": "ring", "truncation": 1.5})
        at_one = _get(running, "/api/sample.png", {"class": "ring", "n": 2, "truncation": 1})
    finally:
        running.close()
    assert info["has_standing_stats"] and info["standing_stats_entries"] == 3
    assert info["max_truncation"] == 1.0
    assert refused[0] == 400
    assert "truncation 1.5 is above 1" in json.loads(refused[2])["error"]
    assert at_one[0] == 200
    expected = standing.sample(classes=["ring"], n=2, truncation=1.0)
    np.testing.assert_array_equal(_decode(at_one[2]), imaging.image_grid(expected, 1, 2).numpy())


def test_a_model_without_class_names_is_explored_by_index(gen):
    nameless = copy.copy(gen)
    nameless.class_names = []
    explorer = explore.Explorer(nameless, max_samples=4)
    try:
        assert explorer.info()["class_names"] == ["0", "1", "2"]
        assert not explorer.info()["class_names_recorded"]
        assert explorer.class_index("2") == 2
        with pytest.raises(explore_server.BadRequest, match="unknown class 'ring'"):
            explorer.class_index("ring")
        png = explorer.sample_png(classes=["1"], n=2, seed=5)
    finally:
        explorer.close()
    expected = gen.sample(classes=[1], n=2, seed=5)
    np.testing.assert_array_equal(_decode(png), imaging.image_grid(expected, 1, 2).numpy())


def test_nearest_names():
    names = ["great white shark", "tiger shark", "hammerhead", "goldfish", "golden retriever"]
    assert explore.nearest_names("shark", names) == ["great white shark", "tiger shark"]
    assert explore.nearest_names("Goldfsh", names) == ["goldfish"]
    assert explore.nearest_names("zebra", names) == []


def test_a_closed_server_frees_its_port(gen):
    running = explore.serve(gen)
    port = running.server_address[1]
    assert _get(running, "/api/info")[0] == 200
    running.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5)
    with pytest.raises(explore_server.BadRequest, match="shutting down"):
        running.explorer.sample_png(classes=["ring"], n=1)


# The program.


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_program(args, log_path):
    """`python -m tf_biggan.explore ARGS --port=0` (stderr to `log_path`), and the URL its
    first line gives. The program starts with SIGINT ignored, as a job started in the
    background of a script without job control does; Ctrl-C must stop it all the same."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tf_biggan.explore", "--port=0", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=_ignore_sigint,
        )
    line = process.stdout.readline()
    if not line:
        process.wait(timeout=60)
        with open(log_path) as log:
            raise AssertionError(f"no URL printed; stderr:\n{log.read()[-3000:]}")
    return process, line.split(" at ")[1].split()[0]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["model_dir", "export"])
def test_the_program_serves_a_model_dir_or_an_export(model, which, tmp_path):
    path = model[0] if which == "model_dir" else model[1]
    process, url = _start_program([f"--{which}={path}"], tmp_path / "stderr.txt")
    try:
        with urllib.request.urlopen(url + "api/sample.png?class=square&n=2&seed=4") as response:
            body = response.read()
        with urllib.request.urlopen(url) as response:
            assert b"tf_biggan explorer" in response.read()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    api = tf_biggan.load(path).sample(classes=["square"], n=2, seed=4)
    assert body == _saved_grid_bytes(api, tmp_path)


@pytest.mark.slow
def test_the_program_wants_one_model(model):
    for args in ([], [f"--model_dir={model[0]}", f"--export={model[1]}"]):
        result = subprocess.run(
            [sys.executable, "-m", "tf_biggan.explore", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode != 0
        assert "give exactly one of --model_dir and --export" in result.stderr


# The page, in Chromium.


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install 'tf_biggan[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the explorer; after the test, every request it made must have gone
    to the explorer's own host and port (or been a blob: of its own pictures), and the
    browser must have blocked nothing under the Content-Security-Policy (a fetch it
    blocks is never a request)."""
    context = browser.new_context(accept_downloads=True)
    opened = context.new_page()
    requests, console = [], []
    opened.on("request", lambda request: requests.append(request.url))
    opened.on("console", lambda message: console.append(message.text))
    opened.goto(server.url)
    _wait_for_picture(opened)
    yield opened
    context.close()
    origin = server.url.rstrip("/")
    assert requests and all(
        url.startswith(server.url) or url.startswith(f"blob:{origin}/") for url in requests
    ), requests
    assert not [text for text in console if "Content Security Policy" in text], console


def _wait_for_picture(page, **expected):
    """Waits until the page shows a picture whose API query holds `expected` (query
    parameter -> list of values); returns that query."""
    page.wait_for_function(
        """expected => {
          if (document.body.dataset.state !== "ready") return false;
          const query = new URLSearchParams(document.querySelector("#picture").dataset.api.split("?")[1]);
          return Object.entries(expected).every(([k, v]) => JSON.stringify(query.getAll(k)) === JSON.stringify(v));
        }""",
        arg={
            k: [str(v) for v in (vs if isinstance(vs, list) else [vs])]
            for k, vs in expected.items()
        },
        timeout=60_000,
    )
    api = page.get_attribute("#picture", "data-api")
    assert page.is_hidden("#message")
    return api


def _wait_for_error(page, text):
    page.wait_for_function(
        "text => document.body.dataset.state === 'error' && "
        "document.querySelector('#message').textContent.includes(text)",
        arg=text,
        timeout=60_000,
    )
    assert page.is_hidden("#figure")


def _shown_png(page, server):
    """The PNG of the picture shown: its download, which must be the API's answer."""
    with page.expect_download() as download:
        page.click("#download")
    with open(download.value.path(), "rb") as f:
        png = f.read()
    status, _, body = _get(server, page.get_attribute("#picture", "data-api"))
    assert status == 200 and body == png
    return png


@pytest.mark.slow
def test_page_loads_and_shows_the_first_class(page, server, gen):
    assert "32\u00d732 px \u00b7 3 classes \u00b7 step 5 \u00b7 float32" in page.inner_text(
        "#model"
    )
    _wait_for_picture(page, **{"class": "circle", "n": 8, "seed": 0, "truncation": []})
    png = _shown_png(page, server)
    expected = gen.sample(classes=["circle"], n=8, seed=0)
    np.testing.assert_array_equal(_decode(png), imaging.image_grid(expected, 1, 8).numpy())


@pytest.mark.slow
def test_typing_part_of_a_name_adds_that_class(page, server, gen):
    page.fill("#n", "3")
    _wait_for_picture(page, n=3)
    page.locator("#class-search").press_sequentially("qua")
    page.click("#class-matches li >> text=square")
    _wait_for_picture(page, **{"class": ["circle", "square"], "n": 3})
    assert page.inner_text("#chosen").count("\u00d7") == 2
    rows = [gen.sample(classes=[c], n=3) for c in ("circle", "square")]
    expected = imaging.image_grid(np.concatenate(rows), 2, 3).numpy()
    np.testing.assert_array_equal(_decode(_shown_png(page, server)), expected)
    # Enter takes the first match; a typed index finds its class too.
    page.fill("#class-search", "2")
    page.press("#class-search", "Enter")
    _wait_for_picture(page, **{"class": ["circle", "square", "ring"]})


@pytest.mark.slow
def test_truncation_and_seed_change_the_picture(page, server, gen):
    page.fill("#n", "2")
    _wait_for_picture(page, n=2)
    before = _shown_png(page, server)
    page.fill("#truncation-slider", "0.3")
    _wait_for_picture(page, truncation=0.3, n=2, seed=0)
    truncated = _shown_png(page, server)
    assert truncated != before
    expected = gen.sample(classes=["circle"], n=2, truncation=0.3, seed=0)
    np.testing.assert_array_equal(_decode(truncated), imaging.image_grid(expected, 1, 2).numpy())
    page.fill("#seed", "7")
    _wait_for_picture(page, truncation=0.3, n=2, seed=7)
    reseeded = _shown_png(page, server)
    assert reseeded != truncated
    expected = gen.sample(classes=["circle"], n=2, truncation=0.3, seed=7)
    np.testing.assert_array_equal(_decode(reseeded), imaging.image_grid(expected, 1, 2).numpy())
    page.uncheck("#truncate")
    _wait_for_picture(page, truncation=[], seed=7)


@pytest.mark.slow
def test_the_interpolation_shows_n_frames(page, server):
    page.check("input[name=view][value=interpolation]")
    _wait_for_picture(page, class_a="circle", class_b="square", frames=8, mode="both")
    page.fill("#frames", "5")
    page.select_option("#mode", "class")
    page.fill("#class-b", "rin")
    page.click("#class-b-matches li >> text=ring")
    query = dict(class_a="circle", seed_a=0, class_b="ring", seed_b=1, frames=5, mode="class")
    _wait_for_picture(page, **query)
    width = page.evaluate("document.querySelector('#picture').naturalWidth")
    assert width == 5 * (R + PAD) + PAD
    expected = server.explorer.interpolation_png(**query)
    assert _shown_png(page, server) == expected


@pytest.mark.slow
def test_each_bad_input_shows_its_message_and_the_next_good_request_works(page):
    page.fill("#n", "2")
    _wait_for_picture(page, n=2)
    page.fill("#class-search", "circel")
    page.press("#class-search", "Enter")
    _wait_for_error(page, "unknown class 'circel': nearest names: circle")
    page.click("[aria-label='Remove circel']")
    _wait_for_picture(page, **{"class": "circle", "n": 2})
    for selector, bad, message, good in [
        ("#n", "0", "n must be >= 1, got 0", "2"),
        ("#n", "99", "n=99 is 99 images, above this server's --max_samples=16", "2"),
        ("#n", "two", "n must be an integer, got 'two'", "2"),
        ("#seed", "abc", "seed must be an integer, got 'abc'", "1"),
        ("#truncation", "0", "truncation must be a number > 0", "0.5"),
        ("#truncation", "-1", "truncation must be a number > 0", "0.5"),
        ("#truncation", "x", "truncation must be a number, got 'x'", "0.5"),
    ]:
        page.fill(selector, bad)
        _wait_for_error(page, message)
        page.fill(selector, good)
        _wait_for_picture(page, **{selector[1:]: good})
    page.click("[aria-label='Remove circle']")
    _wait_for_error(page, "give at least one class")
