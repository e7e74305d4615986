#!/usr/bin/env python3
"""Helpers to move audio in and out of grpcurl's JSON, for the smoke test and
the README examples.

  grpcurl_audio.py pcm RESPONSES.json OUT.pcm [OUT.wav RATE]
      concatenate the audio chunks of a SynthesizeText/Synthesize response
      stream (grpcurl output) into raw PCM, and optionally a WAV file.
  grpcurl_audio.py transcribe-requests AUDIO.pcm RATE [MODEL]
      print a Transcribe request stream for `grpcurl -d @`: a config, then
      the audio in 100 ms chunks.
  grpcurl_audio.py finals RESPONSES.json
      print the final transcripts of a Transcribe response stream, joined.
"""
import base64
import json
import sys
import wave


def messages(path):
    """grpcurl prints one pretty JSON object per response; decode them all."""
    text = open(path).read()
    dec = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        obj, i = dec.raw_decode(text, i)
        yield obj


def main(argv):
    cmd = argv[1]
    if cmd == "pcm":
        pcm = b"".join(base64.b64decode(m["audio"]["data"]) for m in messages(argv[2]) if "audio" in m)
        if not pcm:
            sys.exit("no audio in " + argv[2])
        open(argv[3], "wb").write(pcm)
        if len(argv) > 5:
            with wave.open(argv[4], "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(int(argv[5]))
                w.writeframes(pcm)
    elif cmd == "transcribe-requests":
        pcm = open(argv[2], "rb").read()
        rate = int(argv[3])
        config = {"format": {"encoding": "AUDIO_ENCODING_LINEAR16", "sample_rate_hz": rate}}
        if len(argv) > 4:
            config["model"] = argv[4]
        print(json.dumps({"config": config}))
        step = rate * 2 // 10
        for i in range(0, len(pcm), step):
            print(json.dumps({"audio": base64.b64encode(pcm[i:i + step]).decode()}))
    elif cmd == "finals":
        finals = [m["finalTranscript"].get("text", "") for m in messages(argv[2]) if "finalTranscript" in m]
        print(" ".join(t for t in finals if t))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
