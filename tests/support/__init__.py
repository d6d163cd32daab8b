"""What the tests share that is neither a test nor a fixture (the fixtures are in tests/conftest.py), and what the
scripts borrow from the tests: servers, clients, the tiny models, audio and the texts the tests speak.

    audio.py         encode prompts into real formats, decode what the service answers, check it is speech
    speech.py        the texts and prompt transcripts the tests speak, and the embedded engine's own speech
    server.py        the app in process (TestClient) or served on a port, and what it recorded of a stream
    ports.py         a free port on 127.0.0.1
    doors.py         each door's POST paths and error shape, and cloning a voice through the seed door
    logs.py          what the app and uvicorn logged, and whether any of it was an error
    dashscope.py     a callback for the DashScope SDK that records what it is given
    voice_files.py   voice files as an attacker would store them
    browser.py       the system's Chromium, and pages served from another origin
    oss_server.py    an OSS server for the real oss2 client
    upstream_grpc.py, grpc_client.py   upstream's gRPC client, run in a process of its own
    models/          tiny (and full-size) random CosyVoice model dirs, built from code and cached
"""
