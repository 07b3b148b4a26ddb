"""Headless Chromium as a WebRTC peer for SDP fixtures and interop tests.

``python -m tests.proto.sdp.chromium`` (from the repository root) rewrites the ``fixtures/chromium_*``
files. The page is served from a routed ``https://meet443.test/`` origin (a secure context, so
``getUserMedia`` exists) without any network; fake devices stand in for camera and microphone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import playwright
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
FIXTURES = Path(__file__).parent / "fixtures"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
ORIGIN = "https://meet443.test/"

#: One publisher: audio, 3-layer simulcast video (q = 1/4, h = 1/2, f = full) and a data channel.
PUBLISH_OFFER_JS = """
async () => {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 1280, height: 720}});
  pc.addTransceiver(stream.getAudioTracks()[0], {direction: 'sendrecv', streams: [stream]});
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: 'sendonly', streams: [stream], sendEncodings: [
    {rid: 'q', scaleResolutionDownBy: 4}, {rid: 'h', scaleResolutionDownBy: 2}, {rid: 'f'}]});
  pc.createDataChannel('meet443');
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await new Promise(resolve => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 3000);
  });
  return pc.localDescription.sdp;
}
"""

#: A plain camera + microphone publisher without simulcast: the video has an FID ssrc-group.
SENDRECV_OFFER_JS = """
async () => {
  const pc = new RTCPeerConnection();
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  const offer = await pc.createOffer();
  return offer.sdp;
}
"""

#: A subscriber-only peer: nothing to send, three receivers.
RECVONLY_OFFER_JS = """
async () => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('audio', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('video', {direction: 'recvonly'});
  const offer = await pc.createOffer();
  return offer.sdp;
}
"""


def chromium_missing() -> str | None:
    """Why Chromium cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed"
    if not (Path(playwright.__file__).parent / "driver").exists():
        return "playwright's driver is missing"
    return None


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A Playwright page on a secure origin in headless Chromium; closed afterwards."""
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route(
                f"{ORIGIN}**",
                lambda route: route.fulfill(status=200, content_type="text/html", body="<html></html>"),
            )
            page.goto(ORIGIN)
            yield page
        finally:
            browser.close()


def capture() -> dict[str, str]:
    with chromium_page() as page:
        return {
            "chromium_publish_simulcast.sdp": page.evaluate(PUBLISH_OFFER_JS),
            "chromium_sendrecv.sdp": page.evaluate(SENDRECV_OFFER_JS),
            "chromium_recvonly.sdp": page.evaluate(RECVONLY_OFFER_JS),
            "chromium_user_agent.txt": page.evaluate("navigator.userAgent") + "\n",
        }


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    for name, text in capture().items():
        (FIXTURES / name).write_bytes(text.encode())
        print(name, json.dumps(text[:60]))


if __name__ == "__main__":
    main()
