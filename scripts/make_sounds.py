"""Generate the bundled notification sounds (rulekit/actions/sounds/*.wav).

Run from the repository root: ``python scripts/make_sounds.py``. Small 8 kHz, 8-bit mono WAV
files made of decaying sine tones, so they stay a few kilobytes and need no audio library.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

RATE = 8000
OUT = Path(__file__).resolve().parent.parent / "rulekit" / "actions" / "sounds"

# (frequency in Hz, start in s, length in s) for each tone of a sound
SOUNDS: dict[str, list[tuple[float, float, float]]] = {
    "bell": [(880.0, 0.0, 0.9), (1760.0, 0.0, 0.5)],
    "chime": [(659.25, 0.0, 0.45), (830.61, 0.18, 0.45), (987.77, 0.36, 0.6)],
    "alert": [(988.0, 0.0, 0.12), (988.0, 0.2, 0.12), (988.0, 0.4, 0.12), (1319.0, 0.6, 0.25)],
}


def render(tones: list[tuple[float, float, float]]) -> bytes:
    length = max(start + duration for _, start, duration in tones)
    samples = [0.0] * int(length * RATE)
    for frequency, start, duration in tones:
        first = int(start * RATE)
        for i in range(int(duration * RATE)):
            t = i / RATE
            envelope = math.exp(-4.0 * t / duration) * min(1.0, i / 40)  # soft attack, decay
            samples[first + i] += envelope * math.sin(2 * math.pi * frequency * t)
    peak = max(abs(s) for s in samples) or 1.0
    return bytes(int(128 + 100 * s / peak) for s in samples)  # unsigned 8-bit PCM


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, tones in SOUNDS.items():
        with wave.open(str(OUT / f"{name}.wav"), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(1)
            out.setframerate(RATE)
            out.writeframes(render(tones))
        print(f"{name}.wav: {(OUT / f'{name}.wav').stat().st_size} bytes")


if __name__ == "__main__":
    main()
