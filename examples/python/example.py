#!/usr/bin/env python3
"""Calls speech-gateway from Python: the catalog of the models and voices it
may use, a bidi Synthesize session, a Transcribe of the audio it produced,
and an error decoded from its google.rpc details.

    python3 example.py localhost:50051

It imports the API from the speech-gateway-api wheel and google.rpc from
speech-gateway-googleapis-rpc (or googleapis-common-protos, where PyPI is
reachable); docs/clients.md shows how to build and install them.
"""
import json
import sys

import grpc
from google.rpc import error_details_pb2, status_pb2

from slng.speech.v1 import (audio_pb2, catalog_pb2, catalog_pb2_grpc, stt_pb2, stt_pb2_grpc, tts_pb2,
                            tts_pb2_grpc)

# Match the server's keepalive enforcement (pings no more often than every
# 10 s) and retry only UNAVAILABLE, only for calls that produced nothing yet:
# gRPC retries a stream only before its first response.
SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{"service": "slng.speech.v1.TextToSpeechService", "method": "SynthesizeText"}],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.5s",
            "maxBackoff": "5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
})
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
    # Audio needs little bandwidth: no bandwidth-delay probing pings.
    ("grpc.http2.bdp_probe", 0),
]

RATE = 16000
TURNS = ["Hello from Python.", "A second turn on the same stream."]


def list_catalog(channel):
    """The text-to-speech models this caller may use, and the English
    voices of the gateway's default one."""
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    models = stub.ListModels(catalog_pb2.ListModelsRequest(kind=catalog_pb2.MODEL_KIND_TTS), timeout=10).models
    default = next(m for m in models if m.gateway_default)
    print(len(models), "text-to-speech models; the default is", default.model, "with", len(default.voices), "voices")
    voices = stub.ListVoices(catalog_pb2.ListVoicesRequest(model=default.model, language="en"), timeout=10)
    ids = [v.voice_id for v in voices.voices]
    print(len(ids), "English voices (complete:", str(voices.complete) + "), e.g.", ids[0])
    assert default.default_voice in ids, (default.default_voice, ids)


def synthesize(channel):
    """Two turns on one Synthesize stream; returns the audio of each turn."""
    stub = tts_pb2_grpc.TextToSpeechServiceStub(channel)
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hz=RATE)

    def requests():
        yield tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(format=fmt))
        for text in TURNS:
            yield tts_pb2.SynthesizeRequest(text=tts_pb2.TextInput(text=text, flush=True))

    audio = {}
    for resp in stub.Synthesize(requests(), timeout=30):
        kind = resp.WhichOneof("response")
        if kind == "started":
            print("synthesis session", resp.started.session_id, "warm:", resp.started.warm_session)
        elif kind == "audio":
            audio.setdefault(resp.audio.turn_id, bytearray()).extend(resp.audio.data)
        elif kind == "audio_end":
            print("turn", resp.audio_end.turn_id, "done:", resp.audio_end.delivered.audio_bytes, "bytes")
        elif kind == "turn_failed":
            # The stream goes on with the next turn; this one produced no
            # complete audio. Here every turn must succeed.
            f = resp.turn_failed
            raise AssertionError(f"turn {f.turn_id} failed: {f.code} {f.reason}: {f.message}")
    return [bytes(audio[t]) for t in sorted(audio)]


def transcribe(channel, pcm):
    stub = stt_pb2_grpc.SpeechToTextServiceStub(channel)
    fmt = audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hz=RATE)

    def requests():
        yield stt_pb2.TranscribeRequest(config=stt_pb2.RecognitionConfig(format=fmt))
        chunk = RATE * 2 // 10  # 100 ms
        for i in range(0, len(pcm), chunk):
            yield stt_pb2.TranscribeRequest(audio=pcm[i:i + chunk])

    finals = []
    for resp in stub.Transcribe(requests(), timeout=30):
        if resp.WhichOneof("response") == "final_transcript" and resp.final_transcript.text:
            finals.append(resp.final_transcript.text)
    return finals


def error_details(err):
    """The google.rpc.Status details of a failed call, decoded.

    grpcio-status (PyPI) does the first half as rpc_status.from_call(err);
    Debian does not package it, so this reads the trailer itself.
    """
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            st = status_pb2.Status.FromString(value)
            out = []
            for any_msg in st.details:
                for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
                    if any_msg.Is(cls.DESCRIPTOR):
                        msg = cls()
                        any_msg.Unpack(msg)
                        out.append(msg)
            return out
    return []


def main():
    addr = sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"
    with grpc.insecure_channel(addr, options=CHANNEL_OPTIONS) as channel:
        list_catalog(channel)
        turns = synthesize(channel)
        assert len(turns) == len(TURNS), "one audio stream per turn"
        finals = transcribe(channel, b"".join(turns))
        print("transcribed:", finals)
        assert finals == TURNS, finals

        stub = tts_pb2_grpc.TextToSpeechServiceStub(channel)
        try:
            for _ in stub.SynthesizeText(tts_pb2.SynthesizeTextRequest(text=""), timeout=10):
                pass
            raise AssertionError("empty text was accepted")
        except grpc.RpcError as err:
            details = error_details(err)
            info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
            bad = next(d for d in details if isinstance(d, error_details_pb2.BadRequest))
            print("error:", err.code().name, info.reason, [(v.field, v.description) for v in bad.field_violations])
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.reason == "INVALID_REQUEST" and info.domain == "speech-gateway"
    print("python example: ok")


if __name__ == "__main__":
    main()
