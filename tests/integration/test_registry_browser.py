"""The MLflow UI shows the registered detector with its champion alias (headless Chromium)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import microdet
import pytest

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", shutil.which("chromedriver") or "/usr/bin/chromedriver")


def _driver(tmp: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp / 'chrome-profile'}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp / "chromedriver.log")),
                            options=opts)


def test_registered_model_page_shows_champion(mlflow_server, tmp_path, detector_cache, monkeypatch):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(f"headless Chromium needed: {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium "
                    "chromium-driver)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tasks.promote import run_promote
    from tasks.register import run_register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_ENABLE_UV_AUTO_DETECT", "false")
    monkeypatch.delenv("CHINTOX_PARENT_RUN_ID", raising=False)
    cfg = microdet.micro_config(tmp_path)
    microdet.build_micro_detector(cfg, cache=detector_cache)
    microdet.write_metrics(cfg)
    microdet.write_eval_sets(cfg)
    version = run_register(cfg)["version"]
    assert run_promote(cfg)["champion"] == version

    name = cfg.mlflow.registered_model
    # the screenshot goes to tmp (or a folder named by CHINTOX_SCREENSHOT_DIR, to keep it); any file
    # left there by an earlier run is removed first, so only this run's screenshot can pass the check
    shots = Path(os.environ.get("CHINTOX_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "mlflow-registered-model-champion.png"
    shot.unlink(missing_ok=True)
    driver = _driver(tmp_path)
    try:
        driver.get(f"{mlflow_server}/#/models/{name}")

        def rendered(d) -> bool:
            text = d.find_element(By.TAG_NAME, "body").text
            return "champion" in text and f"Version {version}" in text

        try:
            WebDriverWait(driver, 90, poll_frequency=1).until(rendered)
        finally:
            time.sleep(1)
            driver.save_screenshot(str(shot))
            print(f"screenshot: {shot}")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert name in body
        assert "champion" in body and f"Version {version}" in body
    finally:
        driver.quit()
    assert shot.stat().st_size > 10_000
