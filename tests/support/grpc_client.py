"""A client of upstream CosyVoice's gRPC API, built as upstream's runtime/python/grpc/client.py builds it: stubs
generated from a proto file, ``Inference`` calls whose ``tts_audio`` chunks are joined.

It runs in a process of its own: its stubs and the server's describe the same messages, which one protobuf
descriptor pool cannot hold twice. Usage: ``python tests/support/grpc_client.py STUBS_DIR ADDRESS < calls.json``; each
call is ``{"kind": "sft_request", "fields": {...}, "prompt_file": path, "cancel_after": n, "metadata": [[k, v]]}``
and the answer, on stdout, a list of ``{"chunks", "audio_file"}`` or ``{"code", "details"}``.
"""

import json
import sys
import tempfile

import grpc


def main() -> None:
    stubs_dir, address = sys.argv[1], sys.argv[2]
    sys.path.insert(0, stubs_dir)
    import cosyvoice_pb2
    import cosyvoice_pb2_grpc

    results = []
    with grpc.insecure_channel(address) as channel:
        stub = cosyvoice_pb2_grpc.CosyVoiceStub(channel)
        for call in json.load(sys.stdin):
            fields = dict(call.get("fields", {}))
            if call.get("prompt_file"):
                with open(call["prompt_file"], "rb") as prompt:
                    fields["prompt_audio"] = prompt.read()
            request = cosyvoice_pb2.Request(**({call["kind"]: fields} if call["kind"] else {}))
            metadata = [tuple(pair) for pair in call.get("metadata", [])] or None
            responses = stub.Inference(request, timeout=120, metadata=metadata)
            audio, chunks = b"", 0
            try:
                for response in responses:
                    audio += response.tts_audio
                    chunks += 1
                    if chunks == call.get("cancel_after"):
                        responses.cancel()
                        break
            except grpc.RpcError as exc:
                results.append({"code": exc.code().name, "details": exc.details()})
                continue
            with tempfile.NamedTemporaryFile(suffix=".pcm", delete=False) as out:
                out.write(audio)
            results.append({"chunks": chunks, "audio_file": out.name})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
