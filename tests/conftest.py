"""The fixtures every folder of tests uses, and the engine lanes. What the tests share that is not a fixture is in
tests/support."""

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.config import Settings
from app.engines.espeak import EspeakEngine
from tests.support.audio import wav
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.server import running
from tests.support.speech import EN_PROMPT, ENGINE_RATE, ZH_PROMPT, spoken


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dir=tmp_path / "no-model", engine="auto")


@pytest.fixture
def client(settings):
    with running(settings) as client:
        yield client


@pytest.fixture(scope="session")
def engine() -> EspeakEngine:
    return EspeakEngine()


@pytest.fixture(scope="session")
def male_prompt(engine) -> bytes:
    """About 5 s of real speech as a WAV file: a low male voice reading EN_PROMPT."""
    return wav(spoken(engine, EN_PROMPT, "英文男"), ENGINE_RATE)


@pytest.fixture(scope="session")
def female_prompt(engine) -> bytes:
    return wav(spoken(engine, EN_PROMPT, "英文女"), ENGINE_RATE)


@pytest.fixture(scope="session")
def chinese_prompt(engine) -> bytes:
    return wav(spoken(engine, ZH_PROMPT, "中文女"), ENGINE_RATE)


@pytest.fixture(scope="module")
def browser():
    """The system's Chromium, headless (tests/support/browser.py)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM} (the browser tests need it): run `make browser`, or "
            "`apt-get install chromium`, or point CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# -- CosyVoice engine lanes ------------------------------------------------------------------------
# One process runs one lane (one `cosyvoice` package can be imported per process); `make test` runs
# the three in parallel. The CosyVoice tests (tests/engines/test_cosyvoice*.py) and the engine contract
# (tests/engines/test_contract.py, through ``any_engine``) run on the lane given.


@dataclass(frozen=True)
class Lane:
    name: str
    generation: int  # 2: CosyVoice2, 3: CosyVoice3
    upstream: bool  # upstream's code from COSYVOICE_SRC; else the installed cosyvoice2-fr-infer wheel


LANES = {
    lane.name: lane
    for lane in (Lane("fr-infer-cv2", 2, False), Lane("upstream-cv2", 2, True), Lane("upstream-cv3", 3, True))
}


def pytest_addoption(parser):
    parser.addoption(
        "--lane",
        choices=sorted(LANES),
        default=os.environ.get("COSYVOICE_TEST_LANE", "fr-infer-cv2"),
        help="the engine lane the CosyVoice contract runs on (default fr-infer-cv2)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "upstream_lane: needs upstream's own files; runs in the upstream lanes only")
    config.addinivalue_line("markers", "generation(n): about CosyVoice<n> only; runs in its lanes only")


def _in_lane(item, lane: Lane) -> bool:
    generation = item.get_closest_marker("generation")
    if generation is not None and generation.args[0] != lane.generation:
        return False
    return lane.upstream or item.get_closest_marker("upstream_lane") is None


def pytest_collection_modifyitems(config, items):
    """Tests about upstream's own files, or about the other generation, are deselected (not skipped)."""
    lane = LANES[config.getoption("--lane")]
    kept = [item for item in items if _in_lane(item, lane)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def lane(request) -> Lane:
    return LANES[request.config.getoption("--lane")]


@pytest.fixture(scope="session")
def lane_source(lane) -> Path | None:
    """The upstream checkout this lane imports (None: the installed wheel)."""
    if not lane.upstream:
        return None
    source = os.environ.get("COSYVOICE_SRC", "").strip()
    if not source:
        pytest.skip(
            f"lane {lane.name} needs upstream CosyVoice's code: set COSYVOICE_SRC to a checkout of the pinned "
            "commit, or run `make install-cosyvoice` on a machine that can reach github.com"
        )
    return Path(source)


@pytest.fixture(scope="session")
def tiny_model(lane, lane_source) -> Path:
    """This lane's tiny random model, built once by the lane's own upstream code and cached."""
    from app.engines.cosyvoice import import_upstream
    from tests.support.models import cached_model

    import_upstream(lane_source)
    return cached_model(lane.generation, "tiny")


@pytest.fixture
def cv_settings(tiny_model, lane_source, tmp_path) -> Settings:
    """A model dir of its own per test: the weights are links, spk2info.pt is a copy that tests change."""
    from tests.support.models import working_copy

    model_dir = working_copy(tiny_model, tmp_path / "model")
    return Settings(engine="auto", model_dir=model_dir, data_dir=tmp_path / "data", src=lane_source, max_concurrency=3)


@pytest.fixture
def cv(cv_settings):
    with running(cv_settings) as client:
        yield client


@pytest.fixture
def cv_engine(cv):
    """The CosyVoice engine behind the ``cv`` app."""
    return cv.app.state.speech.engine


@pytest.fixture
def cloned(cv_engine, male_prompt) -> dict:
    """A voice cloned on ``cv_engine`` from the male prompt (not saved in the app's store)."""
    from app.core.audio import prepare_prompt

    return cv_engine.make_voice(EN_PROMPT, prepare_prompt(male_prompt, "prompt_audio", 1.0, 30.0))


@pytest.fixture(scope="module", params=["espeak", "cosyvoice"])
def any_engine(request, engine, tmp_path_factory):
    """Each engine in turn, for the engine contract: the embedded one, then CosyVoice on this lane's tiny model,
    loaded as the service loads it (``load_engine``), once per module that asks for it."""
    if request.param == "espeak":
        return engine
    from app.engines import load_engine
    from tests.support.models import working_copy

    tiny_model, lane_source = request.getfixturevalue("tiny_model"), request.getfixturevalue("lane_source")
    folder = tmp_path_factory.mktemp("any_engine")
    model_dir = working_copy(tiny_model, folder / "model")
    settings = Settings(engine="cosyvoice", model_dir=model_dir, data_dir=folder / "data", src=lane_source)
    return load_engine(settings).engine
